"""``sam-med3d-official``: what the current official SAM-Med3D inference reports (spec §8, §10).

Per case, exactly ``validate_paired_img_gt`` followed by ``compute_metrics``, through
:mod:`sammed.evaluation.official_pipeline` (TorchIO 0.20.9, GT-centred 128^3 ROI at 1.5 mm, uniform
error-voxel clicks that accumulate, seed reset per case, classes in sorted order, predictions
merged into one label map where later classes overwrite earlier ones). Each class is then scored
on that merged map (``pred == class``) against ``gt == class`` with the GT's spacing and the
official NSD tolerance of 1 mm.

Row ``interaction = k`` is what the official pipeline writes when run with ``num_clicks = k``.
Upstream draws every click of a case from one RNG stream, so the clicks of the second class depend
on how many clicks the first one used; the k-click runs are therefore replayed side by side, one
RNG per k, each class encoded once (only the decoder reruns). With ``--classes`` the seed chain
runs over the selected classes only, as if the GT held no others.

``coords`` is the newest click in ROI voxels ``(A0, A1, A2)`` (canonical RAS after resampling),
the frame upstream's clicks live in. ``time_s`` of interaction 1 includes preprocessing and the
image encoder; later interactions time the k-click decoder replay and the paste-back.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from sammed.errors import InvalidImageError
from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.official_pipeline import (
    PINNED_TORCHIO,
    OfficialCase,
    TorchioVersionError,
    load_official_subject,
    postprocess_official,
    preprocess_subject,
    sam_model_infer_official,
)
from sammed.evaluation.protocols.base import (
    CaseResult,
    EvalSettings,
    Protocol,
    Target,
    metrics_row,
    preview_from_volume,
    require_label,
    select_targets,
)
from sammed.geometry import ijk_from_zyx

TRACK = "clicks"


def require_pinned_torchio() -> None:
    """Fail early, before any case runs, when TorchIO is missing or not the pinned version."""
    try:
        import torchio
    except ImportError:
        raise TorchioVersionError(
            f"this protocol needs torchio=={PINNED_TORCHIO}: pip install 'sammed[official]'"
        ) from None
    if torchio.__version__ != PINNED_TORCHIO:
        raise TorchioVersionError(
            f"this protocol is pinned to torchio=={PINNED_TORCHIO} (found {torchio.__version__}); "
            "other versions move the ROI"
        )


class _FixedEmbedding(nn.Module):
    """Stands in for the image encoder once the ROI is encoded: returns that embedding."""

    def __init__(self, embedding: torch.Tensor) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - the ROI is already encoded
        return self.embedding


class _EncodedOnce(nn.Module):
    """A SAM-Med3D view whose encoder output is cached, for replaying clicks on one ROI."""

    def __init__(self, model: nn.Module, embedding: torch.Tensor) -> None:
        super().__init__()
        self.image_encoder = _FixedEmbedding(embedding)
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder


@dataclasses.dataclass
class _Prepared:
    target: Target
    case: OfficialCase  # ROI tensors dropped, geometry kept for paste-back
    model: _EncodedOnce
    roi_shape: torch.Tensor  # a stride-0 tensor with the ROI's shape (the encoder is cached)
    seconds: float


class OfficialProtocol(Protocol):
    """The official SAM-Med3D inference protocol, scored as ``compute_metrics`` does."""

    name = "sam-med3d-official"
    dims = 3
    default_tolerance_mm = 1.0
    coords_frame = "ROI voxel index (A0, A1, A2) of the 128^3 canonical ROI at 1.5 mm"

    def requires(self) -> None:
        require_pinned_torchio()

    def run_case(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> CaseResult:
        import SimpleITK as sitk

        gt_image = sitk.ReadImage(str(require_label(case, self.name)))
        gt = ijk_from_zyx(sitk.GetArrayFromImage(gt_image))
        spacing = gt_image.GetSpacing()
        direction = np.array(gt_image.GetDirection()).reshape(3, 3)
        present = [int(v) for v in np.unique(gt) if v != 0]
        targets = select_targets(present, case.label_names, settings.classes)
        result = CaseResult()
        if not targets:
            return result
        subject = load_official_subject(case.image, case.label)
        device = next(model.parameters()).device
        prepared = [self._prepare(model, subject, t, device, result) for t in targets]
        image = subject.image.data[0].numpy()
        for k in range(1, settings.interactions + 1):
            canvas, clicks, seconds = self._replay(prepared, k, settings.seed, gt.shape)
            for p in prepared:
                value = p.target.key
                click = clicks[value]
                prompt = "" if click is None else ("click+" if click.label else "click-")
                note = "" if click is not None else "empty ROI ground truth: no click, empty prediction"
                result.rows.append(
                    metrics_row(case.case_id, p.target, TRACK, k, prompt, None if click is None else click.point,
                                canvas == value, gt == value, spacing, settings, seconds[value], note)
                )
                if k == settings.interactions:
                    result.previews[str(value)] = preview_from_volume(image, gt == value, canvas == value,
                                                                       direction)
        return result

    def _prepare(self, model: nn.Module, subject: Any, target: Target, device, result: CaseResult) -> _Prepared:
        """Official preprocessing and one encoder pass for one class."""
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case = preprocess_subject(subject, target.key)
        result.notes.extend(f"class {target.key}: {w.message}" for w in caught)
        model.eval()
        with torch.no_grad():
            embedding = model.image_encoder(case.roi_image.to(device))
        roi_shape = torch.zeros(1).expand(*case.roi_image.shape)
        light = dataclasses.replace(case, roi_image=roi_shape, roi_raw=torch.empty(0), canonical_subject=None)
        return _Prepared(target, light, _EncodedOnce(model, embedding), roi_shape, time.perf_counter() - start)

    def _replay(
        self, prepared: list[_Prepared], clicks: int, seed: int, shape: tuple[int, ...]
    ) -> tuple[np.ndarray, dict[Any, Any], dict[Any, float]]:
        """The official per-case loop with ``num_clicks = clicks``: merged canvas, (i, j, k) view."""
        rng = np.random.RandomState(seed)
        canvas = np.zeros(shape[::-1], dtype=np.int32)  # (z, y, x) like the pasted predictions
        newest: dict[Any, Any] = {}
        seconds: dict[Any, float] = {}
        for p in prepared:
            start = time.perf_counter()
            pred_roi, fed = sam_model_infer_official(p.model, p.roi_shape, p.case.roi_label, num_clicks=clicks, rng=rng)
            pasted = postprocess_official(pred_roi, p.case)
            if pasted.shape != canvas.shape:
                raise InvalidImageError(
                    f"image grid {pasted.shape[::-1]} differs from the label grid {shape}; "
                    "the official protocol needs them identical"
                )
            canvas[pasted == 1] = p.target.key
            newest[p.target.key] = fed[-1] if fed else None
            seconds[p.target.key] = time.perf_counter() - start + (p.seconds if clicks == 1 else 0.0)
        return ijk_from_zyx(canvas), newest, seconds
