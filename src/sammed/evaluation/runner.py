"""Running a protocol over a dataset: sharding, resuming, timing and writing the report.

Cases are dealt round-robin over the processes of a ``torchrun`` job (after removing the cases
an earlier run already finished), each process records its finished cases as it goes
(:mod:`sammed.evaluation.store`), and rank 0 gathers every row and writes one report. Results do
not depend on the number of processes: every case is seeded on its own and runs the same code.

``OUT/run.json`` records what was evaluated; rerunning into the same folder with the same
settings resumes, with other settings it is refused (``--max-cases`` and the device may change).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from torch import nn

from sammed import __version__
from sammed.errors import SammedError
from sammed.evaluation.datasets import EvalCase, EvalDataset
from sammed.evaluation.distributed import DistContext
from sammed.evaluation.plots import plot_curves, plot_montage
from sammed.evaluation.protocols import EvalSettings, Protocol
from sammed.evaluation.report import write_csv, write_json, write_summary
from sammed.evaluation.store import CaseStore, load_previews, read_finished
from sammed.io.atomic import write_text_atomic

__all__ = ["EvalReport", "run_evaluation", "RUN_FILE"]

RUN_FILE = "run.json"
# Settings that define a run; a resumed run must match them exactly.
IDENTITY_KEYS = ("protocol", "clicks", "seed", "classes", "nsd_tolerance_mm", "model", "checkpoint_sha256",
                 "dataset", "layout")


@dataclass
class EvalReport:
    """What rank 0 wrote: the rows and the report files."""

    out_dir: Path
    rows: list[dict[str, Any]]
    files: dict[str, Path]
    cases: int
    cases_resumed: int
    notes: list[str] = field(default_factory=list)


def _identity(protocol: Protocol, settings: EvalSettings, dataset: EvalDataset, run_info: Mapping[str, Any]) -> dict:
    return {
        "protocol": protocol.name,
        "clicks": settings.interactions,
        "seed": settings.seed,
        "classes": list(settings.classes) if settings.classes is not None else None,
        "nsd_tolerance_mm": settings.nsd_tolerance_mm,
        "model": run_info.get("model"),
        "checkpoint_sha256": run_info.get("checkpoint_sha256"),
        "dataset": str(Path(dataset.root).resolve()),
        "layout": dataset.layout,
    }


def _claim_out_dir(out_dir: Path, identity: Mapping[str, Any]) -> Optional[str]:
    """Check ``out_dir`` can hold this run (write ``run.json``); the problem as text, or None."""
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError):
            return f"{run_file} is unreadable; remove it or choose another --out"
        changed = [k for k in IDENTITY_KEYS if previous.get(k) != identity.get(k)]
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in changed)
            return f"{out_dir} holds a run with other settings ({details}); choose another --out"
        return None
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        return f"{out_dir} exists and is not an evaluation folder of sammed; choose another --out"
    try:
        write_text_atomic(run_file, json.dumps(dict(identity), indent=1) + "\n")
    except OSError as exc:
        return f"cannot write to {out_dir}: {exc.strerror or exc}"
    return None


def _progress(cases: Sequence[EvalCase], enabled: bool, label: str) -> Iterable[EvalCase]:
    if not enabled or not cases:
        yield from cases
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sammed.console import console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=len(cases))
        for case in cases:
            bar.update(task, description=f"{label} {case.case_id}")
            yield case
            bar.advance(task)


def _ordered_rows(records: Mapping[str, Mapping[str, Any]], cases: Sequence[EvalCase]) -> list[dict[str, Any]]:
    """Rows by dataset case order, then track, class and interaction (stable within a case)."""
    rows: list[dict[str, Any]] = []
    for case in cases:
        record = records.get(case.case_id)
        if record is None:
            continue
        case_rows = list(record["rows"])
        tracks = list(dict.fromkeys(r["track"] for r in case_rows))
        classes = list(dict.fromkeys(str(r["class"]) for r in case_rows))
        case_rows.sort(key=lambda r: (tracks.index(r["track"]), classes.index(str(r["class"])), int(r["interaction"])))
        rows.extend(case_rows)
    return rows


def run_evaluation(
    model: nn.Module,
    dataset: EvalDataset,
    protocol: Protocol,
    settings: EvalSettings,
    out_dir: str | Path,
    *,
    run_info: Optional[Mapping[str, Any]] = None,
    max_cases: Optional[int] = None,
    progress: bool = True,
) -> Optional[EvalReport]:
    """Evaluate ``model`` with ``protocol`` on ``dataset`` into ``out_dir``.

    Under ``torchrun`` every process calls this; rank 0 returns the report, the others None.
    ``run_info`` may carry ``model``, ``checkpoint_name`` and ``checkpoint_sha256`` for the report.
    """
    if protocol.dims != dataset.dims:
        raise SammedError(f"protocol {protocol.name} is for {protocol.dims}D data but the dataset is {dataset.dims}D")
    protocol.requires()
    out = Path(out_dir).expanduser()
    info = dict(run_info or {})
    cases = list(dataset.cases[:max_cases] if max_cases is not None else dataset.cases)
    identity = _identity(protocol, settings, dataset, info)
    dist = DistContext.from_env()
    try:
        problem = dist.broadcast(_claim_out_dir(out, identity) if dist.is_root else None)
        if problem:
            raise SammedError(problem)
        wanted = {c.case_id for c in cases}
        finished = {k: v for k, v in read_finished(out).items() if k in wanted}
        done = set().union(*map(set, dist.all_gather(sorted(finished))))
        todo = [c for c in cases if c.case_id not in done]
        mine = todo[dist.rank :: dist.world_size]
        store = CaseStore(out, dist.rank)
        label = f"{protocol.name}" + (f" [rank 0/{dist.world_size}]" if dist.distributed else "")
        model.eval()
        for case in _progress(mine, progress and dist.is_root, label):
            start = time.perf_counter()
            result = protocol.run_case(model, case, settings)
            elapsed = time.perf_counter() - start
            for row in result.rows:
                row["case_time_s"] = elapsed
            store.add(case.case_id, result.rows, result.previews, result.notes)
            finished[case.case_id] = {"case": case.case_id, "rows": result.rows, "notes": result.notes}
        gathered = dist.gather(finished)
        report = None
        if dist.is_root:
            records: dict[str, Any] = {}
            for part in gathered or []:
                for case_id, record in part.items():
                    records.setdefault(case_id, record)
            run = {**identity, **info, "layout": dataset.layout, "world_size": dist.world_size,
                   "cases_resumed": len(done), "coords_frame": protocol.coords_frame,
                   "device": settings.device, "sammed_version": __version__}
            report = _write_report(out, protocol, records, cases, run)
        dist.barrier()
        return report
    finally:
        dist.close()


def _write_report(
    out: Path, protocol: Protocol, records: Mapping[str, Any], cases: Sequence[EvalCase], run: Mapping[str, Any]
) -> EvalReport:
    rows = _ordered_rows(records, cases)
    notes = [f"{case_id}: {n}" for case_id, r in records.items() for n in r.get("notes", [])]
    files = {"csv": out / "results.csv", "json": out / "results.json", "summary": out / "summary.md"}
    write_csv(files["csv"], rows, protocol.columns)
    write_json(files["json"], rows, protocol.columns, run)
    plots: list[str] = []
    if rows:
        title = f"{run.get('model')} · {protocol.name}"
        files["curves"] = plot_curves(out / "plots" / "curves.png", rows, float(run["nsd_tolerance_mm"]), title)
        plots.append("plots/curves.png")
        montage = plot_montage(out / "plots" / "montage.png", rows, lambda case_id: load_previews(out, case_id), title)
        if montage is not None:
            files["montage"] = montage
            plots.append("plots/montage.png")
    write_summary(files["summary"], rows, run, plots, notes)
    return EvalReport(out, rows, files, len({r["case"] for r in rows}), int(run["cases_resumed"]), notes)
