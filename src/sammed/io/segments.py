"""Segment descriptions shared by the label-map formats that carry names and colours.

A ``Segment`` is what Slicer (``.seg.nrrd``) and DICOM-SEG keep per label value: its name
and display colour. The default colours are the web viewer's object colours, so an object
looks the same in the viewer, in Slicer and in a PACS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from sammed.errors import InvalidImageError
from sammed.io.image import Geometry, Image

# The web viewer's palette (server/static/viewer.js), object id 1 first, cycled past 10.
PALETTE_RGB255 = (
    (230, 75, 60),
    (60, 180, 75),
    (255, 200, 40),
    (70, 130, 230),
    (245, 130, 48),
    (145, 30, 180),
    (70, 220, 220),
    (240, 50, 230),
    (190, 230, 60),
    (250, 160, 190),
)


def default_color(label: int) -> tuple[float, float, float]:
    """The viewer's colour of object ``label`` as RGB in 0..1."""
    r, g, b = PALETTE_RGB255[(label - 1) % len(PALETTE_RGB255)]
    return (r / 255.0, g / 255.0, b / 255.0)


def default_name(label: int) -> str:
    return f"object {label}"


@dataclass(frozen=True)
class Segment:
    """One label value of a label map with its name and colour (RGB 0..1)."""

    label: int
    name: str
    color: tuple[float, float, float]


def segments_for(labels: np.ndarray | Iterable[int], names: Mapping[int, str] | None = None) -> list[Segment]:
    """A ``Segment`` for each label value: the non-zero values of a label map plus every named one.

    A named object that is empty still gets its segment (Slicer shows it, empty); values without
    a given name are called 'object N'; colours are the viewer's.
    """
    names = {int(k): v for k, v in (names or {}).items()}
    if isinstance(labels, np.ndarray):
        found = {int(v) for v in np.unique(labels) if v != 0}
    else:
        found = {int(v) for v in labels}
    values = sorted(found | set(names))
    return [Segment(v, names.get(v) or default_name(v), default_color(v)) for v in values]


def checked_labels(labels: np.ndarray, reference: Image | Geometry) -> tuple[np.ndarray, Geometry]:
    """A 3D label map on ``reference``'s grid as uint8 (uint16 past 255), and the grid; one-line errors."""
    geometry = reference.geometry if isinstance(reference, Image) else reference
    array = np.asarray(labels)
    if array.ndim != 3 or array.shape != tuple(geometry.size):
        raise InvalidImageError(f"label map shape {array.shape} does not match the image size {geometry.size}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer) or (array.size and (array.min() < 0 or array.max() > 65535)):
        raise InvalidImageError("a segmentation needs integer labels from 0 to 65535")
    return array.astype(np.uint8 if not array.size or array.max() <= 255 else np.uint16), geometry
