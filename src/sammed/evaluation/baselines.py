"""Classical interactive baselines, driven by the same simulated clicks as the models.

What a user without a network (or without a GPU) would otherwise reach for:

* ``random-walker``: scikit-image's random walker (Grady 2006) in a box around the clicks.
  Positive clicks seed the object (3x3x3 voxels each), negative clicks and the box border seed
  the background. The box extends ``margin_mm`` beyond the clicks and is subsampled to at most
  ``max_side`` voxels per axis (the solver is slow on full-resolution boxes); the result is
  mapped back with nearest neighbour.
* ``region-growing``: SimpleITK's ``ConfidenceConnected`` from the positive clicks (mean +-
  ``multiplier`` std of a small neighbourhood, re-estimated ``iterations`` times); a negative click
  removes the region grown the same way from it, unless that region holds a positive click (then
  the two are indistinguishable to the method and the negative click is ignored).

Both expose the part of :class:`sammed.inference.Session` the click protocols use
(``add_point``/``mask``/``label_map``), and :class:`BaselineClicksProtocol` runs them through the
``clicks-N`` protocol of the evaluation harness, so the rows are directly comparable.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk

from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.protocols.base import CaseResult, EvalSettings, metrics_row, read_case_volumes, select_targets
from sammed.evaluation.protocols.clicks import TRACK, ClicksProtocol
from sammed.evaluation.protocols.prompt_centred import SessionCase, click_prompt
from sammed.evaluation.simulators import official_click
from sammed.io.image import Image
from sammed.io.readers import from_sitk, to_sitk
from sammed.prompts import Point

Click = tuple[tuple[int, int, int], bool]


class ClassicalSession:
    """Clicks per object -> a mask recomputed from all of them (no learned state)."""

    def __init__(self, image: Image, segment: Callable[[list[Click]], np.ndarray]) -> None:
        self.image = image
        self._segment = segment
        self._clicks: dict[int, list[Click]] = {}
        self._masks: dict[int, np.ndarray] = {}
        self.active_object = 1

    def add_point(self, position, positive: bool = True, object_id: int | None = None, space: str = "voxel",
                  convention: str = "RAS") -> np.ndarray:
        world = Point(tuple(position), positive, space, convention).to_world_lps(self.image.geometry)
        voxel = tuple(int(v) for v in np.rint(self.image.geometry.world_to_index(world, "LPS")))
        oid = object_id if object_id is not None else self.active_object
        self.active_object = oid
        self._clicks.setdefault(oid, []).append((voxel, bool(positive)))
        self._masks[oid] = self._segment(self._clicks[oid])
        return self._masks[oid]

    def mask(self, object_id: int | None = None) -> np.ndarray:
        oid = object_id if object_id is not None else self.active_object
        return self._masks.get(oid, np.zeros(self.image.shape, dtype=bool))

    def label_map(self) -> np.ndarray:
        labels = np.zeros(self.image.shape, dtype=np.uint16)
        for oid in sorted(self._masks):
            labels[self._masks[oid]] = oid
        return labels


@dataclass(frozen=True)
class RandomWalker:
    """scikit-image random walker in a subsampled box around the clicks."""

    margin_mm: float = 40.0
    max_side: int = 64
    beta: float = 130.0
    name: str = "random-walker"

    def eval(self) -> "RandomWalker":  # the harness calls model.eval()
        return self

    def open(self, image: Image) -> ClassicalSession:
        array = np.asarray(image.array, dtype=np.float32)
        spacing = np.asarray(image.spacing, dtype=np.float64)
        return ClassicalSession(image, lambda clicks: self._segment(array, spacing, clicks))

    def _segment(self, array: np.ndarray, spacing: np.ndarray, clicks: list[Click]) -> np.ndarray:
        from skimage.segmentation import random_walker

        full = np.zeros(array.shape, dtype=bool)
        positives = [c for c, positive in clicks if positive]
        if not positives:
            return full
        points = np.array([c for c, _ in clicks])
        margin = np.ceil(self.margin_mm / spacing).astype(int)
        low = np.maximum(points.min(axis=0) - margin, 0)
        high = np.minimum(points.max(axis=0) + margin + 1, array.shape)
        step = np.maximum(np.ceil((high - low) / self.max_side).astype(int), 1)
        box = tuple(slice(lo, hi, st) for lo, hi, st in zip(low, high, step))
        data = array[box]
        seeds = np.zeros(data.shape, dtype=np.int32)
        border = np.ones(data.shape, dtype=bool)
        border[tuple(slice(1, -1) if n > 2 else slice(0, 0) for n in data.shape)] = False
        seeds[border] = 2
        for voxel, positive in clicks:  # a 3x3x3 seed per click: a single voxel is almost never hit in 3D
            centre = np.clip((np.asarray(voxel) - low) // step, 0, np.array(data.shape) - 1)
            block = tuple(slice(max(c - 1, 0), c + 2) for c in centre)
            seeds[block] = 1 if positive else 2
        if data.std() == 0:
            return full
        normalised = (data - data.mean()) / data.std()
        with warnings.catch_warnings():  # "probability range outside [0, 1]": solver round-off only
            warnings.simplefilter("ignore", UserWarning)
            labels = random_walker(normalised, seeds, beta=self.beta, mode="cg_j", spacing=tuple(spacing * step))
        # Nearest-neighbour upsampling of the box result back onto every voxel of the box.
        fine = tuple(np.minimum((np.arange(lo, hi) - lo) // st, n - 1) for lo, hi, st, n in zip(low, high, step, data.shape))
        full[tuple(slice(lo, hi) for lo, hi in zip(low, high))] = (labels == 1)[np.ix_(*fine)]
        return full


@dataclass(frozen=True)
class RegionGrowing:
    """SimpleITK ``ConfidenceConnected`` from the positive clicks, minus regions grown from negatives."""

    multiplier: float = 2.5
    iterations: int = 4
    initial_radius: int = 1
    name: str = "region-growing"

    def eval(self) -> "RegionGrowing":
        return self

    def open(self, image: Image) -> ClassicalSession:
        source = sitk.Cast(to_sitk(image), sitk.sitkFloat32)
        return ClassicalSession(image, lambda clicks: self._segment(source, clicks))

    def _grow(self, source: sitk.Image, seeds: list[tuple[int, int, int]]) -> np.ndarray:
        region = sitk.ConfidenceConnected(source, seedList=[tuple(int(v) for v in s) for s in seeds],
                                          numberOfIterations=self.iterations, multiplier=self.multiplier,
                                          initialNeighborhoodRadius=self.initial_radius, replaceValue=1)
        return from_sitk(region).array > 0

    def _segment(self, source: sitk.Image, clicks: list[Click]) -> np.ndarray:
        positives = [c for c, positive in clicks if positive]
        negatives = [c for c, positive in clicks if not positive]
        if not positives:
            return np.zeros(source.GetSize(), dtype=bool)
        mask = self._grow(source, positives)
        for negative in negatives:
            excluded = self._grow(source, [negative])
            if not any(excluded[p] for p in positives):
                mask &= ~excluded
        return mask


BASELINES = {"random-walker": RandomWalker, "region-growing": RegionGrowing}


class _ClassicalCase(SessionCase):
    """A case opened with a classical method instead of a model session."""

    def __init__(self, method, case: EvalCase, settings: EvalSettings) -> None:  # noqa: D107 - see class
        image, label = read_case_volumes(case)
        self.case, self.image, self.gt_map, self.spacing = case, image, label.array, label.spacing
        present = [int(v) for v in np.unique(self.gt_map) if v != 0]
        self.targets = select_targets(present, case.label_names, settings.classes)
        self.session = method.open(image)
        self.object_ids = {t.key: index + 1 for index, t in enumerate(self.targets)}


class BaselineClicksProtocol(ClicksProtocol):
    """``clicks-N`` with a classical method in place of the model (pass the method as ``model``)."""

    def run_case(self, model, case: EvalCase, settings: EvalSettings) -> CaseResult:
        opened = _ClassicalCase(model, case, settings)
        rng = np.random.RandomState(settings.seed)
        result = CaseResult()
        for target in opened.targets:
            gt = opened.gt(target)
            for k in range(1, settings.interactions + 1):
                click = official_click(opened.mask(target), gt, rng)
                seconds, note = opened.add_point(target, click.point, click.positive)
                result.rows.append(metrics_row(case.case_id, target, TRACK, k, click_prompt(click.positive), click.point,
                                               opened.mask(target), gt, opened.spacing, settings, seconds, note))
        opened.add_previews(result)
        return result
