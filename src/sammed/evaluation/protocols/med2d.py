"""``sam-med2d``: the SAM-Med2D test protocol (``test.py``, spec §4.4): box, 1, 3 and 5 points.

Two tracks per object, through :class:`~sammed.inference.predictor2d.Predictor2D` (prompts in
original pixels, multimask output with the best-IoU mask kept, metrics at the original
resolution):

* ``box``: one prediction from the box of the largest 8-connected GT component (no jitter);
* ``points``: interaction 1 is a uniform foreground pixel; every further interaction adds one
  uniform pixel of the current error region (positive iff missed) to all earlier points, with the
  previous low-res output as mask prompt (the family's mask-prompt form: sigmoid for SAM-Med2D).
  The README's "1 / 3 / 5 pts" columns are interactions 1, 3 and 5 of this track
  (``--clicks`` sets how many, default 5).

Differences to ``test.py`` worth knowing: prompts are drawn on the original-resolution mask (the
predictor path) rather than on the 256-resized one, so boxes and points land on the same anatomy
without the resize rounding; a seed makes the points reproducible (upstream sets none). Images are
read as ``sammed segment`` reads 2D inputs (``read_image_2d``: RGB, grey replicated), masks with
their stored values. 2D files carry no spacing, so NSD and HD95 are in pixels (tolerance
``--nsd-tolerance`` pixels, default 1). ``coords`` are ``x y`` pixels (a box as ``x0 y0 x1 y1``,
max exclusive as upstream).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np
from torch import nn

from sammed.errors import SammedError
from sammed.evaluation.datasets import EvalCase, mask_class_name
from sammed.evaluation.protocols.base import (
    CaseResult,
    EvalSettings,
    Preview,
    Protocol,
    Target,
    metrics_row,
    select_targets,
)
from sammed.evaluation.simulators import med2d_box, med2d_first_point, med2d_next_point
from sammed.io.image2d import read_image_2d

PIXEL_SPACING = (1.0, 1.0)


def read_label_2d(path, what: str) -> np.ndarray:
    """A 2D mask or label map with its stored values, (H, W) (first channel of a colour file)."""
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError:
        raise SammedError(f"cannot read {what} '{path}' as a 2D image") from None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2:
        raise SammedError(f"{what} '{path}' is not a 2D image (shape {array.shape})")
    return array


class Med2DProtocol(Protocol):
    """SAM-Med2D's test protocol on 2D images: a box track and an iterative points track."""

    name = "sam-med2d"
    dims = 2
    default_tolerance_mm = 1.0
    coords_frame = "pixel x y of the original image (box: x0 y0 x1 y1, max exclusive)"

    def __init__(self, predictor_factory: Optional[Callable[[nn.Module], Any]] = None) -> None:
        self.predictor_factory = predictor_factory

    def _predictor(self, model: nn.Module) -> Any:
        if self.predictor_factory is not None:
            return self.predictor_factory(model)
        from sammed.inference.predictor2d import Predictor2D

        return Predictor2D(model)

    def _objects(
        self, case: EvalCase, shape: tuple[int, int], settings: EvalSettings
    ) -> list[tuple[Target, np.ndarray]]:
        """(target, GT mask) pairs: one per listed mask, or one per label value of a label map."""
        if case.masks:
            gts = {key: read_label_2d(path, "mask") > 0 for key, path in case.masks}
            names = {key: mask_class_name(key) for key in gts}
            targets = select_targets(list(gts), names, settings.classes)
            objects = [(t, gts[t.key]) for t in targets]
        else:
            labels = read_label_2d(case.label, "label")
            present = [int(v) for v in np.unique(labels) if v != 0]
            objects = [(t, labels == t.key) for t in select_targets(present, case.label_names, settings.classes)]
        for target, gt in objects:
            if gt.shape != shape:
                raise SammedError(f"case {case.case_id}: mask {target.key} is {gt.shape}, the image {shape}")
        return [(t, gt) for t, gt in objects if gt.any()]

    def run_case(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> CaseResult:
        image = read_image_2d(case.image).pixels
        predictor = self._predictor(model)
        start = time.perf_counter()
        predictor.set_image(image)
        encode_seconds = time.perf_counter() - start
        rng = np.random.RandomState(settings.seed)
        result = CaseResult()
        for target, gt in self._objects(case, image.shape[:2], settings):
            self._box_track(predictor, case, target, gt, settings, encode_seconds, result)
            pred = self._points_track(predictor, case, target, gt, settings, rng, result)
            result.previews[str(target.key)] = Preview(image=image[..., 0].astype(np.float32), gt=gt, pred=pred)
            encode_seconds = 0.0
        return result

    @staticmethod
    def _best(outputs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The best-IoU mask (H, W) and its low-res logits (1, s, s)."""
        masks, scores, low_res = outputs
        best = int(np.argmax(scores))
        return np.asarray(masks[best]) > 0, np.asarray(low_res[best : best + 1])

    def _box_track(self, predictor, case, target, gt, settings, encode_seconds, result) -> None:
        box = med2d_box(gt)
        start = time.perf_counter()
        pred, _ = self._best(predictor.predict(box=np.array(box, dtype=np.float64), multimask_output=True))
        seconds = time.perf_counter() - start + encode_seconds
        result.rows.append(metrics_row(case.case_id, target, "box", 1, "box", box, pred, gt, PIXEL_SPACING,
                                       settings, seconds))

    def _points_track(self, predictor, case, target, gt, settings, rng, result) -> np.ndarray:
        click = med2d_first_point(gt, rng)
        coords, labels = [click.point], [click.label]
        mask_input = None
        pred = np.zeros_like(gt)
        for k in range(1, settings.interactions + 1):
            if k > 1:
                click = med2d_next_point(pred, gt, rng)
                if click is None:
                    result.rows.append(metrics_row(case.case_id, target, "points", k, "", None, pred, gt,
                                                   PIXEL_SPACING, settings, 0.0, "no error left: no point"))
                    continue
                coords.append(click.point)
                labels.append(click.label)
            start = time.perf_counter()
            outputs = predictor.predict(point_coords=np.array(coords, dtype=np.float64), point_labels=np.array(labels),
                                        mask_input=mask_input, multimask_output=True)
            pred, low_res = self._best(outputs)
            mask_input = predictor.mask_prompt_from(low_res)
            seconds = time.perf_counter() - start
            result.rows.append(metrics_row(case.case_id, target, "points", k, "click+" if click.positive else "click-",
                                           click.point, pred, gt, PIXEL_SPACING, settings, seconds))
        return pred
