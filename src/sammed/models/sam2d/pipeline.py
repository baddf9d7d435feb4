"""Per-family input/output conventions of the 2D predictors (the registry's ``preprocessing``).

A pipeline object is the strategy :class:`sammed.inference.predictor2d.Predictor2D` delegates
to: how an image becomes the model input, how prompts move into the model frame, how low-res
logits go back to the image, which masks a multimask call keeps, how logits are binarised and
what a mask prompt is. SAM and SAM-Med2D differ in every one of these; SAM-UNet reuses
:class:`LongestSidePipeline` at 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sammed.models.sam2d import transforms
from sammed.models.sam2d.model import PIXEL_MEAN, PIXEL_STD

Size2 = tuple[int, int]


@dataclass(frozen=True)
class PreparedImage:
    """A model input and the geometry needed to map prompts and masks back.

    ``input`` is (1, 3, S, S) float32; ``original_size`` is the caller's (H, W);
    ``input_size`` is the (h, w) region of ``input`` that holds the image (the rest is padding).
    """

    input: torch.Tensor
    original_size: Size2
    input_size: Size2


@dataclass(frozen=True)
class Pipeline2D:
    """Shared conventions; subclasses choose the resize and the mask semantics.

    Fields: ``model_size`` is the square input side S; ``pixel_mean``/``pixel_std`` are applied
    to 0-255 values in the model's channel order; ``channel_order`` is the order the predictor
    treats as native (an image given in the other order is reversed); ``mask_threshold`` is
    the logit threshold; ``keep_best_of_multimask`` makes a multimask call return only the mask
    with the highest predicted IoU.
    """

    model_size: int = 1024
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    channel_order: str = "RGB"
    mask_threshold: float = 0.0
    keep_best_of_multimask: bool = False

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-res logits and of a mask prompt."""
        return self.model_size // 4

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _resize_and_normalize(self, image: np.ndarray) -> tuple[torch.Tensor, Size2]:
        raise NotImplementedError

    def prepare_image(self, image: np.ndarray, image_format: str = "RGB") -> PreparedImage:
        """(H, W, 3) uint8 (or (H, W) grey) in ``image_format`` order -> model input."""
        image = transforms.check_image(image)
        image = transforms.to_channel_order(image, image_format, self.channel_order)
        tensor, input_size = self._resize_and_normalize(image)
        return PreparedImage(tensor, tuple(image.shape[:2]), input_size)

    def coords_to_input(self, coords: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        """(..., 2) (x, y) pixels of the original image -> model input frame (float64)."""
        return transforms.scale_coords(coords, prepared.original_size, prepared.input_size)

    def boxes_to_input(self, boxes: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        """(..., 4) x0, y0, x1, y1 boxes of the original image -> model input frame."""
        return transforms.scale_boxes(boxes, prepared.original_size, prepared.input_size)

    def logits_to_original(self, low_res: torch.Tensor, prepared: PreparedImage) -> torch.Tensor:
        """(B, C, s, s) low-res logits -> (B, C, H, W) logits on the original image."""
        return transforms.postprocess_masks(low_res, self.model_size, prepared.input_size, prepared.original_size)

    def select(
        self, low_res: torch.Tensor, iou: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep every decoder output, or only the best-IoU one of a multimask call (per prompt)."""
        if not (multimask_output and self.keep_best_of_multimask):
            return low_res, iou
        best_iou, best = iou.max(dim=1, keepdim=True)
        index = best[:, :, None, None].expand(-1, -1, *low_res.shape[-2:])
        return low_res.gather(1, index), best_iou

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return logits > self.mask_threshold

    def mask_prompt_from(self, low_res: torch.Tensor) -> torch.Tensor:
        """Turn previous low-res logits into this family's mask-prompt input."""
        return low_res


@dataclass(frozen=True)
class LongestSidePipeline(Pipeline2D):
    """SAM: ``ResizeLongestSide`` (PIL antialiased bilinear), normalise, bottom/right zero pad.

    All three multimask outputs are returned; masks are ``logit > 0``; mask prompts are the
    previous low-res *logits*.
    """

    def describe(self) -> str:
        return (
            f"{self.channel_order} uint8, long side resized to {self.model_size} (PIL bilinear, antialiased), "
            f"normalised with mean {self.pixel_mean} / std {self.pixel_std}, zero-padded bottom/right to "
            f"{self.model_size}x{self.model_size}; masks = logit > {self.mask_threshold}; "
            f"mask prompt = previous {self.low_res_size}x{self.low_res_size} logits"
        )

    def _resize_and_normalize(self, image: np.ndarray) -> tuple[torch.Tensor, Size2]:
        return transforms.prepare_longest_side(image, self.model_size, self.pixel_mean, self.pixel_std)


@dataclass(frozen=True)
class DirectResizePipeline(Pipeline2D):
    """SAM-Med2D: normalise (float32), then nearest resize to S x S without keeping the aspect.

    The official predictor treats its input as "RGB" and does not flip it, while training read
    images with OpenCV, i.e. in **BGR** order (``training_channel_order``): for colour images
    pass a BGR array with ``image_format="RGB"`` (or an RGB array with ``"BGR"``) to match
    training; grey images are unaffected. A multimask call keeps the best-IoU mask only, masks
    are ``sigmoid(logit) > 0.5`` and mask prompts are *probabilities* (sigmoid of the logits).
    """

    model_size: int = 256
    keep_best_of_multimask: bool = True
    training_channel_order: str = "BGR"

    def describe(self) -> str:
        return (
            f"uint8 3-channel image, normalised with mean {self.pixel_mean} / std {self.pixel_std} (float32), "
            f"nearest-resized to {self.model_size}x{self.model_size} (aspect not kept); trained on "
            f"{self.training_channel_order} arrays, the predictor does not reorder images given as "
            f"{self.channel_order}; multimask keeps the best-IoU mask; masks = sigmoid > 0.5; "
            f"mask prompt = sigmoid of previous {self.low_res_size}x{self.low_res_size} logits"
        )

    def _resize_and_normalize(self, image: np.ndarray) -> tuple[torch.Tensor, Size2]:
        tensor = transforms.prepare_direct_resize(image, self.model_size, self.pixel_mean, self.pixel_std)
        return tensor, (self.model_size, self.model_size)

    def binarize(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) > 0.5

    def mask_prompt_from(self, low_res: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(low_res)
