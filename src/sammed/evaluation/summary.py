"""Aggregates of result rows: mean and spread per class, track and interaction.

NaN values (both masks empty, see :mod:`sammed.evaluation.metrics`) are left out of every mean;
infinite HD95 values (one mask empty) are counted separately and left out of the HD95 mean.
Standard deviations are population ones (``numpy.nanstd``), as SAM-Med3D's dataset summary uses.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Stat", "stat", "by_group", "tracks_of", "auc_trapezoid", "class_order"]


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int  # finite values used
    n_inf: int = 0

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a" if not self.n_inf else f"inf ({self.n_inf})"
        out = f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"
        return out + (f" (+{self.n_inf} inf)" if self.n_inf else "")


def stat(values: Iterable[Any]) -> Stat:
    numbers = np.array([float(v) for v in values if v is not None], dtype=np.float64)
    finite = numbers[np.isfinite(numbers)]
    n_inf = int(np.isinf(numbers).sum())
    if finite.size == 0:
        return Stat(math.nan, math.nan, 0, n_inf)
    return Stat(float(finite.mean()), float(finite.std()), int(finite.size), n_inf)


def by_group(rows: Sequence[dict[str, Any]], keys: Sequence[str], column: str) -> dict[tuple, Stat]:
    """Stat of ``column`` for each distinct combination of ``keys`` (insertion ordered)."""
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row[column])
    return {key: stat(values) for key, values in groups.items()}


def tracks_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["track"] for r in rows))


def class_order(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Class names in the order rows list them (the cases' class order)."""
    return list(dict.fromkeys(r["class_name"] for r in rows))


def auc_trapezoid(values: Sequence[float]) -> float:
    """Trapezoid area of values at x = 0, 1, ... (the CVPR 2025 interaction AUC)."""
    if len(values) < 2:
        return math.nan
    y = np.asarray(values, dtype=np.float64)
    return float(((y[1:] + y[:-1]) / 2.0).sum())
