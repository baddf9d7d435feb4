"""Seeded click and box simulators of the published evaluation protocols.

Every simulator is deterministic given its inputs and ``rng`` (a ``numpy.random.RandomState``;
the official code draws from NumPy's legacy global RNG, whose stream ``RandomState(seed)`` gives
without touching global state). Points are array indices in the axis order of the masks passed
in, except the SAM-Med2D ones, which return ``(x, y)`` pixel coordinates as SAM predictors take.

* :func:`official_click` - SAM-Med3D ``infer_utils.random_sample_next_click`` (uniform error voxel).
* :func:`paper_click` - the paper-era ``validation.py`` scheme: RITM core clicks for rounds 1-2,
  then uniform error-voxel clicks (spec §8.1, §9.2).
* :func:`med2d_box`, :func:`med2d_first_point`, :func:`med2d_next_point` - SAM-Med2D ``test.py``.
* :func:`cvpr25_box`, :func:`cvpr25_click` - the CVPR 2025 interactive challenge (``get_boxes.py``
  and ``CVPR25_iter_eval.py``), on ``(z, y, x)`` arrays as the challenge stores them.

The SAM-Med3D samplers themselves live in :mod:`sammed.evaluation.official_clicks` and are reused here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy import ndimage

from sammed.evaluation.official_clicks import get_next_click_random_error, get_next_click_ritm, random_sample_next_click

__all__ = [
    "SimClick",
    "Cvpr25Box",
    "official_click",
    "paper_click",
    "med2d_box",
    "med2d_first_point",
    "med2d_next_point",
    "cvpr25_box",
    "cvpr25_click",
]

# CVPR 2025: ties between the deepest voxels are broken with a fixed-seed draw (``sample_coord``).
CVPR25_TIE_SEED = 42
# CVPR 2025 box jitter: up to 5 voxels at a 256 side, scaled to the slice size.
CVPR25_MAX_SHIFT = 6
# Rounds of the paper-era scheme that use the RITM ("eroded core") sampler.
PAPER_RITM_ROUNDS = 2


@dataclass(frozen=True)
class SimClick:
    """A simulated click: array index (or ``(x, y)`` for 2D predictors) and its polarity."""

    point: tuple[int, ...]
    positive: bool

    @property
    def label(self) -> int:
        return int(self.positive)


def _as_click(point: torch.Tensor, label: torch.Tensor) -> SimClick:
    return SimClick(tuple(int(v) for v in point.reshape(-1)), bool(int(label.reshape(-1)[0])))


def official_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.RandomState) -> SimClick:
    """Uniform voxel of the error region (FN | FP), positive iff it is a miss (spec §9.1).

    Without any error the click is a uniform GT voxel, positive. ``gt`` must not be empty.
    """
    point, label = random_sample_next_click(torch.from_numpy(np.asarray(pred)), torch.from_numpy(np.asarray(gt)),
                                            method="random", rng=rng)
    return _as_click(point, label)


def paper_click(
    prev_logits: torch.Tensor, gt: torch.Tensor, round_number: int, rng: np.random.RandomState
) -> Optional[SimClick]:
    """Click of the paper-era validation at round ``round_number`` (counted from 1).

    Rounds 1 and 2 pick from the eroded core of the larger error region (RITM), later rounds a
    uniform error voxel; both threshold the upsampled *logits* at 0.5 as upstream did. Inputs are
    ``(1, 1, A0, A1, A2)``. Returns None when the prediction equals the GT (upstream crashed there).
    """
    if not bool(((prev_logits > 0.5) != (gt > 0)).any()):
        return None
    sampler = get_next_click_ritm if round_number <= PAPER_RITM_ROUNDS else get_next_click_random_error
    points, labels = sampler(prev_logits, gt, rng=rng)
    return _as_click(points[0], labels[0])


def med2d_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` box of the largest 8-connected component, max exclusive, no noise."""
    components, count = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        raise ValueError("cannot draw a box around an empty mask")
    sizes = np.bincount(components.ravel())[1:]
    rows, cols = ndimage.find_objects(components)[int(np.argmax(sizes))]
    return cols.start, rows.start, cols.stop, rows.stop


def med2d_first_point(mask: np.ndarray, rng: np.random.RandomState) -> SimClick:
    """One uniform foreground pixel, positive; a uniform background pixel, negative, if empty."""
    fg = np.asarray(mask) > 0
    candidates = np.argwhere(fg) if fg.any() else np.argwhere(~fg)
    row, col = candidates[int(rng.randint(len(candidates)))]
    return SimClick((int(col), int(row)), bool(fg.any()))


def med2d_next_point(pred: np.ndarray, gt: np.ndarray, rng: np.random.RandomState) -> Optional[SimClick]:
    """Uniform pixel of the error region, positive iff missed; None when there is no error."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    errors = np.argwhere(p != g)
    if len(errors) == 0:
        return None
    row, col = errors[int(rng.randint(len(errors)))]
    return SimClick((int(col), int(row)), bool(g[row, col]))


@dataclass(frozen=True)
class Cvpr25Box:
    """The challenge's box: a 2D box on slice ``z_mid`` plus the z extent (inclusive indices)."""

    z_min: int
    z_max: int
    z_mid: int
    y_min: int
    y_max: int
    x_min: int
    x_max: int

    def corners_zyx(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (self.z_min, self.y_min, self.x_min), (self.z_max, self.y_max, self.x_max)


def cvpr25_box(gt_zyx: np.ndarray, rng: np.random.RandomState) -> Cvpr25Box:
    """Box of one class as ``get_boxes.py`` makes it.

    ``z_mid`` is the z of the median GT voxel in C order (so the slice always holds GT). The 2D box
    of that slice grows by ``randint(0, 6)`` voxels scaled by side/256 on each axis, clipped.
    """
    g = np.asarray(gt_zyx) > 0
    z, _, _ = np.nonzero(g)
    if len(z) == 0:
        raise ValueError("cannot draw a box around an empty mask")
    z_mid = int(z[len(z) // 2])
    rows, cols = np.nonzero(g[z_mid])
    height, width = g.shape[1:]
    shift = int(rng.randint(0, CVPR25_MAX_SHIFT))
    shift_x, shift_y = int(shift * width / 256), int(shift * height / 256)
    return Cvpr25Box(
        z_min=int(z.min()),
        z_max=int(z.max()),
        z_mid=z_mid,
        y_min=max(0, int(rows.min()) - shift_y),
        y_max=min(height - 1, int(rows.max()) + shift_y),
        x_min=max(0, int(cols.min()) - shift_x),
        x_max=min(width - 1, int(cols.max()) + shift_x),
    )


def _component_depth(component: np.ndarray) -> np.ndarray:
    """Unit-spacing distance transform of one component inside its bounding box grown by 25 %.

    The margin is ``int(0.25 * side)`` per axis, so a side under 4 voxels gets none and the box
    edge does not count as background there, exactly as the challenge computes it.
    """
    coords = np.argwhere(component)
    low, high = coords.min(axis=0), coords.max(axis=0) + 1
    margin = ((high - low) * 0.25).astype(int)
    crop = component[tuple(slice(a, b) for a, b in zip(low, high))]
    padded = np.pad(crop.astype(np.uint8), [(m, m) for m in margin])
    depth = ndimage.distance_transform_edt(padded)
    inner = depth[tuple(slice(m, m + s) for m, s in zip(margin, crop.shape))]
    full = np.zeros(component.shape, dtype=inner.dtype)
    full[tuple(slice(a, b) for a, b in zip(low, high))] = inner
    return full


def cvpr25_click(pred_zyx: np.ndarray, gt_zyx: np.ndarray) -> Optional[SimClick]:
    """Click at the centre of the largest error component (26-connected), or None if perfect.

    The centre is the deepest voxel of the component's distance transform (ties: a fixed-seed
    uniform pick, as ``sample_coord`` does). Positive when the GT is there (a miss), else negative.
    """
    g = np.asarray(gt_zyx) > 0
    errors = (np.asarray(pred_zyx) > 0) != g
    if not errors.any():
        return None
    components, _ = ndimage.label(errors, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    depth = _component_depth(components == int(np.argmax(sizes)))
    deepest = np.argwhere(depth == depth.max())
    centre = deepest[np.random.RandomState(CVPR25_TIE_SEED).choice(len(deepest))]
    point = tuple(int(v) for v in centre)
    return SimClick(point, bool(g[point]))
