"""Simulated clicks of the official SAM-Med3D evaluation (spec §9).

Every sampler lists candidate voxels with ``torch.argwhere`` (lexicographic order) and draws one
with ``randint(len(candidates))``. Returned points are voxel indices in tensor axis order
``(A0, A1, A2)``, i.e. the order the prompt encoder expects. Label 1 is positive, 0 negative.

The randomness comes from ``rng``: ``None`` means NumPy's global legacy RNG (what the official code
uses); pass ``np.random.RandomState(seed)`` to get the same stream without touching global state
(``RandomState(s)`` and ``np.random.seed(s)`` yield identical ``randint`` draws).

Samplers:

* :func:`random_sample_next_click` - the current ``infer_utils`` sampler (§9.1), one 3-D volume.
* :func:`get_next_click_random_error` - ``click_method.get_next_click3D_torch_2`` (§9.2), batched.
* :func:`get_next_click_fn_or_fp` - ``click_method.get_next_click3D_torch`` (§9.2), batched.
* :func:`get_next_click_ritm` - ``click_method.get_next_click3D_torch_ritm`` (§9.2), batch of 1.

The RITM variants need a Euclidean distance transform. Upstream uses the ``edt`` package
(``black_border=True`` on a mask padded by one zero voxel); here it is
``scipy.ndimage.distance_transform_edt`` on the same padded mask, which is equivalent because the
zero border already bounds every distance. The result is cast to float32 as ``edt`` returns it.
"""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
import torch

__all__ = [
    "random_sample_next_click",
    "get_next_click_random_error",
    "get_next_click_fn_or_fp",
    "get_next_click_ritm",
]

RNG = Union[np.random.RandomState, None]
ClickMethod = Literal["random", "ritm"]

# Threshold the batched samplers apply to ``prev_seg``. Training and the old validation script fed
# them upsampled *logits*, so 0.5 is a logit threshold there, not a probability one (spec §9.2).
BATCHED_MASK_THRESHOLD = 0.5


def _randint(rng: RNG, high: int) -> int:
    """Draw from ``rng`` or, for ``None``, from NumPy's global RNG like the official code."""
    source = np.random if rng is None else rng
    return int(source.randint(high))


def _pick(mask: torch.Tensor, rng: RNG) -> torch.Tensor:
    """One voxel index of ``mask`` (uniform over its true voxels, argwhere order)."""
    candidates = torch.argwhere(mask)
    return candidates[_randint(rng, len(candidates))]


def _as_volume(t: torch.Tensor, name: str) -> torch.Tensor:
    """Squeeze singleton dims down to one 3-D volume (the official helper does the same)."""
    if t.ndim != 3:
        t = t.squeeze()
    if t.ndim != 3:
        raise ValueError(f"{name} must hold a single 3-D volume, got shape {tuple(t.shape)}")
    return t


def _click(point: torch.Tensor, positive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Package one click as the official ``(1,1,3)`` long point and ``(1,1)`` long label."""
    coords = point.detach().to(torch.long).reshape(1, 1, 3).clone()
    label = torch.tensor([[int(positive)]], dtype=torch.long)
    return coords, label


def _padded_edt(mask: torch.Tensor) -> torch.Tensor:
    """Distance of each voxel of a 3-D ``mask`` to the nearest background voxel or the border.

    The mask is padded by one background voxel on every side first, as upstream does, so voxels
    on the volume edge are at distance 1 at most.
    """
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(mask.cpu().numpy().astype(np.uint8), 1, mode="constant")
    dist = distance_transform_edt(padded).astype(np.float32)
    return torch.from_numpy(dist[1:-1, 1:-1, 1:-1])


def _ritm_candidates(fn: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Voxels in the 'eroded core' of the larger error region (distance > half the max).

    Positive (FN) is chosen only if its deepest voxel is strictly deeper than FP's.
    """
    fn_dt, fp_dt = _padded_edt(fn), _padded_edt(fp)
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    dt = fn_dt if fn_max > fp_max else fp_dt
    return dt > (max(fn_max, fp_max) / 2.0)


def random_sample_next_click(
    prev: torch.Tensor,
    gt: torch.Tensor,
    method: ClickMethod = "random",
    rng: RNG = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next click from the current prediction and the GT (``infer_utils``, spec §9.1).

    Args:
        prev: current binary prediction, one volume ``(A0,A1,A2)`` (singleton dims allowed);
            foreground is ``prev > 0``. All-zero at the first click.
        gt: ground truth of the same shape; foreground is ``gt > 0``.
        method: ``"random"``: uniform over error voxels (FN | FP), label 1 iff the voxel is FN;
            without any error voxel, a uniform GT voxel labelled positive.
            ``"ritm"``: uniform over the eroded core of the larger error region; without any
            candidate, the volume centre labelled negative.
        rng: see module docstring.

    Returns:
        ``point (1,1,3)`` long in ``(A0,A1,A2)`` and ``label (1,1)`` long.

    Raises:
        ValueError: empty GT, bad shapes or unknown method.
    """
    prev_fg = _as_volume(prev, "prev") > 0
    gt_fg = _as_volume(gt, "gt") > 0
    if prev_fg.shape != gt_fg.shape:
        raise ValueError(f"prev {tuple(prev_fg.shape)} and gt {tuple(gt_fg.shape)} differ in shape")
    if not gt_fg.any():
        raise ValueError("cannot sample a click: the ground truth is empty")
    fn = gt_fg & ~prev_fg
    fp = ~gt_fg & prev_fg

    kind = method.lower()
    if kind == "random":
        errors = fn | fp
        if not errors.any():
            # Perfect prediction: re-click the object itself.
            return _click(_pick(gt_fg, rng), True)
        point = _pick(errors, rng)
        return _click(point, bool(fn[tuple(point.tolist())]))
    if kind == "ritm":
        core = _ritm_candidates(fn, fp)
        if not core.any():
            centre = torch.tensor([s // 2 for s in gt_fg.shape])
            return _click(centre, False)
        point = _pick(core, rng)
        return _click(point, bool(fn[tuple(point.tolist())]))
    raise ValueError(f"unknown click method {method!r}; use 'random' or 'ritm'")


def _batched_errors(
    prev_seg: torch.Tensor, gt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FN and FP maps of batched ``(B,1,A0,A1,A2)`` inputs (prediction is ``prev_seg > 0.5``)."""
    if prev_seg.ndim != 5 or prev_seg.shape != gt.shape:
        raise ValueError(
            "prev_seg and gt must both be (B,1,A0,A1,A2), got "
            f"{tuple(prev_seg.shape)} and {tuple(gt.shape)}"
        )
    pred = prev_seg > BATCHED_MASK_THRESHOLD
    true = gt > 0
    return true & ~pred, ~true & pred


def _batched_click(point: torch.Tensor, positive: bool, device: torch.device):
    """Drop the channel index of a ``(1,A0,A1,A2)`` argwhere row and package the click."""
    coords, label = _click(point[1:], positive)
    return coords.to(device), label.to(device)


def get_next_click_random_error(
    prev_seg: torch.Tensor, gt: torch.Tensor, rng: RNG = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Uniform click on an error voxel per batch item (``get_next_click3D_torch_2``).

    Used by training and by the "random" evaluation. Args are ``(B,1,A0,A1,A2)``; returns lists
    of ``(1,1,3)`` points and ``(1,1)`` labels (1 iff FN). Upstream crashes when an item has no
    error voxel; this raises a ValueError saying so.
    """
    fn, fp = _batched_errors(prev_seg, gt)
    errors = fn | fp
    points, labels = [], []
    for i in range(gt.shape[0]):
        if not errors[i].any():
            raise ValueError(f"batch item {i}: prediction equals the GT, no error voxel to click")
        point = _pick(errors[i], rng)
        p, lab = _batched_click(point, bool(fn[i][tuple(point.tolist())]), prev_seg.device)
        points.append(p)
        labels.append(lab)
    return points, labels


def get_next_click_fn_or_fp(
    prev_seg: torch.Tensor, gt: torch.Tensor, rng: RNG = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """FN or FP click with a coin flip when both exist (``get_next_click3D_torch``).

    ``random() > 0.5`` picks FN (positive), else FP (negative); with one kind only, that kind;
    with no error at all, a uniformly random voxel labelled negative.
    """
    source = np.random if rng is None else rng
    fn, fp = _batched_errors(prev_seg, gt)
    points, labels = [], []
    for i in range(gt.shape[0]):
        has_fn, has_fp = bool(fn[i].any()), bool(fp[i].any())
        if has_fn and has_fp:
            positive = bool(source.random() > 0.5)
            point = _pick(fn[i] if positive else fp[i], rng)
        elif has_fn or has_fp:
            positive = has_fn
            point = _pick(fn[i] if positive else fp[i], rng)
        else:
            # One draw per dim of the (1,A0,A1,A2) item, channel included, as upstream does:
            # the channel draw is always 0 but still advances the RNG.
            positive = False
            point = torch.tensor([int(source.randint(s)) for s in fn[i].shape], dtype=torch.long)
        p, lab = _batched_click(point, positive, prev_seg.device)
        points.append(p)
        labels.append(lab)
    return points, labels


def get_next_click_ritm(
    prev_seg: torch.Tensor, gt: torch.Tensor, rng: RNG = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """RITM-style click from the eroded core of the larger error region (batch of 1 only).

    Upstream computes the distance maps for batch item 0 only, so larger batches are refused.
    Label is 1 iff the picked voxel is FN. Raises ValueError when there is no error voxel
    (upstream crashes there).
    """
    if prev_seg.shape[0] != 1:
        raise ValueError(f"the RITM sampler supports batch size 1 only, got {prev_seg.shape[0]}")
    fn, fp = _batched_errors(prev_seg, gt)
    core = _ritm_candidates(fn[0, 0], fp[0, 0])
    if not core.any():
        raise ValueError("prediction equals the GT, no error voxel to click")
    point = _pick(core, rng)
    positive = bool(fn[0, 0][tuple(point.tolist())])
    coords, label = _click(point, positive)
    return [coords.to(prev_seg.device)], [label.to(prev_seg.device)]
