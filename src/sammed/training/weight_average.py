"""Weighted averages of model weights: snapshot soups and interpolation toward an ancestor.

Two uses, one operation (``sum_i w_i * theta_i`` with the weights normalised to sum 1):

- a *soup* of snapshots of one run (equal weights) evens out the epoch-to-epoch swings that a
  small validation set cannot tell apart;
- *interpolation* between a fine-tuned model and the model it was fine-tuned from (weights
  ``1 - a`` and ``a``, as in WiSE-FT, Wortsman et al., CVPR 2022) trades what fine-tuning gained
  against what it forgot, without more training.

Both only make sense for checkpoints of one architecture that share a training lineage (a
linear path between unrelated networks crosses high-loss regions); the shapes are checked, the
lineage is the caller's claim. Every input is read with the safe loader; float16 exports are
averaged in float64 and written in float32, the dtype the models train and load in.

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
from sammed.models.weights import file_sha256
from sammed.training.checkpointing import load_training_state, save_checkpoint


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


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i w_i * state_i`` key by key; integer buffers must agree and are copied from the first.

    Refuses (CheckpointError) states whose keys or shapes differ: averaging two architectures
    would either fail deep inside torch or, worse, broadcast into a meaningless network.
    """
    if len(states) != len(weights):
        raise SammedError(f"{len(states)} checkpoints but {len(weights)} weights")
    w = normalised_weights(weights)
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != set(keys):
            missing = sorted(set(keys) ^ set(state))[:3]
            raise CheckpointError(f"checkpoint {i + 1} has other parameters than checkpoint 1 (e.g. {', '.join(missing)})")
    averaged: dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [state[key] for state in states]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise CheckpointError(f"parameter {key} has different shapes across checkpoints: {sorted(shapes)}")
        if not tensors[0].is_floating_point():
            if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                raise CheckpointError(f"integer buffer {key} differs across checkpoints; cannot average it")
            averaged[key] = tensors[0].clone()
            continue
        total = sum(wi * t.double() for wi, t in zip(w, tensors))
        averaged[key] = torch.as_tensor(total).float()
    return averaged


def average_checkpoints(paths: Sequence[str | os.PathLike], weights: Sequence[float] | None, out: str | os.PathLike) -> Path:
    """Write ``{'model_state_dict', 'model_name', 'config', 'note'}`` for the weighted average.

    ``out`` may not exist: nothing is overwritten, and so no input is (an output never aliases
    an input). The note records each input's file name, sha256 and normalised
    weight, so a card can state exactly what was averaged. ``config`` and ``model_name`` come from
    the first input.
    """
    sources = [Path(p) for p in paths]
    out = Path(out)
    weights = [1.0] * len(sources) if weights is None else list(weights)
    w = normalised_weights(weights)
    if out.exists():  # covers out == an input under any spelling: every input exists
        raise SammedError(f"{out} exists; choose a new output file")
    loaded = [load_training_state(source) for source in sources]
    names = {state.get("model_name") for state in loaded} - {None}
    if len(names) > 1:
        raise CheckpointError(f"checkpoints of different models: {', '.join(sorted(map(str, names)))}")
    state = average_state_dicts([s["model_state_dict"] for s in loaded], w)
    note = {"average_of": [{"file": s.name, "sha256": file_sha256(s), "weight": wi} for s, wi in zip(sources, w)]}
    payload = {
        "model_state_dict": state,
        "model_name": loaded[0].get("model_name"),
        "config": loaded[0].get("config"),
        "note": note,
    }
    return save_checkpoint(out, payload)


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
