"""``clicks-N``: N simulated clicks through the prompt-centred pipeline users run.

The clicks are the official SAM-Med3D ones (uniform error voxel, positive iff missed; the first
is a uniform GT voxel), drawn from one RNG stream per case over the classes in sorted order, so
the only difference to ``sam-med3d-official`` is where the model window goes: around the clicks
(no ground truth needed) instead of around the GT bounding box. Each class is scored on its own
object mask on the file's grid, with the label's spacing. ``coords`` are voxel indices (i, j, k)
of the image file; ``time_s`` is the session call (window sampling, encoder when the window is
new, decoder, paste-back).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.protocols.base import CaseResult, EvalSettings, Protocol, metrics_row
from sammed.evaluation.protocols.prompt_centred import SessionCase, click_prompt
from sammed.evaluation.simulators import official_click

TRACK = "clicks"


class ClicksProtocol(Protocol):
    """N official-style simulated clicks fed to a :class:`~sammed.inference.Session`."""

    name = "clicks-N"
    dims = 3
    default_tolerance_mm = 1.0

    def run_case(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> CaseResult:
        opened = SessionCase(model, case, settings)
        rng = np.random.RandomState(settings.seed)
        result = CaseResult()
        for target in opened.targets:
            gt = opened.gt(target)
            for k in range(1, settings.interactions + 1):
                current = opened.mask(target)
                click = official_click(current, gt, rng)
                seconds, note = opened.add_point(target, click.point, click.positive)
                result.rows.append(
                    metrics_row(case.case_id, target, TRACK, k, click_prompt(click.positive), click.point,
                                opened.mask(target), gt, opened.spacing, settings, seconds, note)
                )
        opened.add_previews(result)
        return result
