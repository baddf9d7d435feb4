"""Pictures (PNG, JPEG, TIFF) read with Pillow into the (H, W, 3) uint8 RGB a 2D model takes.

Grey images are copied into three channels; RGBA drops its alpha channel (the colour is kept as it
is, not composited); palette images are expanded; 16-bit and float grey images are windowed like
volumes. Two-channel images (grey + alpha) and CMYK are refused: which channels hold the anatomy
is not knowable. Multi-page TIFFs are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sammed.errors import ImageReadError, InvalidImageError
from sammed.io.windowing import check_finite, grey_to_rgb, percentile_window, window_to_uint8

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_picture(path: Path) -> np.ndarray:
    """A PNG/JPEG/TIFF file -> (H, W, 3) uint8 RGB (see the module notes for each mode)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as picture:
            frames = getattr(picture, "n_frames", 1)
            if frames > 1:
                raise InvalidImageError(f"'{path}' holds {frames} pages/frames; a 2D model takes one image")
            picture.load()
            return _picture_to_rgb(picture, path)
    except (UnidentifiedImageError, PILImage.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot read image '{path}': {_first_line(exc)}") from None
    except OSError as exc:  # truncated or corrupt data
        raise ImageReadError(f"cannot read image '{path}': {_first_line(exc)}") from None


def _picture_to_rgb(picture, path: Path) -> np.ndarray:
    mode = picture.mode
    if mode in ("LA", "La", "PA"):
        raise InvalidImageError(
            f"'{path}' has 2 channels ({mode}: grey + alpha); give a grey (1-channel) or colour (3-channel) image"
        )
    if mode == "CMYK":
        raise InvalidImageError(f"'{path}' is a 4-channel CMYK image; convert it to RGB first")
    if mode == "P":
        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
    elif mode == "1":
        picture = picture.convert("L")
    elif mode not in ("L", "RGB", "RGBA", "RGBa", "RGBX") and not mode.startswith(("I", "F")):
        picture = picture.convert("RGB")  # YCbCr, LAB, HSV: colour spaces Pillow converts exactly
    array = np.asarray(picture)
    if array.ndim == 3:
        return np.ascontiguousarray(array[:, :, :3])  # RGBA / RGBX: drop the 4th channel
    if array.dtype != np.uint8:  # 16/32-bit integer or float grey
        check_finite(array, str(path))
        array = window_to_uint8(array.astype(np.float64), percentile_window(array, str(path)))
    return grey_to_rgb(array)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
