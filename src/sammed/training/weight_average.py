"""Weighted averages of model weights: snapshot soups and interpolation toward an ancestor.

Two uses, one operation (``sum_i w_i * theta_i`` with the weights normalised to sum 1):

- a *soup* of snapshots of one run (equal weights) evens out the epoch-to-epoch swings that a
  small validation set cannot tell apart;
- *interpolation* between the model a run started from (weight ``1 - a``) and the fine-tuned
  model (weight ``a``), as in WiSE-FT (Wortsman et al., CVPR 2022), trades what fine-tuning
  gained against what it forgot, without more training.

Both only make sense for checkpoints of one architecture that share a training lineage (a
linear path between unrelated networks crosses high-loss regions); the shapes are checked, the
lineage is the caller's claim. Every input is read with the safe loader; sums are in float64
and the result in float32, the dtype the models train and load in (float16 exports included).

``python -m sammed.training.weight_average --out OUT.pth A.pth=0.25 B.pth=0.75``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from sammed.errors import CheckpointError, SammedError
from sammed.models.checkpoint import extract_state_dict, read_checkpoint, refuse_non_finite
from sammed.models.weights import file_sha256
from sammed.training.checkpointing import save_checkpoint


def normalised_weights(weights: Sequence[float]) -> list[float]:
    """Non-negative finite weights with a positive sum, scaled to sum 1."""
    if not weights:
        raise SammedError("no checkpoints to average")
    for w in weights:
        if not math.isfinite(w) or w < 0:
            raise SammedError(f"averaging weight {w} must be finite and >= 0")
    total = float(sum(weights))
    if total <= 0:
        raise SammedError("averaging weights sum to 0")
    return [float(w) / total for w in weights]


class WeightedSum:
    """Running ``sum_i w_i * state_i`` in float64, one state at a time, so averaging N training
    checkpoints holds one file's tensors plus the sum, not N files with their optimizer states.

    Refuses (CheckpointError) a state whose keys or shapes differ from the first: averaging two
    architectures would either fail deep inside torch or, worse, broadcast into a meaningless
    network. Integer buffers must agree and are kept as the first state's.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, state: dict[str, torch.Tensor], weight: float) -> None:
        self.count += 1
        if not self.sums:
            self.sums = {k: (weight * v.double() if v.is_floating_point() else v.clone()) for k, v in state.items()}
            return
        if set(state) != set(self.sums):
            differing = sorted(set(self.sums) ^ set(state))[:3]
            raise CheckpointError(f"checkpoint {self.count} has other parameters than checkpoint 1 (e.g. {', '.join(differing)})")
        for key, value in state.items():
            total = self.sums[key]
            if tuple(value.shape) != tuple(total.shape):
                raise CheckpointError(f"parameter {key} has shape {tuple(value.shape)} in checkpoint {self.count} "
                                      f"but {tuple(total.shape)} in checkpoint 1")
            if not total.is_floating_point():
                if not torch.equal(value, total):
                    raise CheckpointError(f"integer buffer {key} differs across checkpoints; cannot average it")
            else:
                total.add_(value.double(), alpha=weight)

    def result(self) -> dict[str, torch.Tensor]:
        """The sum in float32 (the dtype the models train and load in); NaN or infinity refused."""
        averaged = {k: (v.float() if v.is_floating_point() else v) for k, v in self.sums.items()}
        refuse_non_finite(averaged)
        return averaged


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i w_i * state_i`` key by key for states in memory (weights normalised to sum 1)."""
    if len(states) != len(weights):
        raise SammedError(f"{len(states)} checkpoints but {len(weights)} weights")
    total = WeightedSum()
    for state, weight in zip(states, normalised_weights(weights)):
        total.add(state, weight)
    return total.result()


def average_checkpoints(paths: Sequence[str | os.PathLike], weights: Sequence[float] | None, out: str | os.PathLike) -> Path:
    """Write ``{'model_state_dict', 'model_name', 'config', 'note'}`` for the weighted average.

    ``out`` may not exist: nothing is overwritten, and so no input is (an output never aliases
    an input); the final link refuses a file another process made meanwhile. Each input is read
    with the safe loader in any layout the model loaders accept (DDP prefixes stripped). The note
    records each input's file name, sha256 and normalised weight, so a card can state exactly what
    was averaged. ``config`` comes from the first input that has one.
    """
    sources = [Path(p) for p in paths]
    out = Path(out)
    w = normalised_weights([1.0] * len(sources) if weights is None else list(weights))
    if len(w) != len(sources):
        raise SammedError(f"{len(sources)} checkpoints but {len(w)} weights")
    if out.exists():  # checked first so the common mistake fails before minutes of loading
        raise SammedError(f"{out} exists; choose a new output file")
    total = WeightedSum()
    names: set[str] = set()
    config = None
    for source, weight in zip(sources, w):
        loaded = read_checkpoint(source)
        total.add(extract_state_dict(loaded), weight)
        if isinstance(loaded, dict):
            if loaded.get("model_name") is not None:
                names.add(str(loaded["model_name"]))
            config = config if config is not None else loaded.get("config")
        del loaded
    if len(names) > 1:
        raise CheckpointError(f"checkpoints of different models: {', '.join(sorted(names))}")
    note = {"average_of": [{"file": s.name, "sha256": file_sha256(s), "weight": wi} for s, wi in zip(sources, w)]}
    payload = {"model_state_dict": total.result(), "model_name": next(iter(names), None), "config": config, "note": note}
    try:
        return save_checkpoint(out, payload, exclusive=True)
    except FileExistsError as exc:
        if os.path.lexists(out):  # made while the inputs loaded; mkdir meeting a file lands below
            raise SammedError(f"{out} exists; choose a new output file") from None
        raise CheckpointError(f"cannot write {out}: {exc.strerror or exc}") from None
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot write {out}: {getattr(exc, 'strerror', None) or exc}") from None


def parse_weighted_path(text: str) -> tuple[str, float | None]:
    """``PATH`` or ``PATH=W`` (split at the last ``=``, so a path may contain ``=`` if a weight follows)."""
    path, sep, weight = text.rpartition("=")
    if not sep:
        return text, None
    try:
        value = float(weight)
    except ValueError:
        raise SammedError(f"{text!r}: the weight after '=' must be a number") from None
    if not path:
        raise SammedError(f"{text!r}: no checkpoint before '='")
    return path, value


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line for a user mistake."""
    parser = argparse.ArgumentParser(description="Weighted average of model weights (snapshot soup or interpolation).")
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT[=W]",
                        help="checkpoints to average, each with an optional weight (all or none; default equal)")
    parser.add_argument("--out", type=Path, required=True, help="new file to write (never one of the inputs)")
    args = parser.parse_args(argv)
    try:
        parsed = [parse_weighted_path(text) for text in args.checkpoints]
        given = [w for _, w in parsed if w is not None]
        if given and len(given) != len(parsed):
            raise SammedError("give a weight for every checkpoint or for none")
        weights = [w for _, w in parsed] if given else None
        out = average_checkpoints([p for p, _ in parsed], weights, args.out)  # type: ignore[arg-type]
    except SammedError as error:
        print(f"weight_average: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
