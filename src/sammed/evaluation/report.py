"""The files of an evaluation report: ``results.csv``, ``results.json`` and ``summary.md``.

``results.csv`` has one row per case x class x track x interaction (interactions counted from
1); floats keep full precision, NaN is ``nan`` and an infinite HD95 ``inf``. ``results.json``
holds the same rows (NaN as ``null``, infinity as ``"inf"``) with the run settings and column
meanings. ``summary.md`` is for people: mean ± sd per class and interaction, protocol-specific
scores, wall time per case and the plots.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sammed.evaluation.metrics import HD_PERCENTILE
from sammed.evaluation.summary import auc_trapezoid, by_group, class_order, stat, tracks_of
from sammed.io.atomic import write_text_atomic

__all__ = ["write_csv", "write_json", "write_summary", "COLUMN_HELP", "EMPTY_MASK_CONVENTIONS"]

COLUMN_HELP = {
    "case": "case identifier (nnU-Net case id, image stem, or path below the dataset root)",
    "class": "label value (label maps) or mask key (per-object 2D masks)",
    "class_name": "readable class name (dataset.json, SAM-Med3D class folder, or mask name)",
    "track": "independent prompt sequence of the protocol (sam-med2d: 'box' and 'points')",
    "interaction": "interaction number, counted from 1",
    "prompt": "prompt added at this interaction: box, click+ (positive), click- (negative), empty if none",
    "coords": "coordinates of that prompt, in the frame named by coords_frame",
    "dice": "Dice coefficient",
    "iou": "intersection over union",
    "nsd": "normalised surface Dice at nsd_tolerance_mm (DeepMind definition)",
    "hd95": f"{HD_PERCENTILE:g}th percentile Hausdorff distance, mm (pixels for 2D images)",
    "gt_voxels": "ground-truth voxels of the class",
    "pred_voxels": "predicted voxels of the class",
    "time_s": "wall seconds to produce this interaction's prediction",
    "case_time_s": "wall seconds of the whole case (all classes and interactions, metrics included)",
    "note": "why a prompt was skipped or refused, if it was",
    "dice_best": "best Dice over the interactions so far (the paper's per-case score)",
}
EMPTY_MASK_CONVENTIONS = "both masks empty: all metrics NaN; one empty: Dice = IoU = NSD = 0, HD95 = inf"


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return value


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c, "")) for c in columns])
    write_text_atomic(path, buffer.getvalue())


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], run: Mapping[str, Any]) -> None:
    document = {
        "run": dict(run),
        "columns": {c: COLUMN_HELP.get(c, "") for c in columns},
        "empty_mask_conventions": EMPTY_MASK_CONVENTIONS,
        "rows": [{c: _json_value(row.get(c)) for c in columns} for row in rows],
    }
    write_text_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- Markdown


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines + [""]


def _per_class_table(rows: Sequence[Mapping[str, Any]], column: str) -> list[str]:
    interactions = sorted({int(r["interaction"]) for r in rows})
    stats = by_group(rows, ("class_name", "track", "interaction"), column)
    body = []
    for name in class_order(rows):
        for track in tracks_of(rows):
            cells = [stats.get((name, track, i)) for i in interactions]
            if all(c is None for c in cells):
                continue
            body.append([name, track, *("" if c is None else c.text() for c in cells)])
    return _table(["class", "track", *map(str, interactions)], body)


def _overall_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    body = []
    columns = ("dice", "iou", "nsd", "hd95", "time_s")
    stats = {c: by_group(rows, ("track", "interaction"), c) for c in columns}
    for key in stats["dice"]:
        track, interaction = key
        body.append([track, interaction, *(stats[c][key].text(2 if c in ("hd95", "time_s") else 3) for c in columns),
                     stats["dice"][key].n])
    return _table(["track", "interaction", "Dice", "IoU", "NSD", "HD95 (mm)", "time/interaction (s)", "n"], body)


def _final_rows(rows: Sequence[Mapping[str, Any]], track: str) -> list[Mapping[str, Any]]:
    """The last interaction of ``track`` for every case x class."""
    last: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        if r["track"] == track:
            key = (r["case"], str(r["class"]))
            if key not in last or int(r["interaction"]) > int(last[key]["interaction"]):
                last[key] = r
    return list(last.values())


def _series(rows: Sequence[Mapping[str, Any]], column: str) -> dict[tuple, list[float]]:
    """case x class -> values of ``column`` in interaction order."""
    series: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault((r["case"], r["class_name"], str(r["class"])), []).append((int(r["interaction"]), r[column]))
    return {k: [v for _, v in sorted(vals)] for k, vals in series.items()}


def _cvpr25_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    dsc, nsd, times = _series(rows, "dice"), _series(rows, "nsd"), _series(rows, "time_s")
    per_class: dict[str, dict[str, list[float]]] = {}
    for key, values in dsc.items():
        clicks = len(values) - 1
        entry = per_class.setdefault(key[1], {m: [] for m in ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "time")})
        entry["DSC_AUC"].append(auc_trapezoid(values[-clicks:]) if clicks else math.nan)
        entry["NSD_AUC"].append(auc_trapezoid(nsd[key][-clicks:]) if clicks else math.nan)
        entry["DSC_Final"].append(values[-1])
        entry["NSD_Final"].append(nsd[key][-1])
        entry["time"].append(float(np.mean(times[key])))
    body = [[name, *(stat(v[m]).text() for m in ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "time"))]
            for name, v in per_class.items()]
    lines = ["## CVPR 2025 challenge scores", "",
             "AUCs are trapezoids over the click interactions only (x = 0, 1, ...; the box is left out, "
             "as in the challenge), per class; time is the mean seconds per interaction.", ""]
    return lines + _table(["class", "DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "time/interaction (s)"], body)


def _paper_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    final = _final_rows(rows, "clicks")
    stats = by_group(final, ("class_name",), "dice_best")
    body = [[name[0], s.text(), s.n] for name, s in stats.items()]
    body.append(["all", stat(r["dice_best"] for r in final).text(), len(final)])
    return ["## Paper score (best Dice over the rounds, on the 128^3 ROI)", ""] + _table(["class", "Dice", "n"], body)


def _med2d_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[tuple[str, list[Mapping[str, Any]]]] = [("Bbox", [r for r in rows if r["track"] == "box"])]
    for k in (1, 3, 5):
        picked = [r for r in rows if r["track"] == "points" and int(r["interaction"]) == k]
        if picked:
            columns.append((f"{k} pt" + ("s" if k > 1 else ""), picked))
    body = []
    for name in class_order(rows) + ["all"]:
        cells = [stat(r["dice"] for r in picked if name in ("all", r["class_name"])).text() for _, picked in columns]
        body.append([name, *cells])
    return ["## SAM-Med2D table (Dice)", ""] + _table(["class", *(c for c, _ in columns)], body)


_SECTIONS = {"cvpr25": _cvpr25_section, "sam-med3d-paper": _paper_section, "sam-med2d": _med2d_section}


def _case_times(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {r["case"]: float(r["case_time_s"]) for r in rows}


def write_summary(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    run: Mapping[str, Any],
    plots: Sequence[str],
    notes: Sequence[str],
) -> None:
    protocol = str(run.get("protocol", ""))
    tolerance = run.get("nsd_tolerance_mm")
    lines = [f"# Evaluation: {protocol}", ""]
    facts = [
        ("model", run.get("model")),
        ("checkpoint", run.get("checkpoint_name")),
        ("dataset", f"{run.get('dataset')} ({run.get('layout')})"),
        ("cases", f"{len({r['case'] for r in rows})} ({run.get('cases_resumed', 0)} resumed from an earlier run)"),
        ("clicks", run.get("clicks")),
        ("seed", run.get("seed")),
        ("NSD tolerance", f"{tolerance} mm"),
        ("processes x threads", f"{run.get('world_size', 1)} x {run.get('threads', '?')}"),
        ("sammed", run.get("sammed_version")),
    ]
    lines += [f"- **{k}**: {v}" for k, v in facts] + [""]
    if not rows:
        write_text_atomic(path, "\n".join(lines + ["No rows: no case had a selected class.", ""]))
        return
    lines += ["Values are mean ± sd over cases (n in the overall table); " + EMPTY_MASK_CONVENTIONS +
              " (NaN is left out of means, inf out of the HD95 mean and counted).", ""]
    lines += ["## Dice per class and interaction", ""] + _per_class_table(rows, "dice")
    lines += [f"## NSD ({tolerance} mm) per class and interaction", ""] + _per_class_table(rows, "nsd")
    lines += ["## All classes per interaction", ""] + _overall_table(rows)
    if protocol in _SECTIONS:
        lines += _SECTIONS[protocol](rows)
    times = _case_times(rows)
    t = stat(times.values())
    values = sorted(times.values())
    lines += ["## Wall time per case", "",
              f"mean {t.mean:.2f} s, median {values[len(values) // 2]:.2f} s, max {values[-1]:.2f} s, "
              f"total {sum(values):.1f} s over {len(values)} cases (column `case_time_s`).", ""]
    lines += _table(["case", "seconds"], [[case, f"{sec:.2f}"] for case, sec in times.items()])
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    write_text_atomic(path, "\n".join(lines))
