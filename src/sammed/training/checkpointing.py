"""Training checkpoints in the official SAM-Med3D layout, written atomically.

``{'model_state_dict', 'optimizer_state_dict', 'lr_scheduler_state_dict', 'epoch', ...}`` as
``train.py`` writes them, so ``sammed.models.build_model(name, checkpoint=...)`` and upstream
loaders both read the weights. Metadata is kept to plain types (no ``argparse.Namespace``, no
``Counter``) so the safe loader (``torch.load(weights_only=True)``) accepts every file.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from sammed.errors import CheckpointError
from sammed.io.atomic import atomic_path
from sammed.models.checkpoint import read_checkpoint

LATEST = "latest.pth"
BEST = "best_loss.pth"


def plain_scheduler_state(state: dict) -> dict:
    """MultiStepLR keeps its milestones in a ``Counter``; store a plain dict instead."""
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in state.items()}


def restore_scheduler_state(scheduler, state: dict) -> None:
    scheduler.load_state_dict(state)
    if isinstance(getattr(scheduler, "milestones", None), dict):
        scheduler.milestones = Counter(scheduler.milestones)


def save_checkpoint(path: str | os.PathLike, payload: dict, exclusive: bool = False) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path`` (with
    ``exclusive``, link it there and raise ``FileExistsError`` if ``path`` exists)."""
    path = Path(path)
    with atomic_path(path, exclusive=exclusive) as tmp:
        torch.save(payload, tmp)
    return path


def training_payload(model, optimizer, scheduler, scaler, epoch: int, step: int, history: dict, config: dict, model_name: str) -> dict:
    """The checkpoint dict; ``model`` is the bare network (never the DDP wrapper)."""
    payload = {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler_state_dict": plain_scheduler_state(scheduler.state_dict()),
        "epoch": int(epoch),
        "step": int(step),
        "losses": [float(x) for x in history.get("losses", [])],
        "dices": [float(x) for x in history.get("dices", [])],
        "best_loss": float(history.get("best_loss", float("inf"))),
        "config": config,
        "model_name": model_name,
    }
    if scaler is not None:
        payload["grad_scaler_state_dict"] = scaler.state_dict()
    return payload


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with the safe loader."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or "model_state_dict" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'model_state_dict')")
    return state


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = True, note: dict | None = None) -> Path:
    """Inference-only file: ``{'model_state_dict'}`` (float16 if ``half``) plus plain metadata.

    Dropping the optimizer state and halving the storage makes a shippable file; loading casts
    back to the model's float32 parameters (``load_state_dict`` copies into them).
    """
    state = load_training_state(checkpoint)
    weights = {
        k: (v.half() if half and v.is_floating_point() else v).clone() for k, v in state["model_state_dict"].items()
    }
    payload = {
        "model_state_dict": weights,
        "model_name": state.get("model_name"),
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "config": state.get("config"),
        "note": note or {},
    }
    return save_checkpoint(out, payload)
