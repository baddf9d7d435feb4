"""Evaluation harness: the published interactive protocols on any registered model and dataset.

>>> from sammed.evaluation import dice, iou, nsd, hd95
>>> from sammed.evaluation import load_dataset, resolve_protocol, EvalSettings, run_evaluation

* metrics: :mod:`sammed.evaluation.metrics` (DeepMind surface definitions, empty-mask conventions);
* click and box simulators: :mod:`sammed.evaluation.simulators`;
* protocols: :mod:`sammed.evaluation.protocols` (``sam-med3d-official``, ``sam-med3d-paper``,
  ``sam-med2d``, ``cvpr25``, ``clicks-N``);
* datasets: :mod:`sammed.evaluation.datasets` (nnU-Net raw, SAM-Med3D layout, SA-Med2D lists, a pair);
* running, sharding over ``torchrun`` processes and resuming: :mod:`sammed.evaluation.runner`;
* report files: :mod:`sammed.evaluation.report` and :mod:`sammed.evaluation.plots`.
"""

from sammed.evaluation.datasets import DatasetError, EvalCase, EvalDataset, load_dataset
from sammed.evaluation.metrics import dice, hd95, iou, mask_metrics, nsd
from sammed.evaluation.protocols import (
    PROTOCOLS,
    ROW_COLUMNS,
    TIMING_COLUMNS,
    EvalSettings,
    Protocol,
    get_protocol,
    resolve_protocol,
)
from sammed.evaluation.runner import EvalReport, run_evaluation

__all__ = [
    "DatasetError",
    "EvalCase",
    "EvalDataset",
    "EvalReport",
    "EvalSettings",
    "PROTOCOLS",
    "Protocol",
    "ROW_COLUMNS",
    "TIMING_COLUMNS",
    "dice",
    "get_protocol",
    "hd95",
    "iou",
    "load_dataset",
    "mask_metrics",
    "nsd",
    "resolve_protocol",
    "run_evaluation",
]
