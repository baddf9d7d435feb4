"""Crash-safe storage of finished cases, which is what lets an interrupted run resume.

Each process appends one JSON line per finished case to its own file ``OUT/parts/*.jsonl``
(flushed and fsynced before the next case starts) after writing that case's montage cuts to
``OUT/previews/``. A line is the commit marker of its case: a run killed mid-case leaves no line
(or a truncated one, which is ignored), so that case is simply computed again. On start every
process reads all part files; cases with a complete line are not recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sammed.evaluation.protocols.base import Preview
from sammed.io.atomic import atomic_path

__all__ = ["CaseStore", "read_finished", "preview_path", "load_previews"]

PARTS_DIR = "parts"
PREVIEWS_DIR = "previews"


def _safe_name(case_id: str) -> str:
    """A file name for a case id (ids of the SAM-Med3D layout contain slashes)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id)[:80]
    return f"{readable}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"


def preview_path(out_dir: Path, case_id: str) -> Path:
    return out_dir / PREVIEWS_DIR / f"{_safe_name(case_id)}.npz"


def _save_previews(path: Path, previews: Mapping[str, Preview]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for index, (key, p) in enumerate(previews.items()):
        arrays[f"{index}_key"] = np.array(key)
        arrays[f"{index}_image"], arrays[f"{index}_gt"], arrays[f"{index}_pred"] = p.image, p.gt, p.pred
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_previews(out_dir: Path, case_id: str) -> dict[str, Preview]:
    """The montage cuts stored for a case ({} if none, e.g. written on another node)."""
    path = preview_path(out_dir, case_id)
    if not path.is_file():
        return {}
    with np.load(path) as data:
        count = sum(1 for name in data.files if name.endswith("_key"))
        return {
            str(data[f"{i}_key"]): Preview(data[f"{i}_image"], data[f"{i}_gt"], data[f"{i}_pred"])
            for i in range(count)
        }


class CaseStore:
    """This process's append-only record of finished cases."""

    def __init__(self, out_dir: Path, rank: int) -> None:
        self.out_dir = out_dir
        self.path = out_dir / PARTS_DIR / f"rank{rank}-{secrets.token_hex(4)}.jsonl"

    def add(self, case_id: str, rows: list[dict[str, Any]], previews: Mapping[str, Preview], notes: list[str]) -> None:
        if previews:
            _save_previews(preview_path(self.out_dir, case_id), previews)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"case": case_id, "rows": rows, "notes": notes}, allow_nan=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _records(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that case runs again
        if isinstance(record, dict) and "case" in record and isinstance(record.get("rows"), list):
            yield record


def read_finished(out_dir: Path) -> dict[str, dict[str, Any]]:
    """case id -> its record, from every part file present (first record of a case wins)."""
    finished: dict[str, dict[str, Any]] = {}
    for part in sorted((out_dir / PARTS_DIR).glob("*.jsonl")):
        with open(part, encoding="utf-8") as handle:
            for record in _records(handle):
                finished.setdefault(record["case"], record)
    return finished
