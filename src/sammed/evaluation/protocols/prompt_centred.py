"""Shared machinery of the protocols that drive the user-facing :class:`~sammed.inference.Session`.

The session places the model window around the prompts (never around the ground truth), keeps the
clicks and the previous logits per object, and maps results back to the file's grid: these
protocols measure what a user of ``sammed segment`` or the server actually gets. Each class is one
object of one session per case, so windows at the same place share their image embedding.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
from torch import nn

from sammed.errors import PromptError
from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.protocols.base import (
    CaseResult,
    EvalSettings,
    Target,
    preview_from_volume,
    read_case_volumes,
    select_targets,
)
from sammed.inference import Session


class SessionCase:
    """One case opened in a session: GT per target, object ids, prompts with timing."""

    def __init__(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> None:
        image, label = read_case_volumes(case)
        self.case = case
        self.image = image
        self.gt_map = label.array
        self.spacing = label.spacing
        present = [int(v) for v in np.unique(self.gt_map) if v != 0]
        self.targets = select_targets(present, case.label_names, settings.classes)
        self.session = Session(model, image, device=settings.device)
        self.object_ids = {t.key: index + 1 for index, t in enumerate(self.targets)}

    def gt(self, target: Target) -> np.ndarray:
        return self.gt_map == target.key

    def mask(self, target: Target) -> np.ndarray:
        return self.session.mask(self.object_ids[target.key])

    def merged(self) -> np.ndarray:
        """Label map in class values; later classes overwrite earlier ones."""
        ids = self.session.label_map()
        lookup = np.zeros(len(self.targets) + 1, dtype=np.int64)
        for t in self.targets:
            lookup[self.object_ids[t.key]] = t.key
        return lookup[ids]

    def prompt(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, str]:
        """Run one session call; a prompt the session refuses is recorded, not fatal."""
        start = time.perf_counter()
        try:
            call(*args, **kwargs)
        except PromptError as exc:
            return time.perf_counter() - start, f"prompt refused: {exc}"
        return time.perf_counter() - start, ""

    def add_point(self, target: Target, point: Sequence[int], positive: bool) -> tuple[float, str]:
        return self.prompt(self.session.add_point, tuple(point), positive=positive,
                           object_id=self.object_ids[target.key], space="voxel")

    def add_box(self, target: Target, corner_a: Sequence[int], corner_b: Sequence[int]) -> tuple[float, str]:
        return self.prompt(self.session.add_box, tuple(corner_a), tuple(corner_b),
                           object_id=self.object_ids[target.key], space="voxel")

    def add_previews(self, result: CaseResult, prediction: Optional[np.ndarray] = None) -> None:
        """Montage cuts of the final state (the merged map when ``prediction`` is given)."""
        for t in self.targets:
            pred = self.mask(t) if prediction is None else prediction == t.key
            result.previews[str(t.key)] = preview_from_volume(self.image.array, self.gt(t), pred,
                                                              self.image.geometry.direction)


def click_prompt(positive: bool) -> str:
    return "click+" if positive else "click-"
