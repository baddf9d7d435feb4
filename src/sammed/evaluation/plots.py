"""PNG plots of a report (matplotlib, Agg backend: no display needed).

* ``curves.png``: mean Dice and NSD against the interaction number, one line per class and
  track, plus the all-class mean in bold;
* ``montage.png``: for the best and the worst case x class (final Dice), the stored 2D cut with
  the ground-truth contour (green) and the prediction contour (magenta).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sammed.evaluation.protocols.base import Preview
from sammed.evaluation.summary import by_group, class_order, tracks_of
from sammed.io.atomic import atomic_path

__all__ = ["plot_curves", "plot_montage", "MONTAGE_EACH"]

MONTAGE_EACH = 4  # best and worst panels each
MAX_LEGEND = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_curves(path: Path, rows: Sequence[Mapping[str, Any]], tolerance_mm: float, title: str) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = class_order(rows)
    tracks = tracks_of(rows)
    colours = plt.get_cmap("tab20")
    for ax, column, label in ((axes[0], "dice", "Dice"), (axes[1], "nsd", f"NSD ({tolerance_mm:g} mm)")):
        stats = by_group(rows, ("class_name", "track", "interaction"), column)
        for ci, name in enumerate(names):
            for ti, track in enumerate(tracks):
                points = sorted((k[2], s.mean) for k, s in stats.items() if k[0] == name and k[1] == track)
                if not points:
                    continue
                x, y = zip(*points)
                legend = name if len(tracks) == 1 else f"{name} ({track})"
                ax.plot(x, y, marker="o" if len(points) > 1 else "s", color=colours(ci % 20), alpha=0.8,
                        markersize=4, linestyle=["-", "--", ":"][ti % 3] if len(points) > 1 else "none", label=legend)
        overall = by_group(rows, ("track", "interaction"), column)
        for track in tracks:
            points = sorted((k[1], s.mean) for k, s in overall.items() if k[0] == track)
            x, y = zip(*points)
            ax.plot(x, y, "-o" if len(points) > 1 else "D", color="black", linewidth=2.5,
                    label="all classes" + ("" if len(tracks) == 1 else f" ({track})"))
        ax.set_xlabel("interaction")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({int(r["interaction"]) for r in rows}))
    if len(names) * len(tracks) <= MAX_LEGEND:
        axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return path


def _final_dice(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, Mapping[str, Any]]]:
    """(final Dice, row) per case x class of the last track (the interactive one)."""
    track = tracks_of(rows)[-1]
    last: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        key = (r["case"], str(r["class"]))
        if r["track"] == track and (key not in last or int(r["interaction"]) > int(last[key]["interaction"])):
            last[key] = r
    return sorted(((float(r["dice"]), r) for r in last.values() if not math.isnan(float(r["dice"]))),
                  key=lambda item: item[0])


def _window(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def plot_montage(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    previews_of: Callable[[str], Mapping[str, Preview]],
    title: str,
) -> Path | None:
    """Best and worst case x class by final Dice; None when no cut is stored."""
    ranked = _final_dice(rows)
    if not ranked:
        return None
    best = ranked[::-1][: min(MONTAGE_EACH, (len(ranked) + 1) // 2)]
    worst = ranked[: min(MONTAGE_EACH, len(ranked) // 2)]
    panels = [("best", d, r) for d, r in best] + [("worst", d, r) for d, r in worst]
    cache: dict[str, Mapping[str, Preview]] = {}
    found = []
    for kind, d, r in panels:
        if r["case"] not in cache:
            cache[r["case"]] = previews_of(r["case"])
        preview = cache[r["case"]].get(str(r["class"]))
        if preview is not None:
            found.append((kind, d, r, preview))
    if not found:
        return None
    plt = _pyplot()
    columns = min(4, len(found))
    lines = math.ceil(len(found) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (kind, d, r, p) in zip(axes.ravel(), found):
        ax.imshow(_window(p.image), cmap="gray", interpolation="nearest")
        for mask, colour in ((p.gt, "lime"), (p.pred, "magenta")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(f"{kind}: {r['case']}\n{r['class_name']}  Dice {d:.3f}", fontsize=8)
    fig.suptitle(f"{title}  (green: ground truth, magenta: prediction)", fontsize=9)
    _save(fig, path)
    plt.close(fig)
    return path
