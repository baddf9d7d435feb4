"""The official SAM-UNet inference path (``SAM_UNET.infer``) and its end-to-end use on an image.

:func:`infer` takes the official batched input (resized, un-normalised images and prompts in
the resized frame) and returns the official outputs; :func:`decode_item` is its per-image half,
for callers that cache the encoder features. :func:`prepare_item` is the official data-side
pre-processing (``sam_unet/dataset.py``): an RGB uint8 image and prompts in its own pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from sammed.errors import PromptError
from sammed.models.sam2d import transforms
from sammed.models.sam2d.sam_unet.model import SamUNet, SamUNetFeatures
from sammed.models.sam2d.sam_unet.pipeline import SamUNetPipeline, scale_boxes_float32, scale_coords_float32

PIPELINE = SamUNetPipeline()


def preprocess(image: torch.Tensor, pipeline: SamUNetPipeline = PIPELINE) -> torch.Tensor:
    """Official ``preprocess``: (3, h', w') 0-255 float -> (x - mean) / std, zero pad to 256x256."""
    mean = torch.tensor(pipeline.pixel_mean, dtype=image.dtype).view(-1, 1, 1)
    std = torch.tensor(pipeline.pixel_std, dtype=image.dtype).view(-1, 1, 1)
    return transforms.pad_bottom_right((image - mean) / std, pipeline.model_size)


def image_features(features: SamUNetFeatures, index: int) -> SamUNetFeatures:
    """One image's slice (batch 1) of a batch's encoder features."""
    return SamUNetFeatures(*(part[index : index + 1] for part in features))


@torch.no_grad()
def decode_item(model: SamUNet, features: SamUNetFeatures, item: Mapping, return_logits: bool = False) -> dict:
    """The per-image half of :func:`infer`: prompts of one ``item`` on its cached (batch 1) features."""
    low_res, _ = model.predict_low_res(
        features,
        point_coords=item.get("point_coords"),
        point_labels=item.get("point_labels"),
        mask_input=item.get("mask_inputs"),
        boxes=item.get("boxes"),
    )
    input_size = tuple(item["image"].shape[-2:])
    logits = transforms.postprocess_masks(low_res, PIPELINE.model_size, input_size, tuple(item["original_size"]))
    output = {"masks": logits > model.mask_threshold, "low_res_logits": low_res}
    if return_logits:
        output["logits"] = logits
    return output


@torch.no_grad()
def infer(model: SamUNet, batched_input: Sequence[Mapping], return_logits: bool = False) -> list[dict]:
    """Official ``SAM_UNET.infer`` (the eval-mode forward).

    Each item: ``image`` (3, h', w') float, resized but not normalised; ``original_size`` (H, W);
    optional ``boxes`` (Bp, 4), ``point_coords`` (Bp, N, 2) + ``point_labels`` (Bp, N), all in
    the resized frame; optional ``mask_inputs`` (Bp, 1, 64, 64) logits. Images are stacked, so
    every padded image is 256x256. Returns per item ``masks`` (Bp, 1, H, W) bool and
    ``low_res_logits`` (Bp, 1, 64, 64), plus ``logits`` (Bp, 1, H, W) with ``return_logits``.
    """
    if model.training:
        raise ValueError("SAM-UNet inference needs eval mode (BatchNorm running statistics): call model.eval()")
    images = torch.stack([preprocess(item["image"]) for item in batched_input], dim=0)
    features = model.encode_image(images)
    return [
        decode_item(model, image_features(features, index), item, return_logits)
        for index, item in enumerate(batched_input)
    ]


def prepare_item(
    image: np.ndarray,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    mask_input: torch.Tensor | None = None,
) -> dict:
    """Official data-side pre-processing: an RGB uint8 (H, W, 3) image and prompts in its pixels
    -> one :func:`infer` item.

    ``point_coords`` (Bp, N, 2) or (N, 2) as (x, y), ``point_labels`` alike (1 = foreground,
    0 = background), ``boxes`` (Bp, 4) or (4,) as x0, y0, x1, y1; ``mask_input`` (Bp, 1, 64, 64)
    logits. The image is resized with PIL (antialiased bilinear) to long side 256 and the
    prompts are scaled in float32, as ``ResizeLongestSide(256)`` does in the official dataset.
    """
    image = transforms.check_image(image)
    original_size = tuple(image.shape[:2])
    input_size = transforms.longest_side_shape(original_size, PIPELINE.model_size)
    resized = transforms.resize_longest_side(image, PIPELINE.model_size)
    item: dict = {"image": torch.from_numpy(np.array(resized)).permute(2, 0, 1).float(), "original_size": original_size}
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_coords need point_labels (1 = foreground, 0 = background)")
        coords = scale_coords_float32(point_coords, original_size, input_size)
        labels = torch.as_tensor(np.asarray(point_labels))
        if coords.ndim == 2:
            coords, labels = coords[None], labels.reshape(1, -1)
        if labels.shape != coords.shape[:2]:
            raise PromptError(f"{coords.shape[1]} point(s) but point_labels has shape {tuple(labels.shape)}")
        item["point_coords"], item["point_labels"] = coords, labels
    if boxes is not None:
        item["boxes"] = scale_boxes_float32(boxes, original_size, input_size)
    if mask_input is not None:
        item["mask_inputs"] = mask_input
    return item


def infer_image(model: SamUNet, image: np.ndarray, return_logits: bool = False, **prompts) -> dict:
    """Official end-to-end path on one image: :func:`prepare_item` then :func:`infer`."""
    return infer(model, [prepare_item(image, **prompts)], return_logits=return_logits)[0]
