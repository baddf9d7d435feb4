"""Fast mode (bf16 autocast) against exact float32 on real shared volumes."""

from __future__ import annotations

import pytest
import torch

from sammed.errors import SammedError
from sammed.inference import Session
from sammed.inference.precision import resolve_precision
from sammed.io import read_image
from sammed.models import build_model
from support import fixture_weights

# (file under shared/data, a voxel inside a structure)
VOLUMES = [
    ("totalsegmentator_examples/example_ct.nii.gz", (84, 58, 90)),
    ("totalsegmentator_examples/example_ct_sm.nii.gz", (20, 37, 19)),
    ("totalsegmentator_examples/example_mr_sm.nii.gz", (60, 45, 10)),
    ("spinegeneric_sub-unf01/sub-unf01_T2w.nii.gz", (68, 54, 8)),
]


def dice(a, b) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.mark.slow
def test_bf16_masks_agree_with_fp32(data_dir) -> None:
    model = build_model("sam-med3d-turbo")
    model.load_state_dict(fixture_weights("turbo"))
    for name, voxel in VOLUMES:
        image = read_image(data_dir / name)
        exact, fast = Session(model, image), Session(model, image, precision="bf16")
        for click, positive in ((voxel, True), (tuple(v + 3 for v in voxel), False)):
            a = exact.add_point(click, positive=positive)
            b = fast.add_point(click, positive=positive)
            assert a.sum() > 100, name
            assert dice(a, b) >= 0.99, f"{name}: Dice {dice(a, b):.4f} between bf16 and fp32"


def test_precision_choices() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(SammedError, match="fp16 is for GPUs"):
        resolve_precision("fp16", cpu)
    with pytest.raises(SammedError, match="precision must be"):
        resolve_precision("int4", cpu)
