"""Training: the SAM-Med3D recipe (single process or ``torchrun``), data cache, checkpoints.

Entry points: :func:`train` (Python) and ``sammed train`` (command line).
"""

from sammed.training.config import TrainConfig, TrainingConfigError
from sammed.training.dataset import TrainingDataError, WindowDataset, build_cache, find_nnunet_cases
from sammed.training.trainer import TrainSummary, train

__all__ = [
    "TrainConfig",
    "TrainSummary",
    "TrainingConfigError",
    "TrainingDataError",
    "WindowDataset",
    "build_cache",
    "find_nnunet_cases",
    "train",
]
