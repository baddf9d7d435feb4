"""Small bundled sample data (see SOURCE.md for origin and licence)."""

from pathlib import Path

SAMPLE_CT = Path(__file__).with_name("example_ct_sm.nii.gz")
# A voxel (i, j, k) inside the liver of SAMPLE_CT, used by the README demo.
SAMPLE_CT_LIVER_VOXEL = (84, 58, 20)
