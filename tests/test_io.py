"""sammed.io readers and writers: round trips on the real data, bad input, atomic writes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sammed.errors import ImageReadError, ImageWriteError, InvalidImageError, SammedError
from sammed.io import Geometry, Image, read_image, validate_volume, write_image, write_mask
from sammed.io.dicom import looks_like_dicom

# Collection-time discovery (fixtures are not available to parametrize); tests still go
# through the data_dir fixture, which skips when the shared data is absent.
_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TS = "totalsegmentator_examples"
CT_DICOM = f"{TS}/example_ct_dicom"
CT3 = "dcmqi_ct3slice/ct-3slice"


def _discover_volumes() -> list[str]:
    if not _DATA.is_dir():
        return []
    files = [p for pattern in ("*/*.nii.gz", "*/*.nrrd", "*/*.dcm") for p in _DATA.glob(pattern)]
    series = [p for p in _DATA.glob("*/*") if p.is_dir() and any(looks_like_dicom(f) for f in p.iterdir())]
    return sorted(str(p.relative_to(_DATA)) for p in files + series)


VOLUMES = _discover_volumes()


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


def assert_same_geometry(a: Geometry, b: Geometry, atol: float = 1e-4) -> None:
    assert a.size == b.size
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol, rtol=0)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol, rtol=0)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol, rtol=0)


def test_all_expected_volumes_discovered(data_dir):
    expected = {
        f"{TS}/example_ct.nii.gz",
        f"{TS}/example_seg_dicom.nii.gz",
        CT_DICOM,
        CT3,
        "dcmqi_ct3slice/liver_seg.nrrd",
        "spinegeneric_sub-unf01/sub-unf01_T2w_seg-manual.nii.gz",
    }
    assert expected <= set(VOLUMES)
    assert len(VOLUMES) >= 20


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("rel", VOLUMES)
def test_round_trip_every_volume(data_dir, tmp_path, rel):
    """Read -> write a mask and the image (.nii.gz, .nrrd) -> read back: same grid, same voxels."""
    image = read_image(data_dir / rel)
    assert image.ndim == 3 and image.array.shape == image.geometry.size
    mask = image.array > np.median(image.array)
    assert mask.any()
    for suffix in (".nii.gz", ".nrrd"):
        back = read_image(write_mask(mask, image, tmp_path / f"mask{suffix}"))
        assert back.array.dtype == np.uint8
        np.testing.assert_array_equal(back.array, mask)
        assert_same_geometry(back.geometry, image.geometry)

        again = read_image(write_image(image, tmp_path / f"image{suffix}"))
        assert again.array.dtype == image.array.dtype
        np.testing.assert_array_equal(again.array, image.array)
        assert_same_geometry(again.geometry, image.geometry)

    if rel.endswith(".nii.gz"):  # nibabel as an independent reader of the same file
        nii = nib.load(data_dir / rel)
        np.testing.assert_allclose(image.geometry.affine_ras, nii.affine, atol=1e-4)
        on_disk = np.asanyarray(nii.dataobj)
        assert image.array.dtype == on_disk.dtype
        np.testing.assert_array_equal(image.array, on_disk)
        written = nib.load(tmp_path / "mask.nii.gz")
        np.testing.assert_allclose(written.affine, nii.affine, atol=1e-4)


def test_label_map_keeps_its_labels(data_dir, tmp_path):
    seg = read_image(data_dir / TS / "example_seg.nii.gz")
    assert len(np.unique(seg.array)) > 10
    back = read_image(write_mask(seg, seg, tmp_path / "seg.nrrd"))
    np.testing.assert_array_equal(back.array, seg.array)


def test_write_mask_takes_a_geometry_and_int16_labels(data_dir, tmp_path):
    seg = read_image(data_dir / "dcmqi_ct3slice/liver_spine_seg.nrrd")  # int16 on disk
    assert seg.array.dtype == np.int16
    back = read_image(write_mask(seg.array, seg.geometry, tmp_path / "sub" / "dir" / "ls.nii.gz"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, seg.array)


def test_nrrd_segs_lie_on_the_dicom_ct_grid(data_dir):
    ct = read_image(data_dir / CT3)
    for name in ("liver_seg", "spine_seg", "heart_seg", "liver_spine_seg"):
        seg = read_image(data_dir / f"dcmqi_ct3slice/{name}.nrrd")
        assert seg.geometry.same_grid(ct.geometry, atol=1e-4), name


def test_dicom_dtypes_follow_the_files(data_dir):
    assert read_image(data_dir / CT_DICOM).array.dtype == np.int16
    assert read_image(data_dir / CT3).array.dtype == np.int32  # GDCM's choice after rescale


def test_dicom_seg_frames_match_the_nrrd_labels(data_dir):
    """GDCM reads a (single-segment) DICOM SEG as a plain 0/255 frame stack on the CT grid."""
    seg = read_image(data_dir / "dcmqi_ct3slice/liver.dcm")
    nrrd = read_image(data_dir / "dcmqi_ct3slice/liver_seg.nrrd")
    assert seg.array.dtype == np.uint8 and set(np.unique(seg.array)) == {0, 255}
    assert seg.geometry.same_grid(nrrd.geometry, atol=1e-4)
    np.testing.assert_array_equal(seg.array > 0, nrrd.array > 0)


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd", ".mha", ".nii"])
def test_other_read_formats(data_dir, tmp_path, suffix):
    """Detached-header formats (.nhdr, .mhd) are readable even though we never write them."""
    source = data_dir / "dcmqi_ct3slice/spine_seg.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(source)), str(tmp_path / f"copy{suffix}"))
    image, copy = read_image(source), read_image(tmp_path / f"copy{suffix}")
    assert copy.array.dtype == image.array.dtype
    np.testing.assert_array_equal(copy.array, image.array)
    assert_same_geometry(copy.geometry, image.geometry)


def test_single_dicom_files(data_dir):
    one = read_image(data_dir / CT3 / "01.dcm")
    assert one.shape == (512, 512, 1)
    no_extension = sorted((data_dir / CT_DICOM).iterdir())[0]  # "CT.1.3.12...": UID, not a suffix
    assert read_image(no_extension).shape == (512, 512, 1)


# --------------------------------------------------------------------------- DICOM folders


def _link_all(files, folder: Path) -> Path:
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


def test_folder_with_two_series_reads_the_largest_and_warns(data_dir, tmp_path):
    files = list((data_dir / CT_DICOM).iterdir()) + list((data_dir / CT3).iterdir())
    mixed = _link_all(files, tmp_path / "mixed")
    with pytest.warns(UserWarning, match="2 DICOM series"):
        image = read_image(mixed)
    assert image.shape == (512, 512, 20)


def test_missing_slice_warns(data_dir, tmp_path):
    files = sorted((data_dir / CT_DICOM).iterdir())
    gap = _link_all(files[:7] + files[8:], tmp_path / "gap")
    with pytest.warns(UserWarning, match="unevenly spaced"):
        image = read_image(gap)
    assert image.shape == (512, 512, 19)


def test_regular_series_do_not_warn(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(data_dir / CT_DICOM)
        read_image(data_dir / CT3)  # ITK flags float noise in its positions; we must not


# --------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in one_line(exc) and "no such file" in one_line(exc)


@pytest.mark.parametrize("keep", [200, 0.5])
def test_truncated_nii_gz(data_dir, tmp_path, keep):
    """ITK reads a truncated .nii.gz without error (zero-filled); we must refuse it."""
    raw = (data_dir / TS / "example_ct_sm.nii.gz").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: keep if isinstance(keep, int) else int(len(raw) * keep)])
    with pytest.raises(ImageReadError) as exc:
        read_image(cut)
    assert "cut.nii.gz" in one_line(exc) and "truncated" in one_line(exc)


def test_truncated_uncompressed_nii(data_dir, tmp_path):
    full = tmp_path / "full.nii"
    write_image(read_image(data_dir / TS / "example_seg.nii.gz"), full)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full.read_bytes()[:-1000])
    with pytest.raises(ImageReadError) as exc:
        read_image(cut)
    assert "truncated" in one_line(exc)


def test_truncated_nrrd(data_dir, tmp_path):
    cut = tmp_path / "cut.nrrd"
    cut.write_bytes((data_dir / "dcmqi_ct3slice/liver_seg.nrrd").read_bytes()[:1000])
    with pytest.raises(ImageReadError) as exc:
        read_image(cut)
    assert "cut.nrrd" in one_line(exc)


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nrrd", "x.mha", "x.dcm"])
def test_text_file_with_image_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not an image\n")
    with pytest.raises(ImageReadError) as exc:
        read_image(path)
    assert name in one_line(exc)


def test_empty_file(tmp_path):
    (tmp_path / "e.nii").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "e.nii")


def test_unsupported_suffix(data_dir):
    with pytest.raises(ImageReadError) as exc:
        read_image(data_dir / "sammed2d_demo_2d/images/s0619_32.png")
    assert "unsupported file type '.png'" in one_line(exc)


def test_empty_folder_and_folder_without_dicom(tmp_path):
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path)
    assert "no DICOM series" in one_line(exc)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError):
        read_image(tmp_path)


def test_nifti_sibling_is_not_read_instead(tmp_path):
    """ITK asked for x.nii.gz reads x.nii when both exist; read_image must not."""
    grid = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    gz = np.zeros(grid.size, np.uint8)
    gz[1, 2, 3] = 1
    plain = np.full(grid.size, 7, np.uint8)
    write_mask(gz, grid, tmp_path / "x.nii.gz")
    write_mask(plain, grid, tmp_path / "x.nii")
    np.testing.assert_array_equal(read_image(tmp_path / "x.nii.gz").array, gz)
    np.testing.assert_array_equal(read_image(tmp_path / "x.nii").array, plain)


# --------------------------------------------------------------------------- 2D, 4D, vectors


def test_2d_and_4d_are_readable_but_not_volumes(tmp_path):
    rng = np.random.default_rng(0)
    flat_arr = rng.random((5, 6)).astype(np.float32)
    four_arr = rng.random((2, 3, 4, 5)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(flat_arr), str(tmp_path / "flat.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(four_arr, isVector=False), str(tmp_path / "t.nii.gz"))
    flat = read_image(tmp_path / "flat.nii.gz")
    four = read_image(tmp_path / "t.nii.gz")
    assert flat.shape == (6, 5) and four.shape == (5, 4, 3, 2)
    np.testing.assert_array_equal(flat.array, flat_arr.T)
    np.testing.assert_array_equal(four.array, four_arr.transpose(3, 2, 1, 0))
    with pytest.raises(InvalidImageError) as exc:
        validate_volume(flat)
    assert "expected a 3D volume, got a 2D image of shape (6, 5)" in one_line(exc)
    with pytest.raises(InvalidImageError) as exc:
        validate_volume(four)
    assert "got a 4D image" in one_line(exc)


def test_vector_pixels_become_a_trailing_axis(tmp_path):
    arr = np.arange(4 * 3 * 2 * 3, dtype=np.uint8).reshape(4, 3, 2, 3)  # [k, j, i, c]
    img = sitk.GetImageFromArray(arr, isVector=True)
    img.SetSpacing((0.5, 0.7, 2.0))
    sitk.WriteImage(img, str(tmp_path / "rgb.mha"))
    image = read_image(tmp_path / "rgb.mha")
    assert image.shape == (2, 3, 4, 3)
    assert image.array[1, 2, 3, 0] == arr[3, 2, 1, 0]
    assert image.spacing[:3] == (0.5, 0.7, 2.0)


# --------------------------------------------------------------------------- validate_volume


def _volume(array) -> Image:
    return Image(np.asarray(array), Geometry(np.shape(array), (1.0,) * 3, (0.0,) * 3, np.eye(3)))


def test_validate_volume_accepts_real_ct(data_dir):
    validate_volume(read_image(data_dir / TS / "example_ct_sm.nii.gz"))


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite")],
)
def test_validate_volume_refuses_non_finite(value, message):
    arr = np.random.default_rng(1).random((4, 4, 4)).astype(np.float32)
    arr[1, 2, 3] = value
    with pytest.raises(InvalidImageError, match=message):
        validate_volume(_volume(arr))


def test_validate_volume_refuses_constant():
    with pytest.raises(InvalidImageError) as exc:
        validate_volume(_volume(np.full((4, 4, 4), -1024, np.int16)))
    assert one_line(exc).endswith("image intensities are constant (value -1024): nothing to segment")


# --------------------------------------------------------------------------- writers


@pytest.fixture
def small(data_dir) -> Image:
    return read_image(data_dir / TS / "example_seg_mr.nii.gz")


def test_mask_dtypes(small, tmp_path):
    labels = small.array.astype(np.int32)
    labels[0, 0, 0] = 300
    assert read_image(write_mask(labels, small, tmp_path / "big.nrrd")).array.dtype == np.uint16
    floats = (small.array > 0).astype(np.float32)
    back = read_image(write_mask(floats, small, tmp_path / "f.nii.gz"))
    assert back.array.dtype == np.uint8 and back.array.sum() == floats.sum()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda a: a.astype(np.int16) - 1, "negative"),
        (lambda a: a * 0.5 + 0.25, "non-integer"),
        (lambda a: a.astype(np.int64) + 70000, "exceed 65535"),
        (lambda a: a[:, :, :-1], "does not match the reference image size"),
    ],
)
def test_bad_masks_are_refused(small, tmp_path, bad, message):
    with pytest.raises(InvalidImageError, match=message) as exc:
        write_mask(bad(small.array), small, tmp_path / "m.nii.gz")
    one_line(exc)
    assert list(tmp_path.iterdir()) == []


def test_mask_image_on_another_grid_is_refused(small, tmp_path):
    g = small.geometry
    moved = Image(small.array, Geometry(g.size, g.spacing, np.add(g.origin, 1.0), g.direction))
    with pytest.raises(InvalidImageError, match="geometry differs"):
        write_mask(moved, small, tmp_path / "m.nii.gz")


@pytest.mark.parametrize("name", ["m.png", "m.nhdr", "m.mhd", "m"])
def test_unsupported_write_suffix(small, tmp_path, name):
    with pytest.raises(ImageWriteError) as exc:
        write_mask(small.array > 0, small, tmp_path / name)
    assert "unsupported suffix" in one_line(exc)
    assert list(tmp_path.iterdir()) == []


def test_write_onto_a_folder(small, tmp_path):
    (tmp_path / "d.nii.gz").mkdir()
    with pytest.raises(ImageWriteError, match="folder"):
        write_mask(small.array > 0, small, tmp_path / "d.nii.gz")


def test_upper_case_suffix(small, tmp_path):
    out = write_mask(small.array > 0, small, tmp_path / "M.NII.GZ")  # ITK's NIfTI writer refuses this name
    assert out.name == "M.NII.GZ" and os.listdir(tmp_path) == ["M.NII.GZ"]
    np.testing.assert_array_equal(read_image(out).array, small.array > 0)


def test_wrong_shape_leaves_existing_target_untouched(small, tmp_path):
    target = write_mask(small.array > 0, small, tmp_path / "m.nii.gz")
    before = target.read_bytes()
    with pytest.raises(InvalidImageError):
        write_mask(np.zeros((3, 3, 3), np.uint8), small, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.nii.gz"]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("error", [RuntimeError("ITK ERROR: NiftiImageIO(0x1): disk full\nmore"), _Boom()])
def test_failed_write_leaves_no_temp_file(small, tmp_path, monkeypatch, error):
    target = write_mask(small.array > 0, small, tmp_path / "m.nii.gz")
    before = target.read_bytes()
    seen = []

    def half_written(image, path, *args, **kwargs):
        seen.append(path)
        Path(path).write_bytes(b"partial")  # a crash after the first bytes hit the disk
        raise error

    monkeypatch.setattr(sitk, "WriteImage", half_written)
    expected = ImageWriteError if isinstance(error, RuntimeError) else _Boom
    with pytest.raises(expected) as exc:
        write_mask(small.array == 1, small, target)
    if expected is ImageWriteError:
        assert one_line(exc).endswith("disk full")
    assert Path(seen[0]).parent == tmp_path and Path(seen[0]).name.startswith(".m.tmp-")
    assert Path(seen[0]).name.endswith(".nii.gz")  # the real suffix, so SimpleITK picks NIfTI
    assert os.listdir(tmp_path) == ["m.nii.gz"]
    assert target.read_bytes() == before


def test_successful_overwrite_replaces_and_cleans_up(small, tmp_path):
    target = write_mask(small.array > 0, small, tmp_path / "m.nrrd")
    write_mask(small.array == 1, small, target)
    assert os.listdir(tmp_path) == ["m.nrrd"]
    np.testing.assert_array_equal(read_image(target).array, small.array == 1)


def test_errors_are_sammed_errors():
    assert issubclass(ImageWriteError, SammedError) and issubclass(ImageReadError, SammedError)
