"""Prompted segmentation of one 2D image: ``SamPredictor`` / ``SammedPredictor`` semantics.

``Predictor2D(model)`` encodes an image once (:meth:`set_image`) and then answers any number
of prompt sets (:meth:`predict`) with the prompt encoder and mask decoder only. Everything
that differs between families (resize, normalisation, channel order, which multimask outputs
are kept, binarisation, what a mask prompt is) comes from a *pipeline* object, by default the
registry entry's ``preprocessing`` (:mod:`sammed.models.sam2d.pipeline`). A new family plugs in
with its own pipeline plus a model exposing ``encode_image(x)`` and
``predict_low_res(features, point_coords, point_labels, mask_input, boxes, multimask_output, image_pe)``.

Frames: prompts given to :meth:`predict` are in original-image pixels, (x, y) = (column, row);
:meth:`predict_torch` takes them already in the model input frame.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from sammed.errors import PromptError
from sammed.models.registry import spec_of


class Pipeline(Protocol):
    """What :class:`Predictor2D` needs from a family (see ``sammed.models.sam2d.pipeline``)."""

    low_res_size: int

    def prepare_image(self, image: np.ndarray, image_format: str = "RGB") -> Any: ...
    def coords_to_input(self, coords: np.ndarray, prepared: Any) -> np.ndarray: ...
    def boxes_to_input(self, boxes: np.ndarray, prepared: Any) -> np.ndarray: ...
    def logits_to_original(self, low_res: torch.Tensor, prepared: Any) -> torch.Tensor: ...
    def select(self, low_res: torch.Tensor, iou: torch.Tensor, multimask_output: bool) -> tuple: ...
    def binarize(self, logits: torch.Tensor) -> torch.Tensor: ...
    def mask_prompt_from(self, low_res: torch.Tensor) -> torch.Tensor: ...


def pipeline_of(model: nn.Module) -> Pipeline:
    """The pipeline of the registry entry the model was built from (``spec_of(model)``)."""
    spec = spec_of(model)
    pipeline = spec.preprocessing if spec is not None else None
    if pipeline is None or not hasattr(pipeline, "prepare_image"):
        raise ValueError("model has no 2D pipeline: build it with sammed.models.build_model or pass pipeline=")
    return pipeline


class Predictor2D:
    """Stateful wrapper around a stateless 2D model: set an image, then predict many times."""

    def __init__(self, model: nn.Module, pipeline: Pipeline | None = None) -> None:
        self.model: Any = model  # a 2D PyTorch model or an ONNX backend: used through its methods only
        self.pipeline = pipeline if pipeline is not None else pipeline_of(model)
        self.reset_image()

    def reset_image(self) -> None:
        self.features: Any = None
        self.prepared: Any = None
        self.dense_pe: torch.Tensor | None = None

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    @property
    def device(self) -> torch.device:
        """Where prompts go: the model's ``device`` if it declares one (ONNX), else its weights'."""
        device = getattr(self.model, "device", None)
        return device if isinstance(device, torch.device) else next(self.model.parameters()).device

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an (H, W, 3) uint8 image (or (H, W) grey) given in ``image_format`` channel order."""
        prepared = self.pipeline.prepare_image(image, image_format)
        with torch.inference_mode():
            features = self.model.encode_image(prepared.input.to(self.device))
            # Prompt-independent: computed once per image instead of at every prompt.
            prompt_encoder = getattr(self.model, "prompt_encoder", None)
            dense_pe = prompt_encoder.get_dense_pe() if prompt_encoder is not None else None
        self.prepared, self.features, self.dense_pe = prepared, features, dense_pe

    def get_image_embedding(self) -> Any:
        self._require_image()
        return self.features

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment with prompts in original-image pixels.

        Args:
            point_coords: (N, 2) clicks, (x, y) pixels; with ``point_labels`` (N,) 1 = fg, 0 = bg.
            box: (4,) x0, y0, x1, y1 pixels, or (B, 4) for B boxes sharing the clicks (and the
                mask unless one per box is given); a (B, 4) box gives batched outputs.
            mask_input: (1, s, s) mask prompt (s = ``pipeline.low_res_size``), shared, or
                (B, 1, s, s) one per box; see :meth:`mask_prompt_from`.
            multimask_output: ask for the three ambiguity-aware masks (the family decides
                whether all three or the best one is returned).
            return_logits: return logits instead of binary masks.

        Returns:
            masks (C, H, W) bool (float32 logits with ``return_logits``), scores (C,) raw IoU
            predictions and low-res logits (C, s, s); with B boxes every array gains a leading B.
        """
        self._require_image()
        coords, labels = self._points_to_input(point_coords, point_labels)
        boxes = self._boxes_to_input(box)
        batch = 1 if boxes is None else boxes.shape[0]
        masks_in = self._mask_to_tensor(mask_input, batch)
        if coords is not None and labels is not None and batch > 1:
            coords, labels = coords.expand(batch, -1, -1), labels.expand(batch, -1)
        masks, scores, low_res = self.predict_torch(coords, labels, boxes, masks_in, multimask_output, return_logits)
        masks_np, scores_np, low_res_np = (t.cpu().numpy() for t in (masks, scores, low_res))
        if box is not None and np.ndim(box) == 2:  # batched boxes keep their leading axis
            return masks_np, scores_np, low_res_np
        return masks_np[0], scores_np[0], low_res_np[0]

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts already in the model input frame: points (B, N, 2), labels (B, N),
        boxes (B, 4), mask_input (B or 1, 1, s, s). Returns (B, C, H, W) masks, (B, C) IoU
        predictions and (B, C, s, s) low-res logits."""
        self._require_image()
        with torch.inference_mode():
            low_res, iou = self.model.predict_low_res(
                self.features,
                point_coords,
                point_labels,
                mask_input,
                boxes=boxes,
                multimask_output=multimask_output,
                image_pe=self.dense_pe,
            )
            low_res, iou = self.pipeline.select(low_res, iou, multimask_output)
            logits = self.pipeline.logits_to_original(low_res, self.prepared)
            masks = logits if return_logits else self.pipeline.binarize(logits)
        return masks, iou, low_res

    def mask_prompt_from(self, low_res_logits: np.ndarray) -> np.ndarray:
        """Previous low-res logits (C, s, s) -> the next call's ``mask_input`` for this family
        (logits for SAM, sigmoid probabilities for SAM-Med2D)."""
        tensor = torch.as_tensor(np.asarray(low_res_logits, dtype=np.float32))
        return self.pipeline.mask_prompt_from(tensor).numpy()

    # --- input checks (one-line PromptErrors) ---------------------------------------------

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("call set_image() before predicting")

    def _points_to_input(self, point_coords, point_labels) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if point_coords is None and point_labels is None:
            return None, None
        if point_coords is None or point_labels is None:
            raise PromptError("point_coords and point_labels must be given together")
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels)
        if coords.ndim != 2 or coords.shape[1] != 2 or not np.all(np.isfinite(coords)):
            raise PromptError(f"point_coords must be finite (N, 2) (x, y) pixels, got shape {coords.shape}")
        if labels.shape != (coords.shape[0],):
            raise PromptError(f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(f"point_labels must be 1 (foreground) or 0 (background), got {np.unique(labels)}")
        coords_in = self.pipeline.coords_to_input(coords, self.prepared)
        device = self.device
        coords_t = torch.as_tensor(coords_in, dtype=torch.float, device=device)[None]
        labels_t = torch.as_tensor(labels, dtype=torch.int, device=device)[None]
        return coords_t, labels_t

    def _boxes_to_input(self, box) -> torch.Tensor | None:
        if box is None:
            return None
        boxes = np.asarray(box, dtype=np.float64)
        if boxes.shape == (4,):
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] < 1 or not np.all(np.isfinite(boxes)):
            raise PromptError(f"box must be finite x0, y0, x1, y1 pixels, shape (4,) or (B, 4), got {np.shape(box)}")
        boxes_in = self.pipeline.boxes_to_input(boxes, self.prepared)
        return torch.as_tensor(boxes_in, dtype=torch.float, device=self.device)

    def _mask_to_tensor(self, mask_input, batch: int) -> torch.Tensor | None:
        if mask_input is None:
            return None
        side = self.pipeline.low_res_size
        mask = np.asarray(mask_input, dtype=np.float32)
        if mask.shape == (1, side, side):
            mask = mask[None]
        if mask.shape not in ((1, 1, side, side), (batch, 1, side, side)):
            raise PromptError(
                f"mask_input must have shape (1, {side}, {side}) or ({batch}, 1, {side}, {side}), got {mask.shape}"
            )
        return torch.as_tensor(mask, device=self.device)
