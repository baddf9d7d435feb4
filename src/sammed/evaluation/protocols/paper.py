"""``sam-med3d-paper``: the paper-era validation that produced the published numbers (spec §8.1).

Reconstructed from the deleted ``validation.py`` as the spec describes it, per class:

1. offline preparation (``prepare_data_from_nnUNet.py``): binarise the label, TorchIO ``Resample``
   to 1.5 mm (image linear, label nearest, dtype kept) *without* reorientation; classes whose GT
   volume is under 10 mm^3 are skipped;
2. loader: ``Clamp(-1000, 1000)`` for CT (nnU-Net channel "CT", or a ``ct_`` dataset folder as
   upstream tests the path), ``CropOrPad`` a 128^3 ROI around the GT, ``ZNormalization`` over
   voxels > 0;
3. clicks: rounds 1-2 from the eroded core of the larger error region (RITM), later rounds a
   uniform error voxel, both from the upsampled *logits* > 0.5; only the newest click is fed,
   with the previous low-res logits as mask prompt;
4. scores on the 128^3 ROI at 1.5 mm. The paper reports, per case, the best Dice over the rounds:
   column ``dice_best`` is that running maximum.

One RNG stream per case (reset with the seed), classes in sorted order. ``coords`` are ROI voxel
indices in the file's voxel order. When a round finds no error voxel (prediction equals the GT)
no click is made and the prediction is kept.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.official_pipeline import load_official_subject
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
from sammed.evaluation.protocols.official import require_pinned_torchio
from sammed.evaluation.simulators import paper_click

TRACK = "clicks"
ROI_SIZE = 128
ROI_SPACING_MM = (1.5, 1.5, 1.5)
MIN_VOLUME_MM3 = 10.0
CT_CLAMP = (-1000.0, 1000.0)


def _direction_lps(affine_ras: np.ndarray) -> np.ndarray:
    """LPS direction cosines of a RAS affine (TorchIO's), for orienting the montage cut."""
    linear = np.asarray(affine_ras, dtype=np.float64)[:3, :3]
    return np.diag([-1.0, -1.0, 1.0]) @ (linear / np.linalg.norm(linear, axis=0))


def _positive(x: torch.Tensor) -> torch.Tensor:
    return x > 0


class PaperProtocol(Protocol):
    """SAM-Med3D paper-era validation: GT-centred ROI, RITM then random clicks, ROI Dice."""

    name = "sam-med3d-paper"
    dims = 3
    default_tolerance_mm = 1.0
    extra_columns = ("dice_best",)
    coords_frame = "ROI voxel index (A0, A1, A2) of the 128^3 ROI at 1.5 mm, file voxel order"

    def requires(self) -> None:
        require_pinned_torchio()

    def run_case(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> CaseResult:
        subject = load_official_subject(case.image, require_label(case, self.name))
        label = subject.label.data
        present = [int(v) for v in torch.unique(label).tolist() if v != 0]
        voxel_mm3 = float(np.prod(subject.label.spacing))
        rng = np.random.RandomState(settings.seed)
        result = CaseResult()
        clamp = case.modality.upper() == "CT" or "/ct_" in str(case.image).lower()
        for target in select_targets(present, case.label_names, settings.classes):
            volume = float((label == target.key).sum()) * voxel_mm3
            if volume < MIN_VOLUME_MM3:
                result.notes.append(f"class {target.key}: {volume:.1f} mm^3 < {MIN_VOLUME_MM3} mm^3, skipped")
                continue
            start = time.perf_counter()
            raw, gt = self._roi(subject, target.key, clamp)
            if not gt.any():
                result.notes.append(f"class {target.key}: empty after resampling, skipped")
                continue
            self._clicks(model, raw, gt, target, case.case_id, settings, rng, result, time.perf_counter() - start,
                         _direction_lps(subject.image.affine))
        return result

    def _roi(self, subject, value: int, clamp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw ROI ``(1, S, S, S)`` (clamped for CT) and its binary GT, as the old loader built them."""
        import torchio as tio

        one = copy.deepcopy(subject)
        one.label.set_data((one.label.data == value).to(one.label.data.dtype))
        one = tio.Resample(target=ROI_SPACING_MM, copy=False)(one)
        if clamp:
            one = tio.Clamp(*CT_CLAMP, copy=False)(one)
        roi = tio.CropOrPad(mask_name="label", target_shape=(ROI_SIZE,) * 3, copy=False)(one)
        return roi.image.data, roi.label.data > 0

    def _clicks(
        self,
        model: nn.Module,
        raw: torch.Tensor,
        gt: torch.Tensor,
        target: Target,
        case_id: str,
        settings: EvalSettings,
        rng: np.random.RandomState,
        result: CaseResult,
        prep_seconds: float,
        direction: np.ndarray,
    ) -> None:
        import torchio as tio

        device = next(model.parameters()).device
        start = time.perf_counter()
        image = tio.ZNormalization(masking_method=_positive)(raw.clone()).unsqueeze(0).to(device)
        gt5 = gt[None].to(device)
        model.eval()
        with torch.no_grad():
            embedding = model.image_encoder(image)
            low_res = torch.zeros(1, 1, *(s // 4 for s in image.shape[-3:]), device=device)
            logits = torch.zeros(image.shape, device=device)
            best = -1.0
            for round_number in range(1, settings.interactions + 1):
                click = paper_click(logits, gt5, round_number, rng)
                if click is not None:
                    # Only the newest click, with the previous low-res logits as mask prompt.
                    coords = torch.tensor([[click.point]], dtype=torch.float32, device=device)
                    labels = torch.tensor([[click.label]], dtype=torch.float32, device=device)
                    low_res, _ = model.predict_low_res(embedding, coords, labels, low_res)
                    logits = model.upscale_logits(low_res)
                pred = (torch.sigmoid(logits) > 0.5)[0, 0].cpu().numpy()
                seconds = time.perf_counter() - start + (prep_seconds if round_number == 1 else 0.0)
                truth = gt[0].numpy()
                prompt = "" if click is None else ("click+" if click.positive else "click-")
                row = metrics_row(case_id, target, TRACK, round_number, prompt, None if click is None else click.point,
                                  pred, truth, ROI_SPACING_MM, settings, seconds,
                                  "" if click is not None else "no error left: no click")
                best = max(best, row["dice"]) if not np.isnan(row["dice"]) else best
                row["dice_best"] = best
                result.rows.append(row)
                start = time.perf_counter()
        result.previews[str(target.key)] = preview_from_volume(raw[0].numpy(), gt[0].numpy(), pred, direction)
