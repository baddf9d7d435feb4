"""Training hyper-parameters of the SAM-Med3D recipe, as one plain dataclass.

Defaults follow the official ``train.py`` (spec §11.2). Stage 2 of the two-stage procedure is
the same recipe started from a stage-1 (or the released) checkpoint with the fine-tuning
learning rate, which :meth:`TrainConfig.for_stage` sets. Everything is plain data so that it
can be stored inside a checkpoint that the safe loader (``weights_only``) reads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from sammed.errors import SammedError

GAMMA_DOMAINS = ("window", "foreground")  # what the gamma augmentation is applied over (``gamma_on``)
# Options a resumed run may change without changing what it trains: its length and its machinery.
RUN_LENGTH_FIELDS = frozenset({"epochs", "max_steps", "time_limit_minutes", "num_workers", "log_every",
                               "init_checkpoint", "extra"})


class TrainingConfigError(SammedError):
    """A training option is invalid (bad stage, negative steps, ...)."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``spacing_mm`` and the window size come from the model's registry entry."""

    model: str = "sam-med3d-turbo"
    epochs: int = 200
    max_steps: int | None = None  # optimizer steps; stops early when reached (smoke runs, budgets)
    time_limit_minutes: float | None = None  # wall-clock budget; stops (and saves) when exceeded
    batch_size: int = 2  # per process
    accumulation_steps: int = 20
    lr: float = 8e-4  # image encoder; prompt encoder and mask decoder get lr * decoder_lr_scale
    decoder_lr_scale: float = 0.1
    freeze_image_encoder: bool = False  # train only the prompt encoder and mask decoder (encoder features kept)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    milestones: tuple[int, ...] = (120, 180)  # MultiStepLR, stepped per epoch
    gamma: float = 0.1
    num_clicks: int = 11  # interaction rounds per sample
    mask_only_round_range: tuple[int, int] = (2, 9)  # one round drawn in [low, high) gets no click
    first_round_weight: float = 1.0  # loss weight of the one-click round (1: the official plain sum over rounds)
    multi_click: bool = True  # feed all clicks so far (as inference does); official default: newest only
    amp: bool = True  # bf16 autocast on CPU, fp16 + GradScaler on CUDA
    num_workers: int = 2
    min_label_voxels: int = 1000  # official: resample another item if label.sum() <= 1000
    classes: tuple[int, ...] | None = None  # label values to train on (None: all)
    exclude_cases: tuple[str, ...] = ()  # shell patterns of case ids left out (e.g. ``*__svfine``)
    max_shift_fraction: float = 0.25  # random window offset, as a fraction of the window size
    flip_probability: float = 0.5  # RandomFlip per axis (the spec's only augmentation)
    slab_probability: float = 0.0  # >0: keep only a random 8-32 plane slab (limited-coverage scans)
    centre_on_click: bool = False  # window centred on the first click, as inference does (official: bbox centre)
    targets_per_window: int = 1  # >1: other classes in the window become extra targets of one encoder pass
    scale_range: tuple[float, float] = (1.0, 1.0)  # window field of view x s, s log-uniform (scale augmentation)
    permute_probability: float = 0.0  # random axis permutation (orientation augmentation)
    intensity_probability: float = 0.0  # gamma, noise, bias field, contrast scale (each with this probability)
    remap_probability: float = 0.0  # random non-monotonic intensity map of the raw window (contrast augmentation)
    bias_field_max: float = 0.4  # RandBiasField coefficients in [0, this] (0.4: versions 2 and 3; MONAI's default 0.1)
    gamma_on: str = "window"  # gamma over the window's min-max range (versions 2 and 3) or "foreground" (voxels > 0)
    pseudo_fraction: float | None = None  # share of draws from pseudo-object cases (``*__*``); None: uniform over items
    size_exponent: float = 0.0  # >0: draw items in proportion to (mask voxels / median) ** this (large organs more often)
    case_weights: tuple[tuple[str, float], ...] = ()  # (shell pattern of case ids, draw-weight factor)
    extra_target_size_exponent: float = 0.0  # >0: draw a window's extra targets in proportion to their voxels ** this
    seed: int = 2023
    stage: int = 1
    init_checkpoint: str | None = None  # fine-tune from these weights (stage 2, or any checkpoint)
    log_every: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise TrainingConfigError(f"stage must be 1 or 2, got {self.stage}")
        for name in ("epochs", "batch_size", "accumulation_steps", "num_clicks", "targets_per_window"):
            if getattr(self, name) < 1:
                raise TrainingConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainingConfigError(f"max-steps must be at least 1, got {self.max_steps}")
        if self.lr <= 0:
            raise TrainingConfigError(f"lr must be positive, got {self.lr}")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise TrainingConfigError(f"scale-range must be 0 < low <= high, got {low},{high}")
        for name in ("permute_probability", "intensity_probability", "remap_probability", "pseudo_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise TrainingConfigError(f"{name.replace('_', '-')} must lie in [0, 1], got {value}")
        if not 0.0 <= self.bias_field_max <= 1.0:
            raise TrainingConfigError(f"bias-field-max must lie in [0, 1], got {self.bias_field_max}")
        if self.gamma_on not in GAMMA_DOMAINS:
            raise TrainingConfigError(f"gamma-on must be one of {', '.join(GAMMA_DOMAINS)}, got {self.gamma_on!r}")
        if not (math.isfinite(self.first_round_weight) and self.first_round_weight > 0):
            raise TrainingConfigError(f"first-round-weight must be positive, got {self.first_round_weight}")
        for name in ("size_exponent", "extra_target_size_exponent"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise TrainingConfigError(f"{name.replace('_', '-')} must lie in [0, 2], got {getattr(self, name)}")
        for pattern, weight in self.case_weights:
            if not (pattern and math.isfinite(weight) and weight > 0):
                raise TrainingConfigError(f"case-weights needs PATTERN=W with W > 0, got {pattern}={weight}")
        if self.stage == 2 and not self.init_checkpoint:
            raise TrainingConfigError("stage 2 fine-tunes a stage-1 model: give --checkpoint")

    @classmethod
    def for_stage(cls, stage: int, **overrides) -> "TrainConfig":
        """Stage 1: from scratch at lr 8e-4. Stage 2: from a checkpoint at lr 8e-5 (``train.sh``)."""
        preset: dict = {"stage": stage}
        if stage == 2:
            preset["lr"] = 8e-5
        preset.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**preset)

    def with_overrides(self, **overrides) -> "TrainConfig":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain types only (lists instead of tuples), safe for ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def recipe_changes(self, stored: dict) -> list[str]:
        """``name: stored -> now`` for each recipe option (not the run's length) that differs from
        the ``stored`` config of the run being resumed. A resumed run takes its options from the
        command line, so a flag not repeated silently falls back to its default (a run started with
        ``--gamma-on foreground`` would go on with ``window``); the trainer warns with this list."""
        before = TrainConfig.from_dict(stored)
        return [f"{f.name}: {getattr(before, f.name)!r} -> {getattr(self, f.name)!r}" for f in fields(self)
                if f.name not in RUN_LENGTH_FIELDS and getattr(before, f.name) != getattr(self, f.name)]

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in data.items():
            if key == "case_weights":
                values[key] = tuple((str(pattern), float(weight)) for pattern, weight in value)
            elif key in known:
                values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)
