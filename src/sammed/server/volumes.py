"""Images in and out of the server: uploads, files under --data-root, NIfTI replies.

Uploads are written to a private temporary folder under a fixed name (only their suffix is
kept) and read with ``sammed.io.read_image``, so a client-chosen file name never touches the
file system. Replies are NIfTI written by ``sammed.io`` with the image's exact geometry, so
a viewer shows the same voxel grid the session works on.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from sammed.errors import SammedError
from sammed.io import Image, read_image, validate_volume, write_image, write_mask
from sammed.io.readers import READ_SUFFIXES, image_suffix
from sammed.server.errors import ServerError


def _read_checked(path: Path) -> Image:
    image = read_image(path)
    validate_volume(image)
    return image


def _store_and_read(uploads: list[tuple[str, object]]) -> Image:
    with tempfile.TemporaryDirectory(prefix="sammed-upload-") as tmp:
        folder = Path(tmp)
        paths = []
        for number, (filename, stream) in enumerate(uploads):
            suffix = image_suffix(filename)
            target = folder / f"upload{number:05d}{suffix if suffix in READ_SUFFIXES else '.dcm'}"
            with open(target, "wb") as fh:
                shutil.copyfileobj(stream, fh, 1 << 20)
            paths.append(target)
        try:
            if len(paths) == 1:
                return _read_checked(paths[0])
            return _read_checked(folder)  # several files: one DICOM series
        except SammedError as exc:
            message = str(exc).replace(str(paths[0]), uploads[0][0]).replace(str(folder), "the uploaded files")
            raise ServerError(message) from None


async def read_uploads(files: list[UploadFile]) -> Image:
    """Read one uploaded image file, or several files forming one DICOM series."""
    if not files:
        raise ServerError("no file uploaded")
    image = await run_in_threadpool(_store_and_read, [(f.filename or "upload", f.file) for f in files])
    image.source = files[0].filename or "upload"
    return image


async def read_path(path: Path) -> Image:
    """Read an image file or DICOM folder already confined to the data root."""
    try:
        return await run_in_threadpool(_read_checked, path)
    except SammedError as exc:
        raise ServerError(str(exc)) from None


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
