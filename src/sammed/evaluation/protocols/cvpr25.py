"""``cvpr25``: the CVPR 2025 interactive 3D challenge protocol (``CVPR25_iter_eval.py``), locally.

Interaction 1 is a box per class (``get_boxes.py``: the 2D box of the GT on the slice of its
median voxel, jittered by ``randint(0, 6)`` voxels scaled to the slice size, with the GT's z
range); interactions 2..N+1 add one click per class at the centre (deepest distance-transform
voxel) of the largest 26-connected error component, positive for a miss, negative for a false
positive; a class with no error gets no click. As in the challenge, all classes advance together
and each is scored on the merged label map (later classes overwrite earlier ones), NSD at 2 mm.

The prompts go to the user-facing :class:`~sammed.inference.Session` (window around the prompts).
A model without box embeddings gets the box centre as a positive click, as the SAM-Med3D
challenge baseline does. The challenge's arrays are ``(z, y, x)``: here ``z`` is the file's third
voxel axis ``k``; ``coords`` are written as (i, j, k) (a box as its two corners).

Report-level metrics (summary): DSC_AUC and NSD_AUC are the trapezoid areas over the *click*
interactions only (x = 0..N-1, the challenge leaves the optional box out), DSC_Final and NSD_Final
the last interaction, and the time per interaction is the session's inference time. Per class
values are reported; the challenge's case-level numbers average the classes first and set NSD to 0
when that mean Dice is at most 0.2.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.protocols.base import CaseResult, EvalSettings, Protocol, metrics_row
from sammed.evaluation.protocols.prompt_centred import SessionCase, click_prompt
from sammed.evaluation.simulators import cvpr25_box, cvpr25_click
from sammed.geometry import zyx_from_ijk

TRACK = "box+clicks"


def _ijk(zyx) -> tuple[int, int, int]:
    return tuple(int(v) for v in reversed(zyx))  # type: ignore[return-value]


class Cvpr25Protocol(Protocol):
    """CVPR 2025 challenge: box, then N clicks at the centre of the largest error (default 5)."""

    name = "cvpr25"
    dims = 3
    default_tolerance_mm = 2.0

    def run_case(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> CaseResult:
        opened = SessionCase(model, case, settings)
        rng = np.random.RandomState(settings.seed)
        result = CaseResult()
        gts = {t.key: opened.gt(t) for t in opened.targets}
        step: dict = {}
        for target in opened.targets:
            box = cvpr25_box(zyx_from_ijk(gts[target.key]), rng)
            low, high = (_ijk(c) for c in box.corners_zyx())
            seconds, note = opened.add_box(target, low, high)
            step[target.key] = ("box", low + high, seconds, note)
        merged = opened.merged()
        self._score(opened, case, settings, merged, 1, step, result)
        for k in range(2, settings.interactions + 2):
            step = {}
            for target in opened.targets:
                click = cvpr25_click(zyx_from_ijk(merged == target.key), zyx_from_ijk(gts[target.key]))
                if click is None:
                    step[target.key] = ("", None, 0.0, "no error left: no click")
                    continue
                point = _ijk(click.point)
                seconds, note = opened.add_point(target, point, click.positive)
                step[target.key] = (click_prompt(click.positive), point, seconds, note)
            merged = opened.merged()
            self._score(opened, case, settings, merged, k, step, result)
        opened.add_previews(result, merged)
        return result

    def _score(self, opened: SessionCase, case: EvalCase, settings: EvalSettings, merged: np.ndarray,
               interaction: int, step: dict, result: CaseResult) -> None:
        for target in opened.targets:
            prompt, coords, seconds, note = step[target.key]
            result.rows.append(
                metrics_row(case.case_id, target, TRACK, interaction, prompt, coords, merged == target.key,
                            opened.gt(target), opened.spacing, settings, seconds, note)
            )
