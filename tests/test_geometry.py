"""World/voxel geometry: the same physical point must land on the same voxel in every format."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sammed.io import Geometry, Image, from_sitk, read_image, to_sitk

TS = "totalsegmentator_examples"
NIFTI = [
    f"{TS}/example_ct_sm.nii.gz",
    f"{TS}/example_mr_sm.nii.gz",  # nibabel affine has negative x and y: an RAS-stored file
    f"{TS}/example_seg_dicom.nii.gz",
    "spinegeneric_sub-unf01/sub-unf01_T2w.nii.gz",  # oblique (rotated about x)
]


def _sample_indices(size, n=25, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corners = np.array([[a, b, c] for a in (0, size[0] - 1) for b in (0, size[1] - 1) for c in (0, size[2] - 1)])
    return np.vstack([corners, rng.integers(0, size, size=(n, 3))])


@pytest.fixture(scope="module")
def ct_dicom(data_dir) -> Image:
    return read_image(data_dir / TS / "example_ct_dicom")


@pytest.fixture(scope="module")
def seg_nifti(data_dir) -> Image:
    return read_image(data_dir / TS / "example_seg_dicom.nii.gz")


def test_dicom_and_nifti_seg_share_the_grid_with_y_flipped(ct_dicom, seg_nifti):
    assert ct_dicom.shape == seg_nifti.shape == (512, 512, 20)
    assert ct_dicom.spacing == pytest.approx(seg_nifti.spacing)
    np.testing.assert_allclose(ct_dicom.geometry.direction, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(seg_nifti.geometry.direction, np.diag([1.0, -1.0, 1.0]), atol=1e-6)
    assert not ct_dicom.geometry.same_grid(seg_nifti.geometry)


def test_same_world_point_same_voxel(ct_dicom, seg_nifti):
    """DICOM index -> world -> NIfTI index is integral, inside, and reverses j only."""
    idx = _sample_indices(ct_dicom.shape)
    world = ct_dicom.index_to_world(idx)
    idx2 = seg_nifti.world_to_index(world)
    np.testing.assert_allclose(idx2, np.round(idx2), atol=1e-3)
    idx2 = np.round(idx2).astype(int)
    assert (idx2 >= 0).all() and (idx2 < np.array(seg_nifti.shape)).all()
    ny = seg_nifti.shape[1]
    np.testing.assert_array_equal(idx2[:, 0], idx[:, 0])
    np.testing.assert_array_equal(idx2[:, 1], ny - 1 - idx[:, 1])
    np.testing.assert_array_equal(idx2[:, 2], idx[:, 2])
    # and back again
    np.testing.assert_allclose(ct_dicom.world_to_index(seg_nifti.index_to_world(idx2)), idx, atol=1e-6)


def test_labels_agree_with_simpleitk_resampling(data_dir, ct_dicom, seg_nifti):
    """Oracle: SimpleITK nearest-neighbour resampling of the raw seg file onto the raw DICOM grid."""
    folder = str(data_dir / TS / "example_ct_dicom")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
    ref = reader.Execute()
    seg_raw = sitk.ReadImage(str(data_dir / TS / "example_seg_dicom.nii.gz"))
    on_ct = sitk.Resample(seg_raw, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, seg_raw.GetPixelID())
    expected = sitk.GetArrayFromImage(on_ct).transpose(2, 1, 0)  # the test's own [k,j,i] -> [i,j,k]

    np.testing.assert_array_equal(seg_nifti.array[:, ::-1, :], expected)
    idx = _sample_indices(ct_dicom.shape, n=200, seed=1)
    idx2 = np.round(seg_nifti.world_to_index(ct_dicom.index_to_world(idx))).astype(int)
    np.testing.assert_array_equal(seg_nifti.array[tuple(idx2.T)], expected[tuple(idx.T)])
    assert expected[tuple(idx.T)].any()  # the sample hits labelled voxels, not only background


def test_labels_sit_on_the_right_anatomy(data_dir, ct_dicom, seg_nifti):
    """Spleen and liver have soft-tissue HU only when the seg is placed through the world."""
    names = json.loads((data_dir / TS / "class_map_total_and_total_mr.json").read_text())["total"]
    ids = {name: int(k) for k, name in names.items()}
    aligned = seg_nifti.array[:, ::-1, :]  # the world-correct pairing (previous tests)
    for organ in ("spleen", "liver"):
        inside = aligned == ids[organ]
        assert inside.sum() > 1000
        assert 20 < ct_dicom.array[inside].mean() < 200, organ
        naive = seg_nifti.array == ids[organ]  # pairing raw arrays ignores the flip
        assert ct_dicom.array[naive].mean() < 0, organ


@pytest.mark.parametrize("rel", NIFTI)
def test_ras_matches_nibabel_affine(data_dir, rel):
    image = read_image(data_dir / rel)
    affine = nib.load(data_dir / rel).affine
    idx = _sample_indices(image.shape).astype(float) + 0.25  # continuous indices too
    homogeneous = np.c_[idx, np.ones(len(idx))]
    ras = (homogeneous @ affine.T)[:, :3]
    np.testing.assert_allclose(image.index_to_world(idx, "RAS"), ras, atol=1e-3)
    np.testing.assert_allclose(image.index_to_world(idx, "LPS"), ras * [-1, -1, 1], atol=1e-3)
    np.testing.assert_allclose(image.world_to_index(ras, "RAS"), idx, atol=1e-4)
    np.testing.assert_allclose(image.geometry.affine_ras, affine, atol=1e-4)


@pytest.mark.parametrize(
    "rel", [f"{TS}/example_ct_dicom", "dcmqi_ct3slice/ct-3slice", "dcmqi_ct3slice/spine_seg.nrrd", NIFTI[-1]]
)
def test_index_to_world_matches_simpleitk(data_dir, rel):
    image = read_image(data_dir / rel)
    img = to_sitk(image)
    for index in _sample_indices(image.shape, n=5):
        expected = img.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
        np.testing.assert_allclose(image.index_to_world(index), expected, atol=1e-6)


def test_sitk_bridge_indexing_and_round_trip(data_dir):
    image = read_image(data_dir / TS / "example_seg_mr.nii.gz")
    img = to_sitk(image)
    for i, j, k in _sample_indices(image.shape, n=10):
        assert img.GetPixel(int(i), int(j), int(k)) == image.array[i, j, k]
    back = from_sitk(img)
    assert back.geometry.same_grid(image.geometry, atol=0)
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)


def test_series_slices_are_ordered_by_position_not_file_name(data_dir):
    """01.dcm is the highest slice (z=-126.69); the volume starts at the lowest z."""
    folder = data_dir / "dcmqi_ct3slice/ct-3slice"
    volume = read_image(folder)
    first = read_image(folder / "01.dcm")
    assert volume.geometry.origin[2] == pytest.approx(-128.69, abs=1e-3)
    assert first.geometry.origin[2] == pytest.approx(-126.69, abs=1e-3)
    np.testing.assert_array_equal(volume.array[:, :, 2], first.array[:, :, 0])
    np.testing.assert_allclose(volume.index_to_world([0, 0, 2]), first.index_to_world([0, 0, 0]), atol=1e-3)


def test_sitk_bridge_2d():
    g2 = Geometry((3, 4), (0.5, 2.0), (1.0, -1.0), np.array([[0.0, 1.0], [1.0, 0.0]]))
    img = to_sitk(Image(np.arange(12, dtype=np.int16).reshape(3, 4), g2))
    assert img.GetSize() == (3, 4) and img.GetDirection() == (0.0, 1.0, 1.0, 0.0)
    back = from_sitk(img)
    assert back.geometry.same_grid(g2, atol=0)
    np.testing.assert_allclose(back.index_to_world([2, 3]), img.TransformIndexToPhysicalPoint((2, 3)))
