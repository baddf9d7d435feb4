"""Property-based tests of the readers on mutated files.

Whatever is done to a file (cut short, a bit flipped, a header field edited), reading it ends in
one of two ways: ``ImageReadError`` (the library's own one-line error), or an image. Where the
format carries a checksum (gzip's CRC-32 in .nii.gz) that image must be exactly the original;
elsewhere a mutation can legitimately yield another valid image (a flipped voxel byte in a raw
file), so the image must at least be self-consistent: array shape equal to the grid, finite
positive spacing, invertible direction. Never another exception type, never a crash.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sammed.errors import ImageReadError
from sammed.io import read_image

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIZE = (12, 10, 8)


def _original() -> sitk.Image:
    rng = np.random.default_rng(7)
    img = sitk.GetImageFromArray(rng.integers(-500, 500, SIZE[::-1]).astype(np.int16))
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((-10.0, 4.0, 30.0))
    return img


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[bytes, object]]:
    """Valid files of each format: their bytes and the image read from them."""
    folder = tmp_path_factory.mktemp("fuzz_originals")
    out = {}
    for suffix, compress in ((".nii.gz", True), (".nii", False), (".nrrd", False), (".mha", False),
                             (".nrrd", True), (".mha", True)):
        name = f"image{'-z' if compress and suffix != '.nii.gz' else ''}{suffix}"
        sitk.WriteImage(_original(), str(folder / name), useCompression=compress)
        out[name] = ((folder / name).read_bytes(), read_image(folder / name))
    return out


def _read_mutated(tmp_path: Path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return read_image(path)
    except ImageReadError as exc:
        assert "\n" not in str(exc)
        return None
    finally:
        path.unlink()


def _same(image, original) -> bool:
    return (
        image.array.shape == original.array.shape
        and np.array_equal(image.array, original.array)
        and image.geometry.same_grid(original.geometry, atol=0)
    )


def _self_consistent(image) -> None:
    assert tuple(image.array.shape) == tuple(image.geometry.size)
    spacing = np.asarray(image.geometry.spacing)
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0)
    assert abs(np.linalg.det(image.geometry.direction)) > 1e-6


NAMES = ["image.nii.gz", "image.nii", "image.nrrd", "image.mha", "image-z.nrrd", "image-z.mha"]


@FUZZ
@given(name=st.sampled_from(NAMES), cut=st.floats(0.0, 0.999))
def test_truncated_files_are_refused(tmp_path, originals, name: str, cut: float) -> None:
    data, original = originals[name]
    image = _read_mutated(tmp_path, name, data[: int(len(data) * cut)])
    assert image is None or _same(image, original), f"{name} cut to {cut:.3f} of its bytes gave another image"


@FUZZ
@given(position=st.floats(0.0, 0.999), bit=st.integers(0, 7))
@pytest.mark.parametrize("name", ["image.nii.gz", "image-z.nrrd", "image-z.mha"])
def test_compressed_bit_flip_is_refused_or_harmless(tmp_path, originals, name: str, position: float, bit: int) -> None:
    """A flipped bit in a checksummed stream is found, or lands where it changes nothing.

    (For NRRD and MetaImage the text header before the stream has no checksum: a flip there can
    make another valid image, which test_bit_flip_never_crashes covers.)"""
    data, original = originals[name]
    start = 0 if name.endswith(".nii.gz") else data.index(b"\n\n" if name.endswith(".nrrd") else b"LOCAL\n") + 2
    if name.endswith(".mha"):
        start += 4
    mutated = bytearray(data)
    mutated[start + int((len(data) - start) * position)] ^= 1 << bit
    image = _read_mutated(tmp_path, name, bytes(mutated))
    assert image is None or _same(image, original), f"a corrupted {name} gave a different image"


@FUZZ
@given(name=st.sampled_from(NAMES), position=st.floats(0.0, 0.999), bit=st.integers(0, 7))
def test_bit_flip_never_crashes(tmp_path, originals, name: str, position: float, bit: int) -> None:
    data, _ = originals[name]
    mutated = bytearray(data)
    mutated[int(len(data) * position)] ^= 1 << bit
    image = _read_mutated(tmp_path, name, bytes(mutated))
    if image is not None:
        _self_consistent(image)


_HEADER_VALUES = st.sampled_from(["0", "-1", "nan", "inf", "1e308", "abc", "", "0 0 0", "99999999", "-0"])


@FUZZ
@given(field=st.sampled_from(["spacings", "sizes", "space origin", "dimension", "type", "encoding",
                              "space directions", "endian"]), value=_HEADER_VALUES)
def test_nrrd_header_edits(tmp_path, originals, field: str, value: str) -> None:
    data, _ = originals["image.nrrd"]
    header, _, body = data.partition(b"\n\n")
    lines = [ln for ln in header.split(b"\n") if not ln.startswith(field.encode() + b":")]
    lines.insert(2, f"{field}: {value}".encode())
    image = _read_mutated(tmp_path, "image.nrrd", b"\n".join(lines) + b"\n\n" + body)
    if image is not None:
        _self_consistent(image)


@FUZZ
@given(field=st.sampled_from(["DimSize", "ElementSpacing", "Offset", "TransformMatrix", "NDims", "ElementType",
                              "HeaderSize", "BinaryDataByteOrderMSB"]), value=_HEADER_VALUES)
def test_metaimage_header_edits(tmp_path, originals, field: str, value: str) -> None:
    data, _ = originals["image.mha"]
    marker = b"ElementDataFile = LOCAL\n"
    header, _, body = data.partition(marker)
    lines = [ln for ln in header.split(b"\n") if ln and not ln.startswith(field.encode() + b" ")]
    lines.insert(1, f"{field} = {value}".encode())
    image = _read_mutated(tmp_path, "image.mha", b"\n".join(lines) + b"\n" + marker + body)
    if image is not None:
        _self_consistent(image)


@FUZZ
@given(offset=st.sampled_from([40, 42, 44, 46, 70, 72, 76, 80, 84, 88, 108, 252, 254, 280, 284, 344]),
       value=st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e30, -0.0]))
def test_nifti_header_field_edits(tmp_path, originals, offset: int, value: float) -> None:
    """dims, datatype, bitpix, pixdim, vox_offset, qform/sform codes, quatern and magic fields."""
    import struct

    data, _ = originals["image.nii.gz"]
    raw = bytearray(gzip.decompress(data))
    if offset in (40, 42, 44, 46, 70, 72, 252, 254):
        raw[offset : offset + 2] = struct.pack("<h", int(np.clip(np.nan_to_num(value, nan=7), -32768, 32767)))
    else:
        raw[offset : offset + 4] = struct.pack("<f", value)
    image = _read_mutated(tmp_path, "image.nii.gz", gzip.compress(bytes(raw)))
    if image is not None:
        _self_consistent(image)
