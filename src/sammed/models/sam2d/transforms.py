"""Exact pre- and post-processing of the 2D families, as pure functions.

Two input conventions exist, and each is reproduced bit for bit because the released weights
were trained with it:

* **SAM** (``ResizeLongestSide``): the uint8 image is resized with PIL's antialiased bilinear
  filter so its long side equals the model size, normalised with the pixel mean/std in float32
  and zero-padded at the bottom/right to a square. Prompt coordinates are scaled by the two
  (slightly different, because of rounding) per-axis resize factors.
* **SAM-Med2D** (direct resize): the image is normalised first, in float32, then resized
  *without* keeping the aspect ratio by nearest-neighbour sampling
  ``out[r, c] = in[floor(r * H / S), floor(c * W / S)]``. Prompts scale per axis.

Arrays: images are (H, W, 3) uint8 in the caller's channel order; model inputs are
(1, 3, S, S) float32 tensors; points are (..., 2) as (x, y) = (column, row) in pixels; boxes
are (..., 4) as x0, y0, x1, y1; sizes are (height, width).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from sammed.errors import InvalidImageError

Size2 = tuple[int, int]

CHANNEL_ORDERS = ("RGB", "BGR")


def check_image(image: np.ndarray) -> np.ndarray:
    """Accept an (H, W, 3) uint8 array, or an (H, W) grey one (copied into 3 channels)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"a 2D model needs an H x W x 3 (or H x W grey) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"a 2D model needs 8-bit pixel values (uint8), got {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise InvalidImageError(f"image is empty: shape {image.shape}")
    return image


def to_channel_order(image: np.ndarray, image_format: str, model_format: str) -> np.ndarray:
    """Reverse the channel axis when the caller's order differs from the model's."""
    for name in (image_format, model_format):
        if name not in CHANNEL_ORDERS:
            raise InvalidImageError(f"image_format must be one of {', '.join(CHANNEL_ORDERS)}, got {name!r}")
    return image[..., ::-1] if image_format != model_format else image


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(x - mean) / std in float32 (the official predictors' arithmetic), (H, W, 3) -> float32."""
    mean32 = np.asarray(mean, dtype=np.float32)
    std32 = np.asarray(std, dtype=np.float32)
    return (image.astype(np.float32) - mean32) / std32


def to_batch_tensor(image_hwc: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> contiguous (1, C, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image_hwc.transpose(2, 0, 1)))[None]


# --- SAM: ResizeLongestSide -------------------------------------------------------------------


def longest_side_shape(original_size: Size2, target_length: int) -> Size2:
    """(h', w') with the long side scaled to ``target_length``, each rounded half up."""
    height, width = original_size
    scale = target_length * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, target_length: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h', w', 3) with PIL's antialiased bilinear filter.

    This is what torchvision's ``resize`` does to a PIL image, which the official
    ``ResizeLongestSide.apply_image`` uses; OpenCV's bilinear (no antialiasing) differs.
    """
    new_h, new_w = longest_side_shape(image.shape[:2], target_length)
    return np.asarray(PILImage.fromarray(image).resize((new_w, new_h), PILImage.BILINEAR))


def pad_bottom_right(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (B, C, h, w) tensor at the bottom/right to (B, C, size, size)."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, size - width, 0, size - height))


def prepare_longest_side(
    image: np.ndarray, target_length: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, Size2]:
    """SAM's encoder input: resize, normalise, pad -> ((1, 3, S, S) float32, resized (h', w'))."""
    resized = resize_longest_side(image, target_length)
    x = to_batch_tensor(normalize(resized, mean, std))
    return pad_bottom_right(x, target_length), tuple(resized.shape[:2])


# --- SAM-Med2D: direct resize ------------------------------------------------------------------


def nearest_indices(source: int, target: int) -> np.ndarray:
    """floor(i * source / target) for i < target, in exact integer arithmetic."""
    return (np.arange(target, dtype=np.int64) * source) // target


def resize_nearest(x: np.ndarray, size: Size2) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W, ...) array to ``size``, aspect ratio not kept.

    Identical to OpenCV ``INTER_NEAREST`` / albumentations ``Resize`` / torch ``nearest``.
    """
    rows = nearest_indices(x.shape[0], size[0])
    cols = nearest_indices(x.shape[1], size[1])
    return x[rows][:, cols]


def prepare_direct_resize(
    image: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """SAM-Med2D predictor input: normalise in float32, then nearest resize -> (1, 3, S, S).

    Computed in the other order, with the same numbers: a nearest resize only selects pixels and
    the normalisation is per pixel, so selecting first normalises S*S pixels instead of H*W.
    """
    return to_batch_tensor(normalize(resize_nearest(image, (size, size)), mean, std))


def prepare_dataset_input(
    image: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """SAM-Med2D's train/test-loader input (``train_transforms``), for evaluation replays.

    Normalises in float64 (Python-list mean/std). When *both* sides are smaller than ``size``
    the image is zero-padded centred (in normalised space, i.e. mean colour); otherwise it is
    nearest-resized. Returns the float32 tensor and the (top, left) pad offset, or None when
    it was resized.
    """
    x = (image.astype(np.float64) - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
    height, width = x.shape[:2]
    if height < size and width < size:
        top, left = (size - height) // 2, (size - width) // 2
        padded = np.zeros((size, size, x.shape[2]), dtype=np.float64)
        padded[top : top + height, left : left + width] = x
        return to_batch_tensor(padded.astype(np.float32)), (top, left)
    return to_batch_tensor(resize_nearest(x, (size, size)).astype(np.float32)), None


# --- prompts -----------------------------------------------------------------------------------


def scale_coords(coords: np.ndarray, original_size: Size2, new_size: Size2) -> np.ndarray:
    """(x, y) points from the original frame to a (new_h, new_w) frame, per axis, in float64."""
    old_h, old_w = original_size
    new_h, new_w = new_size
    scaled = np.array(coords, dtype=np.float64, copy=True)
    scaled[..., 0] = scaled[..., 0] * (new_w / old_w)
    scaled[..., 1] = scaled[..., 1] * (new_h / old_h)
    return scaled


def scale_boxes(boxes: np.ndarray, original_size: Size2, new_size: Size2) -> np.ndarray:
    """x0, y0, x1, y1 boxes (..., 4) to the new frame (both corners scaled like points)."""
    boxes = np.asarray(boxes)
    corners = scale_coords(boxes.reshape(-1, 2, 2), original_size, new_size)
    return corners.reshape(boxes.shape)


# --- masks -------------------------------------------------------------------------------------


def postprocess_masks(
    low_res: torch.Tensor, model_size: int, input_size: Size2, original_size: Size2
) -> torch.Tensor:
    """Low-res logits (B, C, h, w) -> logits at the original image size (B, C, H, W).

    Bilinear (align_corners=False) up to the model input size, crop away the padding (a no-op
    for SAM-Med2D, whose input size is the full square), bilinear to the original size.
    """
    masks = F.interpolate(low_res, (model_size, model_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)


def postprocess_dataset_masks(
    low_res: torch.Tensor, model_size: int, pad_offset: tuple[int, int] | None, original_size: Size2
) -> torch.Tensor:
    """Inverse of :func:`prepare_dataset_input` for logits (SAM-Med2D ``test.postprocess_masks``)."""
    masks = F.interpolate(low_res, (model_size, model_size), mode="bilinear", align_corners=False)
    if pad_offset is not None:
        top, left = pad_offset
        return masks[..., top : top + original_size[0], left : left + original_size[1]]
    return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
