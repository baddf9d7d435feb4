"""Safe loading of official checkpoint files.

``torch.load(weights_only=True)`` refuses to run pickled code. Official training scripts also
pickle harmless metadata (an ``argparse.Namespace`` of the run's arguments, NumPy scalars for
losses), so exactly those types are allowlisted. Anything else is refused with a clear message
unless the caller explicitly trusts the file.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sammed.errors import CheckpointError

# Harmless metadata types seen in training-script checkpoints.
_SAFE_METADATA_TYPES: list = [argparse.Namespace, np.dtype, np.ndarray]
try:  # NumPy scalars (e.g. a float64 loss) pickle through this reconstructor.
    from numpy._core.multiarray import _reconstruct, scalar  # type: ignore[attr-defined]

    _SAFE_METADATA_TYPES += [scalar, _reconstruct]
except ImportError:  # pragma: no cover - older NumPy layout
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]

    _SAFE_METADATA_TYPES += [scalar, _reconstruct]
_SAFE_METADATA_TYPES += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]

_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")


def read_checkpoint(path: str | Path, trust_checkpoint: bool = False) -> object:
    """Unpickle a checkpoint file on the CPU, safely unless ``trust_checkpoint`` is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if trust_checkpoint:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from exc
    try:
        with torch.serialization.safe_globals(_SAFE_METADATA_TYPES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = _unsafe_global(exc)
        if culprit is None:
            raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated") from exc
        raise CheckpointError(
            f"checkpoint {path} needs arbitrary code to unpickle{culprit}; refusing to load it. "
            "Pass --trust-checkpoint (trust_checkpoint=True) only if you trust its source"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from exc


def extract_state_dict(obj: object) -> "OrderedDict[str, torch.Tensor]":
    """Find the weights in an official file layout and strip DDP/compile prefixes.

    Accepts ``{'model_state_dict': sd, ...metadata}`` (SAM-Med3D), ``{'state_dict': sd}``,
    ``{'model': sd}`` (SAM-Med2D) or a bare state dict.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    state = obj
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and _all_tensors(inner):
            state = inner
            break
    if not state or not _all_tensors(state):
        raise CheckpointError(
            "checkpoint has no state dict (expected tensors, or one under 'model_state_dict', 'state_dict' or 'model')"
        )
    return OrderedDict((_strip_prefixes(k), v) for k, v in state.items())


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], model_name: str = "model") -> None:
    """Strict load with an error that lists what is missing, unexpected or mis-shaped."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_preview(unexpected)}")
        if mis_shaped:
            parts.append(f"wrong shape for {len(mis_shaped)} key(s): {_preview(mis_shaped)}")
        hint = _variant_hint(model_name, unexpected, missing, bool(mis_shaped))
        raise CheckpointError(f"checkpoint does not match {model_name}: " + "; ".join(parts) + hint)
    _refuse_non_finite(state_dict)
    model.load_state_dict(state_dict, strict=True)


def _refuse_non_finite(state_dict: Mapping[str, torch.Tensor]) -> None:
    """A NaN or infinite weight makes every mask empty or garbage without any error: refuse it.

    One fused reduction per floating tensor; about 0.1 s for SAM-Med3D-turbo's 100 M weights.
    """
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint holds NaN or infinite values in {len(bad)} tensor(s): {_preview(bad)}")


def _variant_hint(model_name: str, unexpected: list[str], missing: list[str], mis_shaped: bool = False) -> str:
    box_keys = {"prompt_encoder.point_embeddings.2.weight", "prompt_encoder.point_embeddings.3.weight"}
    if box_keys <= set(unexpected):
        return " (this looks like a CVPR-25 box checkpoint: use model 'sam-med3d-turbo-bbox')"
    if box_keys <= set(missing):
        return " (this looks like a turbo checkpoint without box embeddings: use model 'sam-med3d-turbo')"
    adapter = ".Adapter."  # SAM-Med2D's per-block adapters
    if unexpected and all(adapter in k for k in unexpected):
        return " (this looks like a SAM-Med2D checkpoint with adapters: use model 'sam-med2d' or 'sam-med2d-no-adapter')"
    if missing and all(adapter in k for k in missing):
        if mis_shaped:  # no adapters and other sizes: SAM's own 1024 file
            return " (this looks like an original SAM checkpoint: use model 'sam-vit-b', 'sam-vit-l' or 'sam-vit-h')"
        return " (this checkpoint has no SAM-Med2D adapters: use model 'sam-med2d-no-adapter')"
    return ""


def _all_tensors(mapping: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in mapping.values())


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _preview(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unsafe_global(exc: BaseException) -> str | None:
    """' (it references X)' when the unpickler stopped at a non-allowlisted global, else None."""
    text = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return f" (it references {match.group(1)})"
    return "" if "Unsupported global" in text or "Weights only load failed" in text and "global" in text else None
