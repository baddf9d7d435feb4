"""Automatic mode for the 2D models: SAM's automatic mask generator over :class:`Predictor2D`.

SAM's method (``SamAutomaticMaskGenerator``): a regular grid of single-point prompts over the
image (and optionally over overlapping crops of it), each decoded in batches; masks are kept when
their predicted IoU and their *stability score* (how little the mask changes when the logit
threshold moves by +/-``stability_score_offset``) pass thresholds; masks touching a crop's inner
edge are dropped; duplicates are removed by box non-maximum suppression, first within each crop,
then across crops preferring masks from smaller crops.

Every 2D family works through its own pipeline: SAM keeps all three multimask outputs per point,
SAM-Med2D its best one, SAM-UNet its single output. SAM-UNet predicts no IoU (NaN), so for it the
predicted-IoU filter is skipped and masks are ranked by stability score instead.
Not included: SAM's small-region post-processing (``min_mask_region_area``, which needs OpenCV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product

import numpy as np
import torch

from sammed.errors import PromptError
from sammed.inference.predictor2d import Predictor2D


@dataclass
class MaskRecord:
    """One automatic mask, as SAM's generator reports it (boxes XYWH in pixels)."""

    segmentation: np.ndarray  # (H, W) bool
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height
    predicted_iou: float  # NaN for families without an IoU head
    stability_score: float
    point_coords: tuple[float, float]  # the prompt (x, y) that produced it
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1

    def to_json(self) -> dict:
        """Everything but the mask, JSON-ready (NaN becomes null)."""
        iou = None if math.isnan(self.predicted_iou) else round(self.predicted_iou, 4)
        return {
            "area": self.area,
            "bbox": list(self.bbox),
            "predicted_iou": iou,
            "stability_score": round(self.stability_score, 4),
            "point_coords": [round(float(c), 2) for c in self.point_coords],
            "crop_box": list(self.crop_box),
        }


@dataclass
class AutomaticMaskGenerator2D:
    """Segment everything in a 2D image with a promptable 2D model (SAM, SAM-Med2D, SAM-UNet).

    Defaults are SAM's (``SamAutomaticMaskGenerator``); ``generate(image)`` returns the kept
    masks as :class:`MaskRecord`, highest score first.
    """

    predictor: Predictor2D
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    image_format: str = "RGB"
    _timings: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise PromptError("points_per_side and points_per_batch must be at least 1")
        if self.crop_n_layers < 0 or self.crop_n_points_downscale_factor < 1:
            raise PromptError("crop_n_layers must be >= 0 and crop_n_points_downscale_factor >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PromptError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[MaskRecord]:
        """All kept masks of an (H, W, 3) uint8 image (or (H, W) grey) in ``image_format`` order."""
        height, width = image.shape[:2]
        crops, layers = crop_boxes((height, width), self.crop_n_layers, self.crop_overlap_ratio)
        records: list[MaskRecord] = []
        for crop, layer in zip(crops, layers):
            records += self._process_crop(image, crop, layer, (height, width))
        if len(crops) > 1 and records:  # duplicates across crops: prefer masks from smaller crops
            boxes = torch.tensor([_xyxy(r.bbox) for r in records], dtype=torch.float32)
            crop_area = torch.tensor([-float((c[2] - c[0]) * (c[3] - c[1])) for c in (r.crop_box for r in records)])
            keep = box_nms(boxes, crop_area, self.crop_nms_thresh)
            records = [records[i] for i in keep]
        return sorted(records, key=_score, reverse=True)

    def _process_crop(self, image, crop, layer, size) -> list[MaskRecord]:
        x0, y0, x1, y1 = crop
        self.predictor.set_image(np.ascontiguousarray(image[y0:y1, x0:x1]), image_format=self.image_format)
        per_side = max(1, self.points_per_side // (self.crop_n_points_downscale_factor**layer))
        points = point_grid(per_side) * np.array([x1 - x0, y1 - y0], dtype=np.float64)
        found: list[tuple] = []  # (mask in crop, iou, stability, point)
        for start in range(0, len(points), self.points_per_batch):
            found += self._process_batch(points[start : start + self.points_per_batch])
        if not found:
            return []
        boxes = torch.tensor([mask_box(m) for m, *_ in found], dtype=torch.float32)
        scores = torch.tensor([_rank(iou, stab) for _, iou, stab, _ in found])
        keep = box_nms(boxes, scores, self.box_nms_thresh)
        records = []
        for i in keep:
            mask, iou, stability, point = found[i]
            bx0, by0, bx1, by1 = (int(v) for v in boxes[i])
            if crop != (0, 0, size[1], size[0]) and near_crop_edge((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), crop, size):
                continue
            full = np.zeros(size, dtype=bool)
            full[y0:y1, x0:x1] = mask
            records.append(
                MaskRecord(
                    full, int(mask.sum()), (bx0 + x0, by0 + y0, bx1 - bx0, by1 - by0), iou, stability,
                    (float(point[0] + x0), float(point[1] + y0)), (int(x0), int(y0), int(x1), int(y1)),
                )
            )
        return records

    def _process_batch(self, points: np.ndarray) -> list[tuple]:
        predictor = self.predictor
        coords = predictor.pipeline.coords_to_input(points, predictor.prepared)
        coords_t = torch.as_tensor(coords, dtype=torch.float, device=predictor.device)[:, None, :]
        labels_t = torch.ones(coords_t.shape[:2], dtype=torch.int, device=predictor.device)
        logits, iou, _ = predictor.predict_torch(coords_t, labels_t, multimask_output=True, return_logits=True)
        logits, iou = logits.float().cpu(), iou.float().cpu()
        threshold = float(getattr(predictor.pipeline, "mask_threshold", 0.0))
        stability = stability_score(logits, threshold, self.stability_score_offset)
        masks = logits > threshold  # SAM-Med2D's sigmoid > 0.5 is the same as logit > 0
        found = []
        for b, c in product(range(logits.shape[0]), range(logits.shape[1])):
            score, stable = float(iou[b, c]), float(stability[b, c])
            if not math.isnan(score) and score < self.pred_iou_thresh:
                continue
            if stable < self.stability_score_thresh or not masks[b, c].any():
                continue
            found.append((masks[b, c].numpy(), score, stable, points[b]))
        return found


def point_grid(n: int) -> np.ndarray:
    """(n*n, 2) points at the centres of an n x n grid over the unit square, (x, y)."""
    offset = 1 / (2 * n)
    side = np.linspace(offset, 1 - offset, n)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[tuple], list[int]]:
    """SAM's crops: the whole image, then 2^(l+1) x 2^(l+1) overlapping crops per layer l."""
    height, width = size
    boxes: list[tuple] = [(0, 0, width, height)]
    layers = [0]
    short = min(height, width)
    for layer in range(n_layers):
        per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        for x0, y0 in product([int((crop_w - overlap) * i) for i in range(per_side)],
                              [int((crop_h - overlap) * i) for i in range(per_side)]):
            boxes.append((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)))
            layers.append(layer + 1)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks at threshold + offset and threshold - offset (1 = does not depend on it)."""
    high = (logits > threshold + offset).sum(dim=(-1, -2)).float()
    low = (logits > threshold - offset).sum(dim=(-1, -2)).float()
    return torch.where(low > 0, high / low.clamp(min=1), torch.zeros_like(low))


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of a non-empty mask, the last row and column included (SAM's convention)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression of (N, 4) x0, y0, x1, y1 boxes, best first."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    kept: list[int] = []
    for i in order:
        if kept:
            others = boxes[kept]
            w = (torch.minimum(others[:, 2], boxes[i, 2]) - torch.maximum(others[:, 0], boxes[i, 0])).clamp(min=0)
            h = (torch.minimum(others[:, 3], boxes[i, 3]) - torch.maximum(others[:, 1], boxes[i, 1])).clamp(min=0)
            overlap = w * h / (area[kept] + area[i] - w * h).clamp(min=1e-9)
            if bool((overlap > iou_threshold).any()):
                continue
        kept.append(i)
    return kept


def near_crop_edge(box, crop, size, atol: float = 20.0) -> bool:
    """True when a box touches an edge of the crop that is not an edge of the image."""
    height, width = size
    at_crop = np.isclose(np.array(box, dtype=float), np.array(crop, dtype=float), atol=atol, rtol=0)
    at_image = np.isclose(np.array(box, dtype=float), np.array([0, 0, width, height], dtype=float), atol=atol, rtol=0)
    return bool(np.any(at_crop & ~at_image))


def label_image(records: list[MaskRecord], size: tuple[int, int]) -> np.ndarray:
    """One label per mask (record i -> i + 1), larger masks painted first so small ones stay visible."""
    labels = np.zeros(size, dtype=np.uint8 if len(records) <= 255 else np.uint16)
    for index in sorted(range(len(records)), key=lambda i: -records[i].area):
        labels[records[index].segmentation] = index + 1
    return labels


def _xyxy(bbox) -> tuple[int, int, int, int]:
    x, y, w, h = bbox
    return x, y, x + w, y + h


def _rank(iou: float, stability: float) -> float:
    return stability if math.isnan(iou) else iou


def _score(record: MaskRecord) -> float:
    return _rank(record.predicted_iou, record.stability_score)
