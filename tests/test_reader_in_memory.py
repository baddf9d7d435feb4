"""A .nii.gz read in memory (one ISA-L inflate, CRC checked) equals SimpleITK's reading."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import sammed.io.readers as readers
from sammed.errors import ImageReadError
from sammed.io import read_image


def _read_with_itk(path: Path, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as patch:
        patch.setattr(readers, "_read_nifti_gz_in_memory", lambda p: None)
        return read_image(path)


def _assert_same(a, b) -> None:
    assert a.array.dtype == b.array.dtype
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry.size == b.geometry.size
    assert a.geometry.spacing == b.geometry.spacing
    assert a.geometry.origin == b.geometry.origin
    np.testing.assert_array_equal(a.geometry.direction, b.geometry.direction)


@pytest.mark.parametrize(
    "rel",
    [
        "totalsegmentator_examples/example_ct.nii.gz",
        "totalsegmentator_examples/example_ct_sm.nii.gz",
        "totalsegmentator_examples/example_mr_sm.nii.gz",
        "totalsegmentator_examples/example_seg.nii.gz",
    ],
)
def test_shared_ct_and_mr_read_as_simpleitk_reads_them(data_dir: Path, rel: str, monkeypatch) -> None:
    path = data_dir / rel
    assert readers._read_nifti_gz_in_memory(path) is not None, "the in-memory path must be the one taken"
    _assert_same(read_image(path), _read_with_itk(path, monkeypatch))


def test_every_shared_nii_gz_reads_the_same(data_dir: Path, monkeypatch) -> None:
    for path in sorted(data_dir.rglob("*.nii.gz")):
        _assert_same(read_image(path), _read_with_itk(path, monkeypatch))


def _save(array: np.ndarray, path: Path, affine=None, slope=None, inter=None, big_endian=False) -> Path:
    affine = np.diag([0.8, -0.9, 2.5, 1.0]) if affine is None else affine
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    if big_endian:
        image = nib.Nifti1Image(array.astype(array.dtype.newbyteorder(">")), affine, image.header.as_byteswapped(">"))
    nib.save(image, str(path))
    if slope is not None:
        raw = bytearray(gzip.decompress(path.read_bytes()))
        struct.pack_into("<2f", raw, 112, slope, inter or 0.0)
        path.write_bytes(gzip.compress(bytes(raw)))
    return path


def test_big_endian_and_float_nan_kept(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(20, 18, 9)).astype(np.float32)
    volume[3, 4, 5] = np.nan
    path = _save(volume, tmp_path / "be.nii.gz", big_endian=True)
    image = read_image(path)
    assert image.array.dtype == np.float32 and image.array.dtype.isnative
    assert np.isnan(image.array[3, 4, 5])
    _assert_same(image, _read_with_itk(path, monkeypatch))


def test_scaled_intensities_are_left_to_itk(tmp_path: Path, monkeypatch) -> None:
    volume = np.arange(20 * 18 * 9, dtype=np.int16).reshape(20, 18, 9)
    path = _save(volume, tmp_path / "scaled.nii.gz", slope=2.0, inter=5.0)
    assert readers._read_nifti_gz_in_memory(path) is None
    image = read_image(path)
    np.testing.assert_allclose(image.array, volume * 2.0 + 5.0)


def test_multi_member_gzip_and_a_corrupt_second_member(tmp_path: Path, monkeypatch) -> None:
    volume = np.arange(30 * 20 * 10, dtype=np.int16).reshape(30, 20, 10)
    single = _save(volume, tmp_path / "one.nii.gz")
    raw = gzip.decompress(single.read_bytes())
    half = len(raw) // 2
    first, second = gzip.compress(raw[:half]), gzip.compress(raw[half:])
    split = tmp_path / "two.nii.gz"
    split.write_bytes(first + second)
    np.testing.assert_array_equal(read_image(split).array, volume)
    broken = bytearray(second)
    broken[-8] ^= 0x01  # the second member's CRC-32
    (tmp_path / "bad.nii.gz").write_bytes(first + bytes(broken))
    with pytest.raises(ImageReadError, match="corrupt gzip data"):
        read_image(tmp_path / "bad.nii.gz")


def test_header_promising_more_than_the_stream_can_hold(tmp_path: Path) -> None:
    """A lying header cannot make the reader allocate its promise."""
    path = _save(np.zeros((10, 10, 10), np.int16), tmp_path / "lie.nii.gz")
    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<4h", raw, 40, 3, 30000, 30000, 30000)
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_stream_shorter_than_header(tmp_path: Path) -> None:
    path = _save(np.ones((10, 10, 10), np.int16), tmp_path / "short.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # complete gzip, 100 voxel bytes missing
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_array_is_writable(data_dir: Path) -> None:
    image = read_image(data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz")
    image.array[0, 0, 0] = 1  # callers may edit the array they were given


def test_odd_vox_offset_gives_an_aligned_array(tmp_path: Path, monkeypatch) -> None:
    volume = np.random.default_rng(1).normal(size=(10, 9, 8)).astype(np.float32)
    path = _save(volume, tmp_path / "a.nii.gz")
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw = raw[:352] + b"\0\0" + raw[352:]
    struct.pack_into("<f", raw, 108, 354.0)  # voxels start at byte 354: not float32-aligned
    path.write_bytes(gzip.compress(bytes(raw)))
    image = read_image(path)
    assert image.array.flags.aligned
    np.testing.assert_array_equal(image.array, volume)
    _assert_same(image, _read_with_itk(path, monkeypatch))
