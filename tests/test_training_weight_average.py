"""Weighted averages of checkpoints: the arithmetic, the refusals, and a real model file round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sammed.errors import CheckpointError, SammedError
from sammed.training.checkpointing import load_training_state, save_checkpoint
from sammed.training.weight_average import average_state_dicts, main, normalised_weights, parse_weighted_path


def _state(value: float, dtype=torch.float32) -> dict:
    return {"w": torch.full((2, 3), value, dtype=dtype), "b": torch.tensor([value, -value], dtype=dtype),
            "count": torch.tensor([7], dtype=torch.long)}


def _file(path, value: float, dtype=torch.float32, name="sammed-demo-3d"):
    save_checkpoint(path, {"model_state_dict": _state(value, dtype), "model_name": name, "config": {"v": value}})
    return path


def test_weighted_mean_is_computed_key_by_key_and_normalised():
    out = average_state_dicts([_state(1.0), _state(3.0)], [1.0, 3.0])  # weights 0.25, 0.75
    assert torch.allclose(out["w"], torch.full((2, 3), 2.5))
    assert torch.allclose(out["b"], torch.tensor([2.5, -2.5]))
    assert torch.equal(out["count"], torch.tensor([7]))


def test_float16_inputs_give_float32_output():
    out = average_state_dicts([_state(0.1, torch.float16), _state(0.3, torch.float16)], [1, 1])
    assert out["w"].dtype == torch.float32
    expected = (torch.tensor(0.1, dtype=torch.float16).double() + torch.tensor(0.3, dtype=torch.float16).double()) / 2
    assert abs(float(out["w"][0, 0]) - float(expected)) < 1e-7


@pytest.mark.parametrize("other, fragment", [
    ({"w": torch.zeros(2, 3), "b": torch.zeros(2)}, "other parameters"),
    ({"w": torch.zeros(3, 2), "b": torch.zeros(2), "count": torch.tensor([7])}, r"shape \(3, 2\) in checkpoint 2"),
    ({"w": torch.zeros(2, 3), "b": torch.zeros(2), "count": torch.tensor([8])}, "integer buffer"),
])
def test_incompatible_states_are_refused(other, fragment):
    with pytest.raises(CheckpointError, match=fragment):
        average_state_dicts([_state(1.0), other], [1, 1])


@pytest.mark.parametrize("weights", [[], [-1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(SammedError):
        normalised_weights(weights)


def test_ddp_prefixes_and_other_layouts_are_read_like_the_model_loaders(tmp_path):
    a = _file(tmp_path / "a.pth", 1.0)
    save_checkpoint(tmp_path / "ddp.pth", {"model": {f"module.{k}": v for k, v in _state(3.0).items()}})
    assert main([str(a), str(tmp_path / "ddp.pth"), "--out", str(tmp_path / "avg.pth")]) == 0
    state = load_training_state(tmp_path / "avg.pth")
    assert set(state["model_state_dict"]) == {"w", "b", "count"}
    assert torch.allclose(state["model_state_dict"]["w"], torch.full((2, 3), 2.0))
    assert state["model_name"] == "sammed-demo-3d"


def test_exclusive_write_never_replaces_a_file_made_meanwhile(tmp_path):
    """The existence check runs before minutes of loading; the final link refuses a file that
    appeared in between (os.replace would have silently replaced it)."""
    from sammed.io.atomic import atomic_path

    target = tmp_path / "out.pth"
    with pytest.raises(FileExistsError):
        with atomic_path(target, exclusive=True) as temporary:
            temporary.write_bytes(b"new")
            target.write_bytes(b"made by someone else")
    assert target.read_bytes() == b"made by someone else"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pth"]  # no temporary left
    fresh = tmp_path / "fresh.pth"
    with atomic_path(fresh, exclusive=True) as temporary:
        temporary.write_bytes(b"x")
    assert fresh.read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == ["fresh.pth", "out.pth"]


def test_weighted_path_parsing():
    assert parse_weighted_path("a.pth") == ("a.pth", None)
    assert parse_weighted_path("a.pth=0.25") == ("a.pth", 0.25)
    assert parse_weighted_path("run=3/a.pth=2") == ("run=3/a.pth", 2.0)
    with pytest.raises(SammedError, match="must be a number"):
        parse_weighted_path("a.pth=x")
    with pytest.raises(SammedError, match="no checkpoint"):
        parse_weighted_path("=1")


def test_cli_writes_the_average_with_a_traceable_note(tmp_path, capsys):
    a, b = _file(tmp_path / "a.pth", 1.0), _file(tmp_path / "b.pth", 3.0)
    out = tmp_path / "avg.pth"
    assert main([f"{a}=0.75", f"{b}=0.25", "--out", str(out)]) == 0
    state = load_training_state(out)
    assert torch.allclose(state["model_state_dict"]["w"], torch.full((2, 3), 1.5))
    assert state["config"] == {"v": 1.0} and state["model_name"] == "sammed-demo-3d"
    sources = state["note"]["average_of"]
    assert [s["file"] for s in sources] == ["a.pth", "b.pth"]
    assert [s["weight"] for s in sources] == [0.75, 0.25]
    assert all(len(s["sha256"]) == 64 for s in sources)
    assert main([str(a), str(b), "--out", str(tmp_path / "equal.pth")]) == 0  # no weights: equal
    assert torch.allclose(load_training_state(tmp_path / "equal.pth")["model_state_dict"]["w"], torch.full((2, 3), 2.0))


@pytest.mark.parametrize("case", ["exists", "alias", "mixed", "negative", "text", "missing", "models", "shapes",
                                  "keys", "nan", "out-in-file", "not-weights"])
def test_cli_refuses_with_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    a, b = _file(tmp_path / "a.pth", 1.0), _file(tmp_path / "b.pth", 3.0)
    out = tmp_path / "avg.pth"
    args = {
        "exists": [str(a), str(b), "--out", str(b)],
        "alias": [str(a), str(b), "--out", str(tmp_path / "." / "a.pth")],
        "mixed": [f"{a}=1", str(b), "--out", str(out)],
        "negative": [f"{a}=-1", f"{b}=2", "--out", str(out)],
        "text": [f"{a}=half", str(b), "--out", str(out)],
        "missing": [str(a), str(tmp_path / "nope.pth"), "--out", str(out)],
        "models": [str(a), str(_file(tmp_path / "c.pth", 2.0, name="sam-med3d-turbo")), "--out", str(out)],
        "shapes": [str(a), "--out", str(out)],
        "keys": [str(a), "--out", str(out)],
        "nan": [str(a), "--out", str(out)],
        "out-in-file": [str(a), str(b), "--out", str(a / "avg.pth")],
        "not-weights": [str(a), "--out", str(out)],
    }[case]
    other = {
        "shapes": {**_state(1.0), "w": torch.zeros(3, 2)},
        "keys": {"w": torch.zeros(2, 3), "b": torch.zeros(2)},
        "nan": {**_state(1.0), "b": torch.tensor([float("nan"), 0.0])},
        "not-weights": {"w": np.zeros((2, 3))},
    }.get(case)
    if other is not None:
        save_checkpoint(tmp_path / "d.pth", {"model_state_dict": other, "model_name": "sammed-demo-3d"})
        args.insert(1, str(tmp_path / "d.pth"))
    fragment = {"exists": "exists", "alias": "exists", "mixed": "every checkpoint", "negative": ">= 0",
                "text": "must be a number", "missing": "not found", "models": "different models",
                "shapes": "shape (3, 2)", "keys": "other parameters", "nan": "NaN",
                "out-in-file": "cannot write", "not-weights": "no state dict"}[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weight_average: error:") and fragment in err[0], err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bundled_model_averaged_with_itself_loads_and_segments_the_same(tmp_path):
    """A real file end to end: the average of the shipped weights with themselves is the shipped
    model (float16 values are exact in float32), and build_model loads it strictly."""
    from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
    from sammed.inference import Session
    from sammed.io import read_image
    from sammed.models import build_model, get_model_spec

    bundled = get_model_spec("sammed-demo-3d").bundled_path
    assert bundled is not None
    out = tmp_path / "self_average.pth"
    assert main([f"{bundled}=0.3", f"{bundled}=0.7", "--out", str(out)]) == 0
    image = read_image(SAMPLE_CT)
    reference = Session(build_model("sammed-demo-3d"), image).add_point(tuple(SAMPLE_CT_LIVER_VOXEL))
    averaged = Session(build_model("sammed-demo-3d", checkpoint=str(out)), image).add_point(tuple(SAMPLE_CT_LIVER_VOXEL))
    assert reference.sum() > 0
    assert np.array_equal(reference, averaged)
