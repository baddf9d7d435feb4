"""Reading a mask for an image, whatever wrote it: label images, DICOM-SEG, Slicer ``.seg.nrrd``.

A reference label (evaluation), an initial mask or a label a client submits may come from
sammed, from Slicer (a ``.seg.nrrd`` with named segments), from a PACS (a DICOM-SEG) or from any
tool that writes NIfTI/NRRD/MHA label images. ``read_mask(path, reference)`` turns each into
one label array on the reference image's grid, or says in one line why it cannot.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sammed.errors import InvalidImageError
from sammed.io.dicom_seg import is_dicom_seg, read_dicom_seg
from sammed.io.file_checks import ExternalDataPolicy, check_external_data
from sammed.io.image import Geometry, Image
from sammed.io.readers import read_image
from sammed.io.segments import Segment, segments_for
from sammed.io.slicer_seg import is_slicer_seg, read_slicer_seg
from sammed.io.validation import validate_label_map

GRID_TOLERANCE_MM = 1e-3


def is_segmentation_file(path: str | os.PathLike) -> bool:
    """True for formats that carry segment names: ``.seg.nrrd`` and DICOM-SEG files."""
    return is_slicer_seg(path) or (Path(path).is_file() and is_dicom_seg(path))


def _check_grid(found: Geometry, reference: Geometry, shown: str) -> None:
    if tuple(found.size) != tuple(reference.size):
        raise InvalidImageError(
            f"'{shown}': mask size {list(found.size)} does not match the image size {list(reference.size)}"
        )
    if not found.same_grid(reference, atol=GRID_TOLERANCE_MM):
        raise InvalidImageError(f"'{shown}': the mask is not on the same voxel grid as the image (spacing, origin or direction differ)")


def read_mask_segments(
    path: str | os.PathLike, reference: Image | Geometry, *, external_data: ExternalDataPolicy = "same-folder"
) -> tuple[np.ndarray, list[Segment]]:
    """A mask file as (label array on ``reference``'s grid, its segments).

    Plain label images name their segments 'object N'; Slicer and DICOM-SEG files keep theirs.
    """
    source = Path(path).expanduser()
    geometry = reference.geometry if isinstance(reference, Image) else reference
    if is_slicer_seg(source):
        check_external_data(source, ".nrrd", external_data)  # a detached header reads the file it names
        image, segments = read_slicer_seg(source)
        _check_grid(image.geometry, geometry, str(source))
        return image.array, segments
    if source.is_file() and is_dicom_seg(source):
        return read_dicom_seg(source, geometry)
    image = read_image(source, external_data=external_data)
    if image.ndim != 3:
        raise InvalidImageError(f"'{source}': a mask must be a 3D label image, not {image.ndim}D")
    _check_grid(image.geometry, geometry, str(source))
    validate_label_map(image)
    array = np.asarray(image.array)
    if array.size and array.max() > 65535:
        raise InvalidImageError(f"'{source}': mask labels exceed 65535")
    labels = array.astype(np.uint8 if not array.size or array.max() <= 255 else np.uint16)
    return labels, segments_for(labels)


def read_mask(
    path: str | os.PathLike, reference: Image | Geometry, *, external_data: ExternalDataPolicy = "same-folder"
) -> np.ndarray:
    """A mask file (NIfTI/NRRD/MHA label image, DICOM-SEG or ``.seg.nrrd``) as labels on ``reference``'s grid."""
    return read_mask_segments(path, reference, external_data=external_data)[0]
