"""Display windows: real intensities (HU, MR signal...) to the 8-bit grey a 2D model takes.

The 0.5-99.5 percentile window serves volumes, 16-bit/float pictures and DICOM files without a
window of their own; ``window_unit`` is DICOM's VOI window function (PS3.3 C.11.2.1.2).
"""

from __future__ import annotations

import numpy as np

from sammed.errors import InvalidImageError

PERCENTILE_WINDOW = (0.5, 99.5)
# Percentiles of a big volume are estimated on an evenly strided subset of its voxels.
_PERCENTILE_SAMPLES = 2_000_000


def check_finite(array: np.ndarray, name: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InvalidImageError(f"'{name}': image contains NaN or infinite values")


def percentile_window(values: np.ndarray, name: str = "image") -> tuple[float, float]:
    """The 0.5-99.5 percentile range (min-max if that is flat), estimated on <= 2M voxels."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, flat.size // _PERCENTILE_SAMPLES)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise InvalidImageError(f"'{name}': image has no finite values")
    low, high = np.percentile(sample, PERCENTILE_WINDOW)
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        high = low + 1.0  # constant image: everything maps to black
    return float(low), float(high)


def window_to_uint8(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return unit_to_uint8(np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0))


def window_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM window (PS3.3 C.11.2.1.2/3) onto [0, 1]: LINEAR, LINEAR_EXACT or SIGMOID."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT" or width <= 1:
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.rint(np.nan_to_num(unit) * 255.0).astype(np.uint8)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """(H, W) -> contiguous (H, W, 3), the grey value in every channel."""
    return np.ascontiguousarray(np.repeat(np.asarray(grey)[:, :, None], 3, axis=2))
