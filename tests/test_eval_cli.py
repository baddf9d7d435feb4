"""``sammed eval`` end to end: a small nnU-Net dataset, the tiny fixture model, 1 and 2 processes.

The dataset is built in tmp_path from ../shared/data/totalsegmentator_examples (symlinks): the small
CT and MR examples, two classes. The 2-process run goes through ``torchrun`` with the gloo backend
on CPU and must write exactly the rows of the 1-process run (timing columns aside). Both runs use
one thread per process: float sums depend on the thread count, and with a random-weight model a
flipped boundary voxel changes the next simulated click.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sammed.cli import main
from test_evaluation_datasets import make_nnunet

pytest.importorskip("torchio")

TIMING = {"time_s", "case_time_s"}
ARGS = ["--model", "sam-med3d-tiny", "--protocol", "sam-med3d-official", "--clicks", "2", "--classes", "1", "2",
        "--no-progress"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _sammed(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sammed", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def dataset(data_dir, tmp_path_factory) -> Path:
    return make_nnunet(tmp_path_factory.mktemp("nnunet") / "Dataset900_Small", data_dir / "totalsegmentator_examples")


@pytest.fixture(scope="module")
def single_run(dataset, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "single"
    done = _sammed("eval", *ARGS, "--checkpoint", str(tiny_checkpoint), "--dataset", str(dataset), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out, done


def test_writes_every_report_file(single_run):
    out, done = single_run
    for name in ("results.csv", "results.json", "summary.md", "plots/curves.png", "plots/montage.png"):
        assert (out / name).is_file(), name
    rows = _rows(out)
    assert [(r["case"], r["class"], r["interaction"]) for r in rows] == [
        (case, cls, k) for case in ("ct01", "mr01") for cls in ("1", "2") for k in ("1", "2")]
    assert {r["class_name"] for r in rows} == {"spleen", "kidney_right"}
    assert all(0.0 <= float(r["dice"]) <= 1.0 and float(r["hd95"]) >= 0 for r in rows)
    with open(out / "results.csv", newline="") as handle:
        timing = list(csv.DictReader(handle))
    assert all(float(r["time_s"]) > 0 and float(r["case_time_s"]) >= float(r["time_s"]) for r in timing)
    document = json.loads((out / "results.json").read_text())
    assert document["run"]["model"] == "sam-med3d-tiny" and len(document["rows"]) == len(rows)
    assert document["run"]["threads"] == 1 and "1 x 1" in (out / "summary.md").read_text()
    assert "interaction 2: Dice" in done.stderr and "2 cases (0 resumed)" in done.stderr


def test_torchrun_two_processes_equal_one(single_run, dataset, tiny_checkpoint, tmp_path):
    out = tmp_path / "sharded"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sammed", "eval", *ARGS, "--checkpoint", str(tiny_checkpoint), "--dataset", str(dataset),
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _rows(out) == _rows(single_run[0])
    parts = sorted(p.name.split("-")[0] for p in (out / "parts").glob("*.jsonl"))
    assert parts == ["rank0", "rank1"]  # both ranks did a case
    assert json.loads((out / "results.json").read_text())["run"]["world_size"] == 2


def test_rerun_resumes(single_run, dataset, tiny_checkpoint):
    out, _ = single_run
    before = _rows(out)
    done = _sammed("eval", *ARGS, "--checkpoint", str(tiny_checkpoint), "--dataset", str(dataset), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "2 cases (2 resumed)" in done.stderr and _rows(out) == before


@pytest.mark.parametrize(
    "change, message",
    [
        (["--protocol", "nope"], "unknown protocol 'nope'"),
        (["--protocol", "sam-med2d"], "needs a 2D model"),
        (["--protocol", "clicks-3", "--clicks", "4"], "asks for 3 clicks"),
        (["--classes", "pancreas"], "unknown class pancreas"),
        (["--checkpoint", "/nonexistent/weights.pth"], "checkpoint not found"),
    ],
)
def test_bad_input_is_one_line(change, message, dataset, tiny_checkpoint, tmp_path, capsys):
    args = ["eval", *ARGS, "--checkpoint", str(tiny_checkpoint), "--dataset", str(dataset), "--out",
            str(tmp_path / "out"), *change]
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sammed: error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_other_settings_into_same_out_refused(single_run, dataset, tiny_checkpoint, capsys):
    out, _ = single_run
    before = (out / "results.csv").read_bytes()
    args = ["eval", *ARGS[:4], "--clicks", "3", "--classes", "1", "2", "--no-progress",
            "--checkpoint", str(tiny_checkpoint), "--dataset", str(dataset), "--out", str(out)]
    assert main(args) == 2
    assert "holds a run with other settings (clicks: 2 -> 3)" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before
