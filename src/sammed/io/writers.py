"""Writing images and masks with exactly the geometry of a reference image.

Writes are atomic: the file is written under a temporary name in the target folder
(keeping the real suffix, so SimpleITK picks the format from it) and renamed over the
target only once complete. A failed or interrupted write leaves no partial file and an
existing target untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sammed.errors import ImageWriteError, InvalidImageError
from sammed.io.atomic import atomic_path
from sammed.io.image import Geometry, Image
from sammed.io.readers import image_suffix, sitk_error_essence, to_sitk

# Single-file formats only: detached headers (.nhdr, .mhd) name their data file, which
# would then point at the temporary name.
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
_COMPRESSIBLE = (".nrrd", ".mha")  # .nii.gz is compressed by its suffix, .nii never


def _target(path: str | os.PathLike) -> tuple[Path, str]:
    target = Path(path).expanduser()
    suffix = image_suffix(target)
    if suffix not in WRITE_SUFFIXES:
        raise ImageWriteError(
            f"cannot write '{target}': unsupported suffix '{suffix or target.name}' "
            f"(use one of {', '.join(WRITE_SUFFIXES)})"
        )
    if target.is_dir():
        raise ImageWriteError(f"cannot write '{target}': it is a folder")
    return target, suffix


def _label_array(mask: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Mask -> uint8 (uint16 when labels exceed 255), refusing what is not a label map."""
    arr = np.asarray(mask)
    if tuple(arr.shape) != tuple(size):
        raise InvalidImageError(f"mask shape {tuple(arr.shape)} does not match the reference image size {tuple(size)}")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InvalidImageError("mask contains NaN or infinite values: threshold it before writing")
        if np.any(arr != np.floor(arr)):
            raise InvalidImageError("mask has non-integer values: threshold it before writing")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InvalidImageError(f"mask dtype {arr.dtype} is not a label type (use bool or integers)")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise InvalidImageError(f"mask has negative labels (minimum {lo.item()})")
    if hi > np.iinfo(np.uint16).max:
        raise InvalidImageError(f"mask labels exceed 65535 (maximum {hi.item()})")
    return arr.astype(np.uint8 if hi <= np.iinfo(np.uint8).max else np.uint16)


def _atomic_write(img: sitk.Image, target: Path, suffix: str, compress: bool) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ImageWriteError(f"cannot write '{target}': cannot create folder '{target.parent}' ({reason})") from None
    try:
        with atomic_path(target, suffix) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=compress and suffix in _COMPRESSIBLE)
    except RuntimeError as exc:
        raise ImageWriteError(f"cannot write '{target}': {sitk_error_essence(exc)}") from None
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{target}': {exc.strerror or exc}") from None
    return target


def write_image(image: Image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``image`` (any dtype SimpleITK stores) with its geometry; format from the suffix."""
    target, suffix = _target(path)
    return _atomic_write(to_sitk(image), target, suffix, compress)


def write_mask(
    mask: np.ndarray | Image,
    reference: Image | Geometry,
    path: str | os.PathLike,
    *,
    compress: bool = True,
) -> Path:
    """Write a label mask on exactly the reference grid (size, spacing, origin, direction).

    ``mask`` is indexed [i, j, k] like ``reference.array``; bool, integer or integral float
    values are stored as uint8 (uint16 when a label exceeds 255). A mask given as an
    ``Image`` must already lie on the reference grid. Returns the written path.
    """
    target, suffix = _target(path)
    geometry = reference.geometry if isinstance(reference, Image) else reference
    if isinstance(mask, Image):
        if not mask.geometry.same_grid(geometry, atol=1e-3):
            raise InvalidImageError(
                "mask geometry differs from the reference image's (resample it onto the reference grid first)"
            )
        mask = mask.array
    labels = _label_array(mask, geometry.size)
    return _atomic_write(to_sitk(Image(labels, geometry)), target, suffix, compress)


# Formats that carry segment names and colours; ``image_suffix`` calls a .seg.nrrd '.nrrd'.
SEGMENTATION_SUFFIXES = (".seg.nrrd", ".dcm")


def segmentation_suffix(path: str | os.PathLike) -> str | None:
    """'.seg.nrrd' or '.dcm' when ``path`` names a Slicer segmentation or a DICOM-SEG, else None."""
    name = Path(path).name.lower()
    return next((s for s in SEGMENTATION_SUFFIXES if name.endswith(s)), None)


def write_labels(
    labels: np.ndarray,
    reference: Image,
    path: str | os.PathLike,
    *,
    names: dict[int, str] | None = None,
    dicom_source: str | os.PathLike | list | None = None,
    algorithm: tuple[str, str] = ("sammed", "unknown"),
) -> Path:
    """Write a label map in the format its suffix names: .seg.nrrd (Slicer), .dcm (DICOM-SEG) or a label image.

    A DICOM-SEG references its source series, so ``dicom_source`` (the series folder) is required
    for .dcm; names label the segments of the formats that keep them.
    """
    kind = segmentation_suffix(path)
    if kind == ".seg.nrrd":
        from sammed.io.slicer_seg import write_slicer_seg

        return write_slicer_seg(labels, reference, path, names=names)
    if kind == ".dcm":
        from sammed.io.dicom_seg import write_dicom_seg

        if dicom_source is None:
            raise ImageWriteError(f"cannot write '{path}': a DICOM-SEG (.dcm) needs a DICOM series as input")
        return write_dicom_seg(labels, reference, dicom_source, path, names=names, algorithm=algorithm)
    return write_mask(labels, reference, path)
