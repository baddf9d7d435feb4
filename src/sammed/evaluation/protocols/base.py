"""What every evaluation protocol shares: settings, targets, result rows and previews.

A protocol turns one case (image + ground truth) into rows, one per class x track x interaction.
A *track* is one independent prompt sequence: most protocols have one, SAM-Med2D has ``box`` and
``points``. Rows are plain dicts with the columns of :data:`ROW_COLUMNS` (plus a protocol's
``extra_columns``), so they go to CSV and JSON unchanged.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
from torch import nn

from sammed.errors import SammedError
from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.metrics import mask_metrics
from sammed.io import Image, read_image, validate_volume
from sammed.io.validation import validate_label_map

__all__ = [
    "ROW_COLUMNS",
    "TIMING_COLUMNS",
    "EvalSettings",
    "Target",
    "Preview",
    "CaseResult",
    "Protocol",
    "select_targets",
    "make_row",
    "read_case_volumes",
    "require_label",
    "preview_from_volume",
]

ROW_COLUMNS = (
    "case",
    "class",
    "class_name",
    "track",
    "interaction",
    "prompt",
    "coords",
    "dice",
    "iou",
    "nsd",
    "hd95",
    "gt_voxels",
    "pred_voxels",
    "time_s",
    "case_time_s",
    "note",
)
# Columns that measure the machine, not the model: they differ between identical runs.
TIMING_COLUMNS = ("time_s", "case_time_s")


@dataclass(frozen=True)
class EvalSettings:
    """Run-wide choices. ``interactions`` is the protocol's number of clicks (``--clicks``)."""

    interactions: int
    seed: int
    nsd_tolerance_mm: float
    classes: Optional[tuple[str, ...]] = None  # values or names to keep; None = all
    device: str = "cpu"


@dataclass(frozen=True)
class Target:
    """One structure to segment: the ``class`` column value and its readable name."""

    key: Any  # label value (int) for label maps, mask key (str) for per-object masks
    name: str


@dataclass
class Preview:
    """A 2D cut through a target for the montage: image, GT and final prediction."""

    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray


@dataclass
class CaseResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    previews: dict[str, Preview] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Protocol(ABC):
    """A named evaluation protocol; subclasses document exactly what they reproduce."""

    name: ClassVar[str]
    dims: ClassVar[int]
    default_tolerance_mm: ClassVar[float] = 1.0
    extra_columns: ClassVar[tuple[str, ...]] = ()
    # Frame of the ``coords`` column, stated in the JSON report.
    coords_frame: ClassVar[str] = "voxel index (i, j, k) of the image file"

    @abstractmethod
    def run_case(self, model: nn.Module, case: EvalCase, settings: EvalSettings) -> CaseResult:
        """Segment every selected class of ``case`` and return its rows (timing included)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return ROW_COLUMNS + self.extra_columns

    def requires(self) -> None:  # noqa: B027  (a hook: most protocols need nothing extra)
        """Raise a one-line error if an optional dependency of the protocol is missing."""


def _matches(requested: str, key: Any, name: str) -> bool:
    return requested == str(key) or requested.lower() == name.lower()


def select_targets(
    present: Sequence[Any], names: Mapping[Any, str], requested: Optional[Sequence[str]]
) -> list[Target]:
    """The classes of a case to evaluate, in ``present`` order, filtered by value or name."""
    targets = [Target(key, names.get(key, str(key))) for key in present]
    if requested is None:
        return targets
    return [t for t in targets if any(_matches(r, t.key, t.name) for r in requested)]


def _coords_text(coords: Optional[Sequence[Any]]) -> str:
    return "" if coords is None else " ".join(str(int(round(float(v)))) for v in coords)


def make_row(
    case_id: str,
    target: Target,
    track: str,
    interaction: int,
    prompt: str,
    coords: Optional[Sequence[Any]],
    metrics: Mapping[str, Any],
    time_s: float,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One result row; ``case_time_s`` is filled in by the runner once the case is done."""
    row = {
        "case": case_id,
        "class": target.key,
        "class_name": target.name,
        "track": track,
        "interaction": interaction,
        "prompt": prompt,
        "coords": _coords_text(coords),
        **{k: metrics[k] for k in ("dice", "iou", "nsd", "hd95", "gt_voxels", "pred_voxels")},
        "time_s": float(time_s),
        "case_time_s": math.nan,
        "note": note,
    }
    row.update(extra)
    return row


def require_label(case: EvalCase, protocol: str) -> Path:
    """The case's label map, or a one-line error (2D mask lists have none)."""
    if case.label is None:
        raise SammedError(f"case {case.case_id}: protocol {protocol} needs a label map")
    return case.label


def read_case_volumes(case: EvalCase) -> tuple[Image, Image]:
    """Image and label map of a 3D case; they must share one voxel grid.

    The label may also be a DICOM-SEG or a Slicer .seg.nrrd (read onto the image's grid).
    """
    from sammed.io.masks import is_segmentation_file, read_mask

    label_path = require_label(case, "3D")
    image = read_image(case.image)
    if is_segmentation_file(label_path):
        label = Image(read_mask(label_path, image), image.geometry, source=str(label_path))
    else:
        label = read_image(label_path)
    if image.ndim != 3 or label.ndim != 3:
        raise SammedError(f"case {case.case_id}: image and label must be 3D volumes")
    if not image.geometry.same_grid(label.geometry, atol=1e-3):
        raise SammedError(f"case {case.case_id}: image and label are not on the same voxel grid")
    validate_volume(image)
    validate_label_map(label)
    return image, label


def preview_from_volume(
    image: np.ndarray, gt: np.ndarray, pred: np.ndarray, direction_lps: Optional[np.ndarray] = None
) -> Preview:
    """The slice along the third axis through the GT's median voxel (it always holds GT).

    Cuts are stored with rows = j and columns = i; given the grid's LPS direction, axes running
    towards the patient's right or anterior are flipped so the cut reads like a radiological
    axial view (anterior up, patient's right on the left).
    """
    ks = np.nonzero(gt)[2]
    k = int(np.sort(ks)[len(ks) // 2]) if len(ks) else gt.shape[2] // 2

    def cut(volume: np.ndarray, dtype) -> np.ndarray:
        plane = np.asarray(volume[:, :, k], dtype=dtype)
        if direction_lps is not None:
            for axis in (0, 1):
                if direction_lps[axis, axis] < 0:
                    plane = np.flip(plane, axis=axis)
        return np.ascontiguousarray(plane.T)

    return Preview(image=cut(image, np.float32), gt=cut(gt, bool), pred=cut(pred, bool))


def metrics_row(
    case_id: str,
    target: Target,
    track: str,
    interaction: int,
    prompt: str,
    coords: Optional[Sequence[Any]],
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    settings: EvalSettings,
    time_s: float,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """Compute the metrics of ``pred`` against ``gt`` and wrap them as a row."""
    metrics = mask_metrics(pred, gt, spacing, settings.nsd_tolerance_mm)
    return make_row(case_id, target, track, interaction, prompt, coords, metrics, time_s, note, **extra)
