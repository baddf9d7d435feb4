"""SAM-UNet's input/output conventions (the registry's ``preprocessing`` entry).

They are SAM's ``ResizeLongestSide`` conventions at 256 (PIL antialiased bilinear resize of
the RGB image, SAM's mean/std, bottom/right zero pad; logits > 0; mask prompt = previous
logits), with one difference: the official code scales prompt coordinates with
``apply_coords_torch`` on float32 tensors, not SAM's float64 NumPy transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sammed.errors import PromptError
from sammed.models.sam2d.pipeline import LongestSidePipeline, PreparedImage

Size2 = tuple[int, int]


def scale_coords_float32(coords, original_size: Size2, new_size: Size2) -> torch.Tensor:
    """(..., 2) (x, y) -> the resized frame, as float32 ``x * float32(new_w / old_w)`` (official)."""
    old_h, old_w = original_size
    new_h, new_w = new_size
    scaled = torch.as_tensor(np.asarray(coords)).clone().to(torch.float)
    if scaled.ndim == 0 or scaled.shape[-1] != 2:
        raise PromptError(f"points need (x, y) pairs, got an array of shape {tuple(scaled.shape)}")
    scaled[..., 0] = scaled[..., 0] * (new_w / old_w)
    scaled[..., 1] = scaled[..., 1] * (new_h / old_h)
    return scaled


def scale_boxes_float32(boxes, original_size: Size2, new_size: Size2) -> torch.Tensor:
    """(B, 4) x0, y0, x1, y1 boxes -> the resized frame (official ``apply_boxes_torch``)."""
    boxes = np.asarray(boxes)
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise PromptError(f"boxes need 4 numbers (x0, y0, x1, y1) each, got an array of shape {boxes.shape}")
    corners = torch.as_tensor(boxes).reshape(-1, 2, 2)
    return scale_coords_float32(corners, original_size, new_size).reshape(-1, 4)


@dataclass(frozen=True)
class SamUNetPipeline(LongestSidePipeline):
    """``LongestSidePipeline`` at 256 with float32 prompt scaling; one mask, no IoU."""

    model_size: int = 256

    def describe(self) -> str:
        return (
            f"{self.channel_order} uint8, long side resized to {self.model_size} (PIL bilinear, antialiased), "
            f"normalised with mean {self.pixel_mean} / std {self.pixel_std} (float32, fed to both the ViT and "
            f"the ResNet), zero-padded bottom/right to {self.model_size}x{self.model_size}; prompts scaled in "
            f"float32; one mask per prompt (no IoU, no multimask); masks = logit > {self.mask_threshold}; "
            f"mask prompt = previous {self.low_res_size}x{self.low_res_size} logits (never used in training)"
        )

    def coords_to_input(self, coords: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        return scale_coords_float32(coords, prepared.original_size, prepared.input_size).numpy()

    def boxes_to_input(self, boxes: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        shape = np.asarray(boxes).shape
        return scale_boxes_float32(boxes, prepared.original_size, prepared.input_size).numpy().reshape(shape)
