"""DICOM-SEG from ``sammed segment SERIES --out seg.dcm``: references, metadata, and the same voxels as the NIfTI."""

from __future__ import annotations

import numpy as np
import pytest

from sammed.cli import main
from sammed.data import SAMPLE_CT
from sammed.io import read_image
from sammed.io.dicom_seg import series_datasets
from sammed.io.masks import read_mask, read_mask_segments

CLICK = ["--point", "256,300,10", "--model", "sam-med3d-tiny"]


@pytest.fixture(scope="module")
def series(data_dir):
    return data_dir / "totalsegmentator_examples" / "example_ct_dicom"


def test_segment_writes_dicom_seg_with_the_nifti_voxels(series, tmp_path, tiny_checkpoint, capsys):
    import highdicom as hd

    nifti, seg_path = tmp_path / "mask.nii.gz", tmp_path / "seg.dcm"
    common = [str(series), *CLICK, "--checkpoint", str(tiny_checkpoint)]
    assert main(["segment", *common, "--out", str(nifti)]) == 0
    assert main(["segment", *common, "--out", str(seg_path), "--label", "liver"]) == 0
    expected = read_image(nifti).array
    assert expected.any() and not expected.all()

    seg = hd.seg.segread(seg_path)
    sources = series_datasets(series)
    # Every instance of the source series is referenced; patient and study are copied.
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == sources[0].PatientID
    assert seg.StudyDate == sources[0].StudyDate
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "liver" and len(seg.SegmentSequence) == 1
    assert segment.RecommendedDisplayCIELabValue
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "sam-med3d-tiny" and algorithm.AlgorithmVersion.startswith("sammed ")
    # highdicom's own reader, frame by source instance: exactly the NIfTI's voxels.
    image = read_image(series)
    frames = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID) for ds in sources], combine_segments=True)
    from_seg = np.zeros(image.shape, dtype=np.uint8)
    for ds, frame in zip(sources, frames):
        k = int(round(image.geometry.world_to_index([float(v) for v in ds.ImagePositionPatient])[2]))
        from_seg[:, :, k] = frame.T
    np.testing.assert_array_equal(from_seg, expected)
    # sammed's mask reader gives the same label map, with the segment's name.
    labels, segments = read_mask_segments(seg_path, image)
    np.testing.assert_array_equal(labels, expected)
    assert [s.name for s in segments] == ["liver"]


def test_dcm_output_for_a_non_dicom_input_is_refused(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "seg.dcm"
    code = main(["segment", str(SAMPLE_CT), "--point", "84,58,20", "--model", "sam-med3d-tiny",
                 "--checkpoint", str(tiny_checkpoint), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("sammed: error: ") and "DICOM series" in err[0]
    assert not out.exists()


def test_read_mask_refuses_a_seg_of_another_grid(series, tmp_path):
    from sammed.errors import InvalidImageError
    from sammed.io.dicom_seg import write_dicom_seg

    image = read_image(series)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[200:220, 200:230, 5:7] = 1
    path = write_dicom_seg(labels, image, series, tmp_path / "s.dcm", names={1: "box"})
    np.testing.assert_array_equal(read_mask(path, image), labels)
    with pytest.raises(InvalidImageError):
        read_mask(path, read_image(SAMPLE_CT))
