"""Reading images from disk into ``Image`` with their exact geometry.

SimpleITK does the reading (NIfTI, NRRD, MetaImage, DICOM); this module adds what it
lacks for a user-facing tool: one-line errors, a check that NIfTI files are complete
(ITK silently zero-fills a truncated .nii/.nii.gz) and the single [k, j, i] <-> [i, j, k]
transpose between SimpleITK arrays and ours (``from_sitk`` / ``to_sitk``).

A plain .nii.gz (3D, scalar, unscaled) is decompressed once in memory by ISA-L with its
CRC-32 checked in the same pass and wrapped as the array, with the geometry from ITK's
reading of the header; every other file is read by SimpleITK (see ``_read_nifti_gz_in_memory``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sammed.errors import ImageReadError
from sammed.io.dicom import looks_like_dicom, read_dicom_series
from sammed.io.file_checks import (
    EXTERNAL_DATA_POLICIES,
    ExternalDataPolicy,
    StreamVerifier,
    check_content_matches_suffix,
    check_external_data,
    check_nifti_spacing,
    compressed_payload,
    inflate_gzip,
    path_is_inside,
)
from sammed.io.image import Geometry, Image

READ_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def image_suffix(path: str | os.PathLike) -> str:
    """The format suffix of ``path``, lower case, ``.nii.gz`` counted as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


# --------------------------------------------------------------------------- SimpleITK bridge


def from_sitk(img: sitk.Image, source: str | None = None) -> Image:
    """SimpleITK image -> ``Image`` (array transposed from [k, j, i] to [i, j, k]).

    Multi-component pixels (RGB, vectors) keep their components as a trailing array
    axis; since ``Image`` requires ``array.shape == geometry.size``, the geometry gets a
    matching extra axis (spacing 1, origin 0, identity direction) that means nothing in
    the world. Such an image therefore reports ``ndim == dimension + 1``.

    The array is a transposed view of SimpleITK's copy (Fortran-ordered), not a second copy.
    """
    array = sitk.GetArrayFromImage(img)
    ndim = img.GetDimension()
    axes = tuple(reversed(range(ndim)))
    size = tuple(img.GetSize())
    spacing = tuple(img.GetSpacing())
    origin = tuple(img.GetOrigin())
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    if array.ndim == ndim + 1:  # components last: [k, j, i, c] -> [i, j, k, c]
        array = array.transpose(axes + (ndim,))
        size += (array.shape[-1],)
        spacing += (1.0,)
        origin += (0.0,)
        padded = np.eye(ndim + 1)
        padded[:ndim, :ndim] = direction
        direction = padded
    else:
        array = array.transpose(axes)
    return Image(array=array, geometry=Geometry(size, spacing, origin, direction), source=source)


def to_sitk(image: Image) -> sitk.Image:
    """``Image`` -> scalar SimpleITK image with the same geometry ([i, j, k] -> [k, j, i]).

    Dtypes SimpleITK lacks are widened losslessly (bool -> uint8, float16 -> float32). A
    component axis added by ``from_sitk`` comes back as an ordinary extra dimension.
    """
    array = np.asarray(image.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    geometry = image.geometry
    img = sitk.GetImageFromArray(array.transpose(tuple(reversed(range(array.ndim)))), isVector=False)
    img.SetSpacing([float(s) for s in geometry.spacing])
    img.SetOrigin([float(o) for o in geometry.origin])
    img.SetDirection([float(d) for d in geometry.direction.ravel()])
    return img


# --------------------------------------------------------------------------- errors


_ITK_PREFIX = re.compile(r"^(?:ITK ERROR|sitk::ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?")
_NRRD_PREFIX = re.compile(r"^\[nrrd\]\s*(?:\w+:\s*)?")


def sitk_error_essence(exc: BaseException) -> str:
    """One line out of SimpleITK's multi-line exception text: the ITK reason, not the dump."""
    text = str(exc)
    if "Unable to determine ImageIO" in text:
        return "not a recognised image file (unknown format, or an empty or corrupt file)"
    if "File cannot be read" in text:  # MetaImage's only message, whatever the cause
        return "the file is truncated or corrupt"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    nrrd = [_NRRD_PREFIX.sub("", ln) for ln in lines if ln.startswith("[nrrd]")]
    if nrrd and nrrd[-1]:
        return nrrd[-1]
    for ln in lines:
        if ln.startswith(("ITK ERROR", "sitk::ERROR")):
            return _ITK_PREFIX.sub("", ln).rstrip(":") or "unreadable file"
    relevant = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    return (relevant[0] if relevant else text.strip() or type(exc).__name__)[:300]


# --------------------------------------------------------------------------- NIfTI completeness


def _nifti_layout(head: bytes) -> tuple[int, int] | None:
    """(data offset, data bytes) from a NIfTI-1/2 header, or None if not recognisable."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
            if not np.isfinite(vox_offset):
                return None  # refused by check_nifti_spacing before ITK reads the file
            offset = int(vox_offset)
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1 : ndim + 1]):
        return None
    nvox = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return offset, nvox * bitpix // 8


def _nifti_head(path: Path, compressed: bool) -> bytes:
    """Up to 540 header bytes; a short answer rather than an error when the file is cut."""
    with open(path, "rb") as fh:
        raw = fh.read(1 << 16 if compressed else 540)
    if not compressed:
        return raw
    try:
        return zlib.decompressobj(wbits=31).decompress(raw, 540)
    except zlib.error:
        return b""


def _gzip_length_at_least(path: Path, needed: int) -> int:
    """Decompressed length of ``path``, counted up to ``needed`` (less if the stream is cut short).

    Streams with bounded output so a highly compressed mask cannot blow up memory;
    multi-member gzip files are followed member by member. Raises ``zlib.error`` on
    corrupt data.
    """
    count = 0
    inflater = zlib.decompressobj(wbits=31)
    with open(path, "rb") as fh:
        while count < needed:
            data = fh.read(1 << 20)
            if not data:
                break
            while data and count < needed:
                count += len(inflater.decompress(data, 1 << 22))
                if inflater.eof:
                    data = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
                else:
                    data = inflater.unconsumed_tail
    return count


def check_nifti_complete(path: Path) -> None:
    """Raise ``ImageReadError`` if a .nii/.nii.gz holds less data than its header promises.

    ITK reads such files without complaint and fills the missing voxels with zeros. For
    .nii.gz the gzip trailer (uncompressed size mod 2**32) answers in O(1); only when it
    disagrees is the stream decompressed to count. Corruption inside a complete gzip
    stream is not looked for (it would cost a second full decompression).
    """
    compressed = image_suffix(path) == ".nii.gz"
    layout = _nifti_layout(_nifti_head(path, compressed))
    if layout is None:
        return  # header not recognisable here: ITK read it, let its interpretation stand
    needed = sum(layout)
    if not compressed:
        found = path.stat().st_size
    else:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", fh.read(4))[0]
        if isize == needed % (1 << 32):
            return
        try:
            found = _gzip_length_at_least(path, needed)
        except (OSError, zlib.error) as exc:
            raise ImageReadError(f"cannot read image '{path}': corrupt gzip data ({exc})") from None
    if found < needed:
        raise ImageReadError(
            f"cannot read image '{path}': NIfTI file is truncated ({found} of {needed} bytes of header and voxel data)"
        )


# --------------------------------------------------------------------------- reading


_NIFTI_FAMILY = (".nii", ".nii.gz", ".hdr", ".img", ".hdr.gz", ".img.gz")


def _has_nifti_sibling(path: Path, suffix: str) -> bool:
    base = path.name[: len(path.name) - len(suffix)]
    names = {base + ext for ext in _NIFTI_FAMILY} | {base + ext.upper() for ext in _NIFTI_FAMILY}
    names.discard(path.name)
    return any((path.parent / name).exists() for name in names)


@contextlib.contextmanager
def _nifti_alias(path: Path, suffix: str) -> Iterator[Path]:
    """A name under which ITK reads this NIfTI file, and only this file.

    ITK's NIfTI library searches for the file by base name: asked for ``x.nii.gz`` it
    silently reads ``x.nii`` when both exist. When a sibling exists, the name is a private
    link whose folder holds nothing else.
    """
    if not _has_nifti_sibling(path, suffix):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="sammed-read-") as tmp:
        alias = Path(tmp) / f"image{suffix}"
        try:
            os.symlink(path.resolve(), alias)
        except OSError:  # no symlinks (e.g. Windows without privilege): pay for a copy
            shutil.copyfile(path, alias)
        yield alias


def _read_nifti(path: Path, suffix: str) -> sitk.Image:
    """Read a NIfTI file, and only that file (see ``_nifti_alias``)."""
    with _nifti_alias(path, suffix) as alias:
        return sitk.ReadImage(str(alias))


# NIfTI datatype code -> NumPy scalar type, for the types ITK reads as themselves.
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_SITK_OF_DTYPE = {
    "u1": sitk.sitkUInt8, "i1": sitk.sitkInt8, "u2": sitk.sitkUInt16, "i2": sitk.sitkInt16,
    "u4": sitk.sitkUInt32, "i4": sitk.sitkInt32, "u8": sitk.sitkUInt64, "i8": sitk.sitkInt64,
    "f4": sitk.sitkFloat32, "f8": sitk.sitkFloat64,
}  # fmt: skip


def _plain_nifti_voxels(head: bytes) -> tuple[np.dtype, tuple[int, int, int]] | None:
    """(dtype, (i, j, k) size) when the voxels are stored exactly as ITK returns them: a 3D
    scalar image of a plain type with no intensity scaling. None otherwise (ITK then reads)."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            code, bitpix = struct.unpack(endian + "2h", head[70:74])
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
            slope, inter = struct.unpack(endian + "2f", head[112:120])
            header_size = 348
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            code, bitpix = struct.unpack(endian + "2h", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            vox_offset = struct.unpack(endian + "q", head[168:176])[0]
            slope, inter = struct.unpack(endian + "2d", head[176:192])
            header_size = 540
            break
    else:
        return None
    if dims[0] != 3 or code not in _NIFTI_DTYPES or inter != 0 or slope not in (0.0, 1.0):
        return None
    dtype = np.dtype(endian + _NIFTI_DTYPES[code])
    # bitpix and vox_offset as the datatype and a single file imply (else ITK decides)
    if bitpix != 8 * dtype.itemsize or not (header_size <= vox_offset == int(vox_offset)) or min(dims[1:4]) < 1:
        return None
    return dtype, (int(dims[1]), int(dims[2]), int(dims[3]))


def _read_nifti_gz_in_memory(path: Path) -> Image | None:
    """A .nii.gz decompressed once in memory (CRC checked on the way) and wrapped without a copy.

    ITK's own gzip reading is single-threaded zlib and the stream check ran a second full
    decompression beside it; here ISA-L inflates once and the same bytes become the array.
    The geometry comes from ITK's reading of the header alone (``ReadImageInformation``), so it
    is ITK's interpretation (qform/sform choice) exactly. Returns None, leaving ITK to read,
    for anything but a plain 3D scalar image without intensity scaling.
    """
    head = _nifti_head(path, True)
    layout = _nifti_layout(head)
    plain = _plain_nifti_voxels(head)
    if layout is None or plain is None:
        return None
    offset, nbytes = layout
    needed = offset + nbytes
    if needed > _MAX_DEFLATE_RATIO * path.stat().st_size + (1 << 16):
        # No gzip stream of this size can hold that much: truncated (or a header that lies).
        raise ImageReadError(
            f"cannot read image '{path}': NIfTI file is truncated (its header promises {needed} bytes, "
            f"more than its {path.stat().st_size} compressed bytes can hold)"
        )
    buffer, filled = inflate_gzip(path, needed)
    if filled < needed:
        raise ImageReadError(
            f"cannot read image '{path}': NIfTI file is truncated ({filled} of {needed} bytes of header and voxel data)"
        )
    reader = sitk.ImageFileReader()
    with _nifti_alias(path, ".nii.gz") as alias:
        reader.SetFileName(str(alias))
        reader.ReadImageInformation()
    dtype, size = plain
    if (
        reader.GetDimension() != 3
        or reader.GetNumberOfComponents() != 1
        or reader.GetPixelID() != _SITK_OF_DTYPE[dtype.str[1:]]
        or tuple(reader.GetSize()) != size
    ):
        return None
    count = int(np.prod(size))
    if offset + count * dtype.itemsize > filled:
        return None
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(size[::-1])
    if not dtype.isnative or not array.flags.aligned:  # an odd vox_offset: copy to aligned memory
        array = array.astype(dtype.newbyteorder("="))
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    geometry = Geometry(size, tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), direction)
    return Image(array=array.transpose(2, 1, 0), geometry=geometry, source=str(path))


# Deflate cannot compress better than about 1032:1.
_MAX_DEFLATE_RATIO = 1100


def _check_series_folder(folder: Path, policy: ExternalDataPolicy) -> None:
    """With ``policy="refuse"``, a DICOM folder may not link to files outside itself."""
    if policy != "refuse":
        return
    for entry in folder.iterdir():
        if entry.is_symlink() and not path_is_inside(entry, folder):
            raise ImageReadError(f"cannot read image '{folder}': '{entry.name}' links to a file outside the folder")


def _read_sitk(path: Path, policy: ExternalDataPolicy) -> sitk.Image | Image:
    """The checked read: a SimpleITK image, or an ``Image`` where a .nii.gz was read in memory."""
    if path.is_dir():
        _check_series_folder(path, policy)
        return read_dicom_series(path)
    suffix = image_suffix(path)
    if suffix not in READ_SUFFIXES and not looks_like_dicom(path):
        supported = ", ".join(READ_SUFFIXES)
        raise ImageReadError(
            f"cannot read image '{path}': unsupported file type '{suffix or path.name}' "
            f"(supported: {supported}, a DICOM file, or a folder holding a DICOM series)"
        )
    if path.stat().st_size == 0:
        raise ImageReadError(f"cannot read image '{path}': the file is empty")
    if suffix in READ_SUFFIXES:
        check_content_matches_suffix(path, suffix)
    check_external_data(path, suffix, policy)
    if suffix in (".nii", ".nii.gz"):
        check_nifti_spacing(path, _nifti_head(path, suffix == ".nii.gz"))
    if suffix == ".nii.gz":
        image = _read_nifti_gz_in_memory(path)
        if image is not None:
            return image
    payload = compressed_payload(path, suffix)
    verifier = StreamVerifier(path, *payload) if payload is not None else None
    try:
        img = _read_nifti(path, suffix) if suffix in (".nii", ".nii.gz") else sitk.ReadImage(str(path))
    finally:
        if verifier is not None:
            verifier.result()  # a corrupt stream outranks whatever ITK made of it
    if suffix not in (".nii", ".nii.gz"):
        return img
    check_nifti_complete(path)
    return img


def check_geometry(geometry: Geometry, path: Path) -> None:
    """Refuse a grid that cannot place voxels in the world: spacing finite and > 0, origin and
    direction finite, direction invertible. Such headers otherwise give NaN world positions,
    a singular index<->world map, or masks written with a grid nobody measured."""
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ImageReadError(f"cannot read image '{path}': invalid voxel spacing {tuple(spacing.tolist())} (must be finite and > 0)")
    if not np.all(np.isfinite(np.asarray(geometry.origin, dtype=np.float64))):
        raise ImageReadError(f"cannot read image '{path}': the origin is not finite")
    direction = np.asarray(geometry.direction, dtype=np.float64)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
        raise ImageReadError(f"cannot read image '{path}': the direction matrix is not finite or not invertible")


def read_image(path: str | os.PathLike, *, external_data: ExternalDataPolicy = "same-folder") -> Image:
    """Read a NIfTI / NRRD / MetaImage file, a DICOM file, or a DICOM series folder.

    The pixel dtype is kept as stored (after DICOM rescale slope/intercept, which GDCM
    applies). 2D and 4D images are returned as they are: callers that need a 3D volume
    call ``validate_volume``. Every failure is an ``ImageReadError`` with one line.

    ``external_data`` says what a detached header (MetaImage ``ElementDataFile``, NRRD
    ``data file``) may read: ``"same-folder"`` (files beside the header, for the command
    line) or ``"refuse"`` (only self-contained files, for the server). The content must
    match the suffix, gzip streams are checked end to end, and the geometry must be finite
    and invertible.
    """
    if external_data not in EXTERNAL_DATA_POLICIES:
        raise ValueError(f"external_data must be one of {EXTERNAL_DATA_POLICIES}, not {external_data!r}")
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageReadError(f"cannot read image '{p}': no such file or folder")
    try:
        img = _read_sitk(p, external_data)
    except ImageReadError:
        raise
    except RuntimeError as exc:
        raise ImageReadError(f"cannot read image '{p}': {sitk_error_essence(exc)}") from None
    except OSError as exc:
        raise ImageReadError(f"cannot read image '{p}': {exc.strerror or exc}") from None
    if isinstance(img, Image):  # read in memory: voxels as stored, NaN/inf included
        check_geometry(img.geometry, p)
        return img
    image = from_sitk(img, source=str(p))
    check_geometry(image.geometry, p)
    if image_suffix(p) in (".nii", ".nii.gz") and np.issubdtype(image.array.dtype, np.floating):
        _restore_nifti_non_finite(p, image)
    return image


def _restore_nifti_non_finite(path: Path, image: Image) -> None:
    """Put back the NaN/inf voxels that ITK's NIfTI reader silently turns into 0.

    The NIfTI C library zeroes non-finite floats on read, which would hide corrupt data from
    ``validate_volume``; nibabel reads the same voxels (same [i, j, k] order) unchanged.
    Only float images pay for this second read.
    """
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)  # type: ignore[attr-defined]  # a NIfTI image has one
    if data.shape != image.array.shape:
        return
    bad = ~np.isfinite(data)
    if bad.any():
        array = np.array(image.array, copy=True)
        array[bad] = data[bad]
        image.array = array
