"""Images in and out of the server: uploads, files under --data-root, NIfTI replies.

Uploads are written to a private temporary folder under a fixed name (only their suffix is
kept), so a client-chosen file name never touches the file system. Before any voxel is
decoded, the header alone gives the decoded size (a 255 KB upload may decode to 512 MB),
which is checked against the per-image limit and the memory budget; then
``sammed.io.read_image`` reads the file with ``external_data="refuse"``: a server reads only
the bytes it was given, never a file a header points to. Replies are NIfTI written by
``sammed.io`` with the image's exact geometry.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from sammed.errors import SammedError
from sammed.io import Image, read_image, validate_volume, write_image, write_mask
from sammed.io.masks import read_mask
from sammed.io.readers import READ_SUFFIXES, image_suffix, sitk_error_essence
from sammed.io.slicer_seg import SEG_NRRD
from sammed.server.errors import ServerError

DETACHED_HEADER_SUFFIXES = (".mhd", ".nhdr")  # formats whose voxels live in another file
_HEADER_PROBE = 1 << 16
_METAIMAGE_DATA = re.compile(rb"^\s*ElementDataFile\s*=\s*(\S.*?)\s*$", re.MULTILINE)
_NRRD_DATA = re.compile(rb"^\s*data\s?file\s*:", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class DecodedSize:
    """What an image will occupy once decoded, known from its header(s) alone."""

    voxels: int
    bytes: int
    description: str  # e.g. "512 x 512 x 300 of 16-bit signed integer"


def refuse_detached_data(path: Path, shown: str) -> None:
    """Refuse a MetaImage or NRRD header whose voxels live in another file, by content.

    ``read_image(external_data="refuse")`` does the same by suffix; this second look at the
    bytes also catches such a header uploaded under another suffix (defence in depth).
    """
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_PROBE)
    if head.startswith(b"NRRD"):
        header = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
        if _NRRD_DATA.search(header):
            raise ServerError(f"'{shown}': NRRD header names a separate data file; this server reads only self-contained files")
        return
    match = _METAIMAGE_DATA.search(head)
    if match and match.group(1).upper() != b"LOCAL":
        raise ServerError(
            f"'{shown}': MetaImage header names a separate data file; "
            "this server reads only self-contained files (.mha with ElementDataFile = LOCAL)"
        )


def _component_bytes(pixel_id: int, components: int) -> int:
    """Bytes of one component of a SimpleITK pixel type (a 1-voxel image tells, without a table)."""
    return sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id, components)).dtype.itemsize


def _file_size(path: Path, shown: str) -> DecodedSize:
    refuse_detached_data(path, shown)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ServerError(f"cannot read image '{shown}': {sitk_error_essence(exc)}") from None
    size = tuple(int(n) for n in reader.GetSize())
    components = max(1, reader.GetNumberOfComponents())
    voxels = math.prod(size) * components
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    described = f"{' x '.join(map(str, size))} of {pixel}"
    return DecodedSize(voxels, voxels * _component_bytes(reader.GetPixelID(), components), described)


def _folder_size(folder: Path, shown: str) -> DecodedSize:
    """An upper bound for a DICOM series: the sizes of every file in the folder added up."""
    voxels = total = 0
    for child in sorted(folder.iterdir()):
        if not child.is_file() or child.is_symlink():
            continue
        try:
            part = _file_size(child, shown)
        except ServerError:
            continue  # not an image: the series reader ignores it too
        voxels += part.voxels
        total += part.bytes
    return DecodedSize(voxels, total, f"{voxels} voxels in DICOM files")


def decoded_size(path: Path, shown: str) -> DecodedSize:
    """The decoded size of an image file or DICOM folder, read from headers only."""
    return _folder_size(path, shown) if path.is_dir() else _file_size(path, shown)


def read_checked(path: Path, shown: str) -> Image:
    """Read and validate a volume; errors name ``shown``, never the server's own paths."""
    try:
        image = read_image(path, external_data="refuse")
        validate_volume(image)
    except SammedError as exc:
        message = str(exc).replace(str(path), shown).replace(str(path.parent), "the uploaded files")
        raise ServerError(message) from None
    image.source = shown
    return image


def read_mask_checked(path: Path, shown: str, reference: Image) -> np.ndarray:
    """Read a label file (label image, DICOM-SEG, .seg.nrrd) on ``reference``'s grid, self-contained only."""
    refuse_detached_data(path, shown)
    try:
        return read_mask(path, reference, external_data="refuse")
    except SammedError as exc:
        message = str(exc).replace(str(path), shown)
        if path.name not in shown:  # a staged upload's private name ('upload00000.dcm') is not the client's
            message = message.replace(path.name, shown)
        raise ServerError(message) from None


def _store(uploads: list[tuple[str, object]], folder: Path) -> Path:
    paths = []
    for number, (filename, stream) in enumerate(uploads):
        # '.seg.nrrd' is kept whole: Slicer's segment layout is read by that name, not as a plain NRRD.
        suffix = SEG_NRRD if filename.lower().endswith(SEG_NRRD) else image_suffix(filename)
        if suffix in DETACHED_HEADER_SUFFIXES:
            raise ServerError(
                f"'{filename}' is a header whose voxels live in another file ({suffix}): upload a self-contained "
                "image (.nii.gz, .nrrd, .mha, DICOM)"
            )
        target = folder / f"upload{number:05d}{suffix if suffix in (*READ_SUFFIXES, SEG_NRRD) else '.dcm'}"
        with open(target, "wb") as fh:
            shutil.copyfileobj(stream, fh, 1 << 20)
        paths.append(target)
    return paths[0] if len(paths) == 1 else folder  # several files: one DICOM series


@contextlib.asynccontextmanager
async def staged_uploads(files: list[UploadFile]) -> AsyncIterator[Path]:
    """The uploads written to a private folder: the one file, or the folder of a DICOM series."""
    if not files:
        raise ServerError("no file uploaded")
    with tempfile.TemporaryDirectory(prefix="sammed-upload-") as tmp:
        yield await run_in_threadpool(_store, [(f.filename or "upload", f.file) for f in files], Path(tmp))


def _encode(write, *args) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sammed-reply-") as tmp:
        target = Path(tmp) / "reply.nii.gz"
        write(*args, target)
        return target.read_bytes()


def image_nifti(image: Image) -> bytes:
    """The image as .nii.gz bytes (same grid, same voxel values)."""
    return _encode(write_image, image)


def mask_nifti(mask: np.ndarray, reference: Image) -> bytes:
    """A label map on ``reference``'s grid as .nii.gz bytes (uint8, uint16 past 255 labels)."""
    return _encode(write_mask, mask, reference)


def image_name(image_path: Path) -> str:
    """'liver.nii.gz' -> 'liver'; a DICOM folder keeps its folder name."""
    if image_path.is_dir():
        return image_path.name
    suffix = image_suffix(image_path)
    return image_path.name[: len(image_path.name) - len(suffix)] if suffix else image_path.stem

