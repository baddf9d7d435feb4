"""2D training data in the SA-Med2D JSON layout (spec: SAM-Med2D §4.1-4.2).

One item per image: the image goes through the model family's own inference pipeline
(``spec.preprocessing.prepare_image``: same resize and normalisation as at inference), and
``mask_num`` of its masks are drawn with replacement, each resized like the image (nearest) and
given a noisy box (largest connected component, both corners shifted by the same random offset)
and one random foreground point, as upstream's ``TrainingDataset``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset

from sammed.evaluation.datasets import EvalCase, load_dataset
from sammed.models.sam2d.pipeline import DirectResizePipeline, Pipeline2D
from sammed.models.sam2d.transforms import longest_side_shape, resize_nearest
from sammed.training.dataset import TrainingDataError, WorkerRng

MAX_BOX_NOISE = 5


def load_med2d_cases(json_path: str | Path) -> list[EvalCase]:
    """Images and their masks from ``image2label_train.json`` (paths resolved as ``sammed eval`` does)."""
    dataset = load_dataset(json_path)
    if dataset.dims != 2 or not dataset.cases or dataset.cases[0].masks is None:
        raise TrainingDataError(f"{json_path} is not a SA-Med2D list of 2D images with masks")
    return list(dataset.cases)


def pipeline_for(preprocessing: Pipeline2D, model_size: int) -> Pipeline2D:
    """The family pipeline at the model's input size (tests train small models)."""
    return preprocessing if preprocessing.model_size == model_size else replace(preprocessing, model_size=model_size)


def mask_to_input(mask: np.ndarray, pipeline: Pipeline2D) -> np.ndarray:
    """A binary mask in the model input frame: resized (nearest) like the image, zero padding."""
    size = pipeline.model_size
    if isinstance(pipeline, DirectResizePipeline):
        return resize_nearest(mask, (size, size))
    h, w = longest_side_shape(mask.shape[:2], size)
    out = np.zeros((size, size), dtype=mask.dtype)
    out[:h, :w] = resize_nearest(mask, (h, w))
    return out


def noisy_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(x0, y0, x1, y1) of the largest component, exclusive max, translated by up to 5 pixels."""
    from skimage.measure import label, regionprops

    regions = regionprops(label(mask, connectivity=2))
    if not regions:
        return np.array([0, 0, mask.shape[1], mask.shape[0]], dtype=np.float32)
    y0, x0, y1, x1 = max(regions, key=lambda r: r.area).bbox
    margin = min(MAX_BOX_NOISE, int(0.1 * min(x1 - x0, y1 - y0) * 5))
    dx, dy = (rng.integers(-margin, margin, size=2) if margin > 0 else (0, 0))
    return np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy], dtype=np.float32)


def random_point(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A uniform foreground pixel as (x, y), label 1; a background pixel, label 0, if empty."""
    ys, xs = np.nonzero(mask)
    if len(ys):
        i = rng.integers(len(ys))
        return np.array([xs[i], ys[i]], dtype=np.float32), 1.0
    ys, xs = np.nonzero(mask == 0)
    i = rng.integers(len(ys))
    return np.array([xs[i], ys[i]], dtype=np.float32), 0.0


class Med2DDataset(Dataset):
    def __init__(self, cases: list[EvalCase], pipeline: Pipeline2D, mask_num: int = 5) -> None:
        self.cases, self.pipeline, self.mask_num = cases, pipeline, mask_num
        self._generator = WorkerRng()

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        rng = self._generator()
        case = self.cases[index]
        image = np.asarray(PILImage.open(case.image).convert("RGB"))
        prepared = self.pipeline.prepare_image(image, "RGB")
        chosen = [case.masks[i][1] for i in rng.integers(len(case.masks), size=self.mask_num)]
        labels, boxes, points, point_labels = [], [], [], []
        for path in chosen:
            mask = mask_to_input((np.asarray(PILImage.open(path).convert("L")) > 0).astype(np.uint8), self.pipeline)
            labels.append(mask)
            boxes.append(noisy_box(mask, rng))
            point, positive = random_point(mask, rng)
            points.append(point[None])
            point_labels.append([positive])
        return {
            "image": prepared.input[0],
            "label": torch.from_numpy(np.stack(labels)[:, None].astype(np.float32)),
            "boxes": torch.from_numpy(np.stack(boxes)),
            "point_coords": torch.from_numpy(np.stack(points)),
            "point_labels": torch.tensor(point_labels, dtype=torch.float32),
        }
