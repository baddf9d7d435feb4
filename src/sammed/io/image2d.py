"""2D inputs and outputs for the 2D models: pictures, 2D DICOM and slices of volumes.

Every reader returns an :class:`Image2D`: an (H, W, 3) RGB ``uint8`` array (what the 2D
models take) plus where it came from, so that a mask can be written back in the right form:

* **Pictures** (PNG, JPEG, TIFF) are read with Pillow. Grey images are copied into three
  channels; RGBA drops its alpha channel (the colour is kept as it is, not composited);
  palette images are expanded; 16-bit and float grey images are windowed like volumes (below).
  Two-channel images (grey + alpha) and CMYK are refused: which channels hold the anatomy
  is not knowable. Multi-page TIFFs are refused. Their masks are written as PNG.
* **2D DICOM** (one frame) is read with pydicom: the modality LUT (rescale slope/intercept or
  a LUT) gives real values (e.g. HU), then the file's VOI LUT or its first WindowCenter /
  WindowWidth pair maps them to the display range; without either, the 0.5-99.5 percentile
  window is used. MONOCHROME1 is inverted so that bright means high values, as it is shown.
  Masks are written as PNG. Multi-frame DICOM is a volume.
* **A slice of a volume** (anything :func:`sammed.io.read_image` reads) at index ``k`` along
  voxel axis ``i``, ``j`` or ``k``. Intensities are windowed to the 0.5-99.5 percentiles of
  the *whole volume* (so every slice of a volume gets the same mapping). The picture is not
  flipped: its columns (x) run along the first remaining voxel axis and its rows (y) along the
  second, e.g. for ``--axis k`` pixel (x, y) is voxel (i=x, j=y, k). A mask of the slice is
  written as a mask of the **whole volume** (its size, spacing, origin and direction) that is
  zero everywhere except on that slice, so it overlays the source in any viewer and several
  slices can be merged; it is written with :func:`sammed.io.write_mask`.

Pixel coordinates everywhere are (x, y) = (column, row), as in SAM.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sammed.errors import ImageReadError, ImageWriteError, InvalidImageError
from sammed.io.atomic import atomic_path
from sammed.io.dicom import looks_like_dicom
from sammed.io.image import Geometry, Image
from sammed.io.readers import image_suffix, read_image
from sammed.io.validation import validate_volume
from sammed.io.writers import WRITE_SUFFIXES, write_mask

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_2D_SUFFIX = ".png"
AXES = ("i", "j", "k")
PERCENTILE_WINDOW = (0.5, 99.5)
# Percentiles of a big volume are estimated on an evenly strided subset of its voxels.
_PERCENTILE_SAMPLES = 2_000_000
MASK_ON = 255  # masks are stored 0 / 255, like the SAM-Med2D demo masks


@dataclass(frozen=True)
class VolumeSlice:
    """Where a 2D picture lies in a volume: its grid, the fixed voxel axis and the index on it.

    ``axis`` is None when the source grid itself is 2D (e.g. a 2D NIfTI or MetaImage).
    """

    geometry: Geometry
    axis: int | None
    index: int

    @property
    def plane_axes(self) -> tuple[int, int]:
        """The voxel axes along the picture's columns (x) and rows (y)."""
        if self.axis is None:
            return (0, 1)
        first, second = (a for a in range(3) if a != self.axis)
        return first, second

    def grid_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) picture mask -> a uint8 mask on the whole source grid (only this slice set)."""
        plane = np.asarray(mask).T  # picture [y, x] -> voxels [x-axis, y-axis]
        full = np.zeros(self.geometry.size, dtype=np.uint8)
        if self.axis is None:
            full[...] = plane
        else:
            where: list = [slice(None)] * 3
            where[self.axis] = self.index
            full[tuple(where)] = plane
        return full


@dataclass(frozen=True)
class Image2D:
    """An RGB picture for a 2D model: ``pixels`` (H, W, 3) uint8 and its origin.

    ``volume_slice`` is None for pictures and 2D DICOM (masks go to PNG), else the slice's place
    in its volume (masks go to a volume file with the volume's geometry).
    """

    pixels: np.ndarray
    source: str
    volume_slice: VolumeSlice | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def mask_suffixes(self) -> tuple[str, ...]:
        """The output formats a mask of this image can be written in."""
        return (MASK_2D_SUFFIX,) if self.volume_slice is None else WRITE_SUFFIXES


# --------------------------------------------------------------------------- reading


def read_image_2d(path: str | os.PathLike, slice_index: int | None = None, axis: str = "k") -> Image2D:
    """Read a picture, a 2D DICOM file or one slice of a volume as an :class:`Image2D`.

    ``slice_index`` and ``axis`` (``"i"``, ``"j"`` or ``"k"``) choose the slice of a volume;
    a volume without ``slice_index`` and a picture with one are refused. Every failure is a
    one-line :class:`~sammed.errors.SammedError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageReadError(f"cannot read image '{p}': no such file or folder")
    if axis not in AXES:
        raise InvalidImageError(f"slice axis must be one of {', '.join(AXES)}, not {axis!r}")
    suffix = image_suffix(p)
    if p.is_file() and suffix in PICTURE_SUFFIXES:
        if slice_index is not None:
            raise InvalidImageError(f"'{p}' is a 2D picture: --slice/--axis are only for volumes")
        return _not_constant(Image2D(read_picture(p), str(p)))
    if slice_index is None and p.is_file() and (suffix == ".dcm" or looks_like_dicom(p)):
        dataset = _read_dicom_dataset(p)
        if int(dataset.get("NumberOfFrames", 1) or 1) == 1:
            return _not_constant(Image2D(dicom_to_rgb(dataset, str(p)), str(p)))
    return _not_constant(volume_slice_image(read_image(p), slice_index, axis))


def _not_constant(image: Image2D) -> Image2D:
    """A uniform picture has nothing to segment; a model would still draw a mask on it."""
    pixels = image.pixels
    if pixels.size and pixels.min() == pixels.max():
        raise InvalidImageError(f"'{image.source}': image intensities are constant: nothing to segment")
    return image


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
        _check_finite(array, str(path))
        array = window_to_uint8(array.astype(np.float64), percentile_window(array, str(path)))
    return grey_to_rgb(array)


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
    return grey_to_rgb(_unit_to_uint8(display))


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


def window_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM window (PS3.3 C.11.2.1.2/3) onto [0, 1]: LINEAR, LINEAR_EXACT or SIGMOID."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT" or width <= 1:
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


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


# --------------------------------------------------------------------------- volumes


def volume_slice_image(image: Image, slice_index: int | None, axis: str = "k") -> Image2D:
    """One slice of a volume read by :func:`sammed.io.read_image`, windowed on the whole volume."""
    name = image.source or "image"
    if axis not in AXES:
        raise InvalidImageError(f"slice axis must be one of {', '.join(AXES)}, not {axis!r}")
    if image.ndim == 2:  # a 2D file with geometry (2D NIfTI, MetaImage, ...): no slice to choose
        if slice_index not in (None, 0):
            raise InvalidImageError(f"'{name}' is a 2D image: slice {slice_index} does not exist")
        place = VolumeSlice(image.geometry, None, 0)
        plane = np.asarray(image.array)
        _check_finite(plane, name)
        return Image2D(grey_to_rgb(window_to_uint8(plane, percentile_window(plane, name)).T), name, place)
    if image.ndim != 3:
        raise InvalidImageError(f"'{name}' has {image.ndim} dimensions {image.shape}; expected a 3D scalar volume")
    if slice_index is None:
        raise InvalidImageError(
            f"'{name}' is a 3D volume of size {image.shape}: a 2D model needs one slice (--slice K --axis i|j|k)"
        )
    axis_number = AXES.index(axis)
    count = image.shape[axis_number]
    if not 0 <= slice_index < count:
        raise InvalidImageError(
            f"slice {slice_index} is outside '{name}': axis {axis} has {count} slices (0 to {count - 1})"
        )
    validate_volume(image)
    volume = np.asarray(image.array)
    plane = np.take(volume, slice_index, axis=axis_number)
    picture = window_to_uint8(plane, percentile_window(volume, name)).T  # rows = second plane axis
    return Image2D(grey_to_rgb(picture), name, VolumeSlice(image.geometry, axis_number, slice_index))


def _check_finite(array: np.ndarray, name: str) -> None:
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
    return _unit_to_uint8(np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0))


def _unit_to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.rint(np.nan_to_num(unit) * 255.0).astype(np.uint8)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """(H, W) -> contiguous (H, W, 3), the grey value in every channel."""
    return np.ascontiguousarray(np.repeat(np.asarray(grey)[:, :, None], 3, axis=2))


# --------------------------------------------------------------------------- writing


def check_mask_path(image: Image2D, path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, an output the mask of ``image`` cannot be written to."""
    target = Path(path).expanduser()
    suffix = image_suffix(target)
    if suffix not in image.mask_suffixes:
        kind = "a 2D image" if image.volume_slice is None else "a slice of a volume"
        raise ImageWriteError(
            f"cannot write '{target}': the mask of {kind} is written as {' or '.join(image.mask_suffixes)}"
        )
    if target.is_dir():
        raise ImageWriteError(f"cannot write '{target}': it is a folder")
    return target


def write_mask_2d(mask: np.ndarray, image: Image2D, path: str | os.PathLike) -> Path:
    """Write an (H, W) mask of ``image``: PNG for pictures, the whole source grid for slices."""
    target = check_mask_path(image, path)
    mask = np.asarray(mask)
    if mask.shape != image.size:
        raise InvalidImageError(f"mask shape {mask.shape} does not match the image size {image.size}")
    if image.volume_slice is not None:
        grid = image.volume_slice
        return write_mask(grid.grid_mask(mask != 0), grid.geometry, target)
    return write_png_mask(mask, target)


def write_png_mask(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a binary mask as an 8-bit PNG (0 / 255) atomically: temp file, then rename."""
    from PIL import Image as PILImage

    target = Path(path).expanduser()
    pixels = np.where(np.asarray(mask) != 0, MASK_ON, 0).astype(np.uint8)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = f"cannot create folder '{target.parent}' ({exc.strerror})"
        raise ImageWriteError(f"cannot write '{target}': {reason}") from None
    try:
        with atomic_path(target, ".png") as temporary:
            PILImage.fromarray(pixels).save(temporary, format="PNG")
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{target}': {exc.strerror or exc}") from None
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
