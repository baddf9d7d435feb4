"""Runner mechanics with a model-free protocol: resume, refusal, report files and formats."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sammed.errors import SammedError
from sammed.evaluation import EvalCase, EvalDataset, EvalSettings, Protocol, run_evaluation
from sammed.evaluation.protocols.base import CaseResult, Preview, Target, make_row

SETTINGS = EvalSettings(interactions=3, seed=7, nsd_tolerance_mm=1.0)


class CountingProtocol(Protocol):
    """Deterministic rows from the case id; counts which cases it really ran."""

    name = "counting"
    dims = 3

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run_case(self, model, case, settings) -> CaseResult:
        self.ran.append(case.case_id)
        rng = np.random.RandomState(int(case.case_id[-2:]) + settings.seed)
        result = CaseResult()
        for key, name in ((1, "liver"), (2, "spleen")):
            for k in range(1, settings.interactions + 1):
                value = float(rng.rand())
                metrics = {"dice": value, "iou": value / (2 - value), "nsd": math.nan if key == 2 and k == 1 else value,
                           "hd95": math.inf if key == 2 else 3.5, "gt_voxels": 10, "pred_voxels": 0 if key == 2 else 9}
                result.rows.append(make_row(case.case_id, Target(key, name), "clicks", k, "click+", (k, 2, 3),
                                            metrics, 0.01))
            gt = np.zeros((8, 8), dtype=bool)
            gt[2:6, 2:6] = True
            result.previews[str(key)] = Preview(np.arange(64, dtype=np.float32).reshape(8, 8), gt, np.roll(gt, key))
        result.notes.append(f"ran {case.case_id}")
        return result


def _dataset(tmp_path: Path, n: int = 3) -> EvalDataset:
    cases = tuple(EvalCase(f"case{i:02d}", tmp_path / f"img{i}.nii.gz", label=tmp_path / f"lab{i}.nii.gz")
                  for i in range(n))
    return EvalDataset(tmp_path, "nnunet", 3, cases, {1: "liver", 2: "spleen"})


class _Model:
    def eval(self):
        return self


def _run(protocol, tmp_path, out, **kwargs):
    return run_evaluation(_Model(), _dataset(tmp_path), protocol, kwargs.pop("settings", SETTINGS), out,
                          run_info={"model": "fake", "checkpoint_sha256": "abc"}, progress=False, **kwargs)


def _strip(rows):
    """Rows without the timing columns, NaN made comparable."""
    def plain(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [{k: plain(v) for k, v in r.items() if k not in ("time_s", "case_time_s")} for r in rows]


def test_report_files_and_formats(tmp_path):
    report = _run(CountingProtocol(), tmp_path, tmp_path / "out")
    out = tmp_path / "out"
    assert set(report.files) == {"csv", "json", "summary", "curves", "montage"}
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2 * 3
    assert list(rows[0])[:5] == ["case", "class", "class_name", "track", "interaction"]
    assert [r["interaction"] for r in rows[:3]] == ["1", "2", "3"]
    spleen = [r for r in rows if r["class"] == "2"]
    assert spleen[0]["nsd"] == "nan" and all(r["hd95"] == "inf" for r in spleen)
    assert float(rows[0]["dice"]) == report.rows[0]["dice"]  # full precision
    assert all(float(r["case_time_s"]) > 0 for r in rows)
    document = json.loads((out / "results.json").read_text())
    assert document["run"]["protocol"] == "counting" and document["run"]["checkpoint_sha256"] == "abc"
    json_spleen = [r for r in document["rows"] if r["class"] == 2]
    assert json_spleen[0]["nsd"] is None and json_spleen[0]["hd95"] == "inf"
    summary = (out / "summary.md").read_text()
    assert "## Dice per class and interaction" in summary and "| liver | clicks |" in summary
    assert "![curves](plots/curves.png)" in summary and "## Wall time per case" in summary
    assert "case01: ran case01" in summary
    for name in ("curves.png", "montage.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_runs_only_missing_cases(tmp_path):
    full = _run(CountingProtocol(), tmp_path, tmp_path / "full")
    first = CountingProtocol()
    partial = _run(first, tmp_path, tmp_path / "resumed", max_cases=1)
    assert first.ran == ["case00"] and partial.cases == 1
    second = CountingProtocol()
    resumed = _run(second, tmp_path, tmp_path / "resumed")
    assert second.ran == ["case01", "case02"] and resumed.cases_resumed == 1
    assert _strip(resumed.rows) == _strip(full.rows)


def test_crash_mid_write_is_recomputed(tmp_path):
    out = tmp_path / "out"
    _run(CountingProtocol(), tmp_path, out)
    part = next((out / "parts").glob("*.jsonl"))
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # last case cut short
    again = CountingProtocol()
    report = _run(again, tmp_path, out)
    assert again.ran == ["case02"] and report.cases == 3


def test_other_settings_or_foreign_folder_refused(tmp_path):
    out = tmp_path / "out"
    _run(CountingProtocol(), tmp_path, out)
    other = EvalSettings(interactions=2, seed=7, nsd_tolerance_mm=1.0)
    with pytest.raises(SammedError, match=r"other settings \(clicks: 3 -> 2\)"):
        _run(CountingProtocol(), tmp_path, out, settings=other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SammedError, match="not an evaluation folder"):
        _run(CountingProtocol(), tmp_path, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_dimension_mismatch_refused(tmp_path):
    protocol = CountingProtocol()
    protocol.dims = 2
    with pytest.raises(SammedError, match="for 2D data but the dataset is 3D"):
        _run(protocol, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
