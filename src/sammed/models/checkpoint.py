"""Safe loading of official checkpoint files.

``torch.load(weights_only=True)`` refuses to run pickled code. Official training scripts also
pickle harmless metadata (an ``argparse.Namespace`` of the run's arguments, NumPy scalars for
losses), so exactly those types are allowlisted. Anything else is refused with a clear message
unless the caller explicitly trusts the file.

Loading for inference costs no copy of the weights: :func:`read_checkpoint` can memory-map a
zip-format file (``mmap=True``), :func:`empty_parameters` builds a module whose parameters are
shapes only (no memory, no random initialisation), and :func:`load_weights` then makes the
file's tensors the module's parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
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


def read_checkpoint(path: str | Path, trust_checkpoint: bool = False, mmap: bool = False) -> object:
    """Unpickle a checkpoint file on the CPU, safely unless ``trust_checkpoint`` is set.

    ``mmap=True`` maps a zip-format file (``torch.save``'s format since PyTorch 1.6) instead of
    reading it: its tensors are copy-on-write views of the file, paged in when first read, so
    nothing is copied. A legacy (non-zip) file is read as usual. A mapped file must then be
    replaced by writing a new file and renaming it over the old one (as sammed writes), never
    rewritten in place while a model loaded from it is in use.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    options = {"map_location": "cpu", "mmap": mmap and _is_zip(path)}
    if trust_checkpoint:
        try:
            return torch.load(path, weights_only=False, **options)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from exc
    try:
        with torch.serialization.safe_globals(_SAFE_METADATA_TYPES):
            return torch.load(path, weights_only=True, **options)
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
    """Strict load with an error that lists what is missing, unexpected or mis-shaped.

    A model built under :func:`empty_parameters` (parameters on the ``meta`` device) takes the
    state dict's tensors as its own (cast to the model's dtypes where they differ), so the
    weights exist once; any other model copies them into its parameters.
    """
    expected = model.state_dict(keep_vars=True)
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
    refuse_non_finite(state_dict)
    if not any(p.is_meta for p in model.parameters()):
        model.load_state_dict(state_dict, strict=True)
        return
    with empty_parameters(active=False):  # a builder that loads weights itself runs inside empty_parameters()
        model.load_state_dict({k: _as_parameter_data(v, expected[k]) for k, v in state_dict.items()}, strict=True, assign=True)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer created from a parameter at build time, say: no data anywhere
        raise CheckpointError(f"{model_name} built with empty parameters keeps {len(left)} without data: {_preview(left)}")


_EMPTY = threading.local()  # .active: parameters registered in this thread go to the meta device


@contextlib.contextmanager
def empty_parameters(active: bool = True) -> Iterator[None]:
    """Modules built in this thread inside the block get parameters on the ``meta`` device.

    They hold no memory and their random initialisation costs nothing; :func:`load_weights`
    then gives them the checkpoint's tensors (``active=False`` inside). Buffers stay real: a
    non-persistent one (not in checkpoints, e.g. SAM's pixel mean) keeps the value its module
    computed.
    """
    outer = getattr(_EMPTY, "active", False)
    _EMPTY.active = active
    handle = nn.modules.module.register_module_parameter_registration_hook(_to_meta)
    try:
        yield
    finally:
        handle.remove()
        _EMPTY.active = outer


def _to_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> nn.Parameter | None:
    if param is None or param.is_meta or not getattr(_EMPTY, "active", False):
        return None
    return nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)


def _as_parameter_data(value: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``value`` as a module's own tensor: its dtype, contiguous, 64-byte aligned (a copy only if not)."""
    value = value.to(current.dtype)
    if not value.is_contiguous() or value.data_ptr() % 64:
        value = value.contiguous().clone()
    return value


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def refuse_non_finite(state_dict: Mapping[str, torch.Tensor]) -> None:
    """A NaN or infinite weight makes every mask empty or garbage without any error: refuse it.

    One sum per floating tensor (a NaN or an infinity makes it non-finite; a single read of the
    weights, no temporary), confirmed element-wise only when a sum is not finite, in case it
    merely overflowed. About 0.02 s for SAM-Med3D-turbo's 100 M weights.
    """
    suspect = [k for k, v in state_dict.items() if v.is_floating_point() and not _finite_sum(v)]
    bad = [k for k in suspect if not bool(torch.isfinite(state_dict[k]).all())]
    if bad:
        raise CheckpointError(f"checkpoint holds NaN or infinite values in {len(bad)} tensor(s): {_preview(bad)}")


def _finite_sum(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s sum is finite. NumPy sums on this thread: torch's thread pool meets at
    a barrier per tensor, and on a machine another process keeps busy those waits cost 20x more."""
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.detach().numpy().sum()))
    return bool(torch.isfinite(tensor.sum()))


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
