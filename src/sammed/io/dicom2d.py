"""One-frame DICOM images for 2D models, read with pydicom and shown as a viewer shows them.

The modality LUT (rescale slope/intercept or a LUT) gives real values (e.g. HU), then the file's
VOI LUT or its first WindowCenter / WindowWidth pair maps them to the display range; without
either, the 0.5-99.5 percentile window is used. MONOCHROME1 is inverted so that bright means
high values, as it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sammed.errors import ImageReadError, InvalidImageError
from sammed.io.picture import _first_line
from sammed.io.windowing import grey_to_rgb, percentile_window, unit_to_uint8, window_unit


def _read_dicom_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(f"cannot read DICOM '{path}': {_first_line(exc)}") from None


def dicom_to_rgb(dataset, source: str = "DICOM") -> np.ndarray:
    """A single-frame pydicom dataset -> (H, W, 3) uint8 for display (see the module notes)."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if "PixelData" not in dataset:
        raise InvalidImageError(f"'{source}' has no pixel data (is it a DICOM image?)")
    try:
        array = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable pixels
        raise ImageReadError(f"cannot decode the pixels of '{source}': {_first_line(exc)}") from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, dataset)
    if array.ndim == 3 and array.shape[2] == 3:  # RGB (pydicom converts YBR_* to RGB)
        return _colour_to_uint8(array, int(dataset.get("BitsStored", 8)))
    if array.ndim != 2:
        raise InvalidImageError(f"'{source}' has pixel array shape {array.shape}; expected one grey or RGB frame")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidImageError(f"'{source}': unsupported DICOM photometric interpretation {photometric}")
    values = np.asarray(apply_modality_lut(array, dataset), dtype=np.float64)
    display = _voi_display(values, dataset, source)
    if photometric == "MONOCHROME1":  # low values are shown bright
        display = 1.0 - display
    return grey_to_rgb(unit_to_uint8(display))


def _voi_display(values: np.ndarray, dataset, source: str) -> np.ndarray:
    """Modality values -> [0, 1] through the VOI LUT, the first window, or percentiles."""
    from pydicom.pixels import apply_voi

    lut_items = dataset.get("VOILUTSequence")
    if lut_items and lut_items[0].get("LUTDescriptor") is not None:
        bits = int(lut_items[0].LUTDescriptor[2])
        entries = np.rint(values).astype(np.int64)  # a LUT is indexed by (rounded) modality values
        return np.clip(apply_voi(entries, dataset, 0).astype(np.float64) / (2**bits - 1), 0.0, 1.0)
    center, width = _first_value(dataset.get("WindowCenter")), _first_value(dataset.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        return window_unit(values, center, width, str(dataset.get("VOILUTFunction", "LINEAR")).upper())
    low, high = percentile_window(values, source)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _first_value(element) -> float | None:
    """The first value of a possibly multi-valued DS element (several windows may be listed)."""
    if element is None:
        return None
    value = element[0] if isinstance(element, Sequence) and not isinstance(element, str) else element
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _colour_to_uint8(array: np.ndarray, bits_stored: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    scale = 255.0 / float(2 ** max(bits_stored, 1) - 1)
    return np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
