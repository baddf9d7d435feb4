"""Editing prompts of the 3D Session: initial masks, scribbles, lassos, protected objects, --init-mask.

Geometry and bookkeeping use stand-in models (tests/test_session.py's SphereModel, and a model
that echoes its mask prompt); the command line runs the bundled demo model on a shared volume
with TotalSegmentator's labels of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sammed.cli import main
from sammed.errors import PromptError
from sammed.inference import Session
from sammed.inference.mask_prompt import MASK_PROMPT_LOGIT
from sammed.inference.scribble import SCRIBBLE_POINTS, lasso_fill, sample_polyline
from sammed.io import read_image
from test_session import SphereModel, _FakeModel3D, _synthetic_image


class EchoModel(_FakeModel3D):
    """Returns its mask prompt when it holds any positive cell, else a ball around the newest
    positive click: a mask prompt that never reaches the decoder shows as a ball."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.prompts: list[torch.Tensor] = []
        self.sphere = SphereModel()

    def encode(self, window):
        return torch.zeros(1, 384, 8, 8, 8)

    def decode(self, embedding, coords, labels, mask_input, boxes=None):
        self.prompts.append(mask_input.clone())
        if mask_input is not None and bool((mask_input > 0).any()):
            return mask_input.clone(), torch.ones(1, 1)
        return self.sphere.decode(embedding, coords, labels, mask_input)


def _image():
    return _synthetic_image(np.eye(3), spacing=(1.5, 1.5, 1.5), size=(80, 80, 60))


def _box_mask(shape, low, high) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(low, high))] = True
    return mask


def _snapshot(session: Session) -> tuple:
    return (
        tuple(session.object_ids),
        session.active_object,
        session.can_undo,
        session.can_redo,
        {i: session.mask(i).copy() for i in session.object_ids},
    )


def _same(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and a[4].keys() == b[4].keys() and all(np.array_equal(a[4][k], b[4][k]) for k in a[4])


# --- initial mask ---------------------------------------------------------------------------------


def test_initial_mask_becomes_the_mask_and_centres_the_window() -> None:
    image = _image()
    session = Session(SphereModel(), image)
    seed = _box_mask(image.shape, (20, 30, 10), (41, 51, 31))
    mask = session.add_initial_mask(seed)
    assert mask.shape == image.shape and mask.dtype == bool
    np.testing.assert_array_equal(mask, seed)
    assert session.object_ids == [1]
    state = session.state()
    centre = image.index_to_world((30, 40, 20))
    np.testing.assert_allclose(state.roi.to_index(centre), [64, 64, 64], atol=1e-6)
    prompt = state.low_res[0, 0].numpy()
    assert set(np.unique(prompt)) == {-MASK_PROMPT_LOGIT, MASK_PROMPT_LOGIT}
    # 21 voxels of 1.5 mm = 31.5 mm = 5.25 cells of 6 mm, centred: 5 or 6 positive cells per axis
    for axis in range(3):
        cells = np.flatnonzero((prompt > 0).any(axis=tuple(a for a in range(3) if a != axis)))
        assert 5 <= len(cells) <= 6 and abs(cells.mean() - 15.5) <= 0.5
    session.undo()
    assert session.object_ids == [] and not session.mask().any()
    session.redo()
    np.testing.assert_array_equal(session.mask(), seed)


def test_the_mask_prompt_reaches_the_decoder() -> None:
    image = _image()
    seed = _box_mask(image.shape, (20, 30, 10), (41, 51, 31))
    model = EchoModel()
    session = Session(model, image)
    session.add_initial_mask(seed)
    refined = session.add_point((30, 40, 20))  # inside the seed: the echo returns the prompt
    overlap = (refined & seed).sum() / seed.sum()
    assert overlap > 0.85 and refined.sum() < 1.3 * seed.sum()
    # Without the mask prompt the same click gives a 12 mm ball (about 4 000 voxels, not 9 261).
    ball = Session(EchoModel(), image).add_point((30, 40, 20))
    assert abs(int(ball.sum()) - 4 / 3 * np.pi * 8**3) < 400
    assert (ball & seed).sum() / seed.sum() < 0.5


def test_initial_mask_from_a_label_file_and_the_seed_outside_the_window_is_kept(tmp_path) -> None:
    from sammed.io import write_mask

    image = _synthetic_image(np.eye(3), spacing=(3.0, 3.0, 3.0), size=(120, 40, 30))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[5:115, 10:30, 5:25] = 3  # 330 mm long: more than one 192 mm window
    labels[50:60, 32:38, 5:10] = 7
    path = write_mask(labels, image, tmp_path / "labels.nii.gz")
    session = Session(SphereModel(), image)
    seed = session.add_initial_mask(path, label=3)
    np.testing.assert_array_equal(seed, labels == 3)
    mask = session.add_point((60, 20, 15))
    window = session.state().roi
    outside = ~window.contains(image.index_to_world((5, 20, 15)))
    assert outside and mask[5:20, 10:30, 5:25].all()  # the part no window saw keeps the seed
    assert not mask[labels == 7].any()


def test_windows_follow_an_initial_mask_larger_than_one_window() -> None:
    image = _synthetic_image(np.eye(3), spacing=(3.0, 3.0, 3.0), size=(150, 40, 30))
    seed = _box_mask(image.shape, (5, 12, 8), (145, 28, 22))
    model = EchoModel()
    session = Session(model, image, max_windows=4)
    session.add_initial_mask(seed)
    session.add_point((75, 20, 15))
    assert len(session.state().extra_windows) >= 2
    # every window after the first got the seed's logits in the half its parent did not see
    assert all(bool((p > 0).any()) for p in model.prompts)


# --- scribbles --------------------------------------------------------------------------------------


def test_scribble_becomes_evenly_spaced_clicks() -> None:
    image = _image()
    session = Session(SphereModel(), image)
    session.add_scribble([(20, 20, 20), (40, 20, 20), (40, 50, 20)])
    clicks = session.state().clicks
    assert len(clicks) == SCRIBBLE_POINTS and all(label == 1 for _, label in clicks)
    index = image.geometry.world_to_index(np.array([c for c, _ in clicks]), "LPS")
    np.testing.assert_allclose(index[0], (20, 20, 20), atol=1e-6)
    np.testing.assert_allclose(index[-1], (40, 50, 20), atol=1e-6)
    arc = (index[:, 0] - 20) + (index[:, 1] - 20)  # along the L: 20 voxels along i, then 30 along j
    np.testing.assert_allclose(arc, np.linspace(0, 50, SCRIBBLE_POINTS), atol=1e-6)
    assert session.mask()[40, 50, 20]  # SphereModel: a ball at the newest positive click
    session.add_scribble([(30, 30, 20), (32, 30, 20)], positive=False)
    assert [label for _, label in session.state().clicks[-SCRIBBLE_POINTS:]] == [0] * SCRIBBLE_POINTS


def test_polyline_sampling_in_world_units() -> None:
    samples = sample_polyline(np.array([[0.0, 0, 0], [10, 0, 0]]), 3)
    np.testing.assert_allclose(samples, [[0, 0, 0], [5, 0, 0], [10, 0, 0]])
    np.testing.assert_allclose(sample_polyline(np.array([[1.0, 2, 3]]), 5), [[1, 2, 3]])


# --- lassos ---------------------------------------------------------------------------------------


def test_lasso_fill_geometry() -> None:
    edit = lasso_fill([(10, 20), (19, 20), (19, 24), (10, 24)], "j", 7, (40, 30, 50))
    assert edit.fill.shape == (40, 50)  # the two remaining axes, i and k
    expected = np.zeros((40, 50), bool)
    expected[11:19, 21:24] = True  # voxel centres strictly inside the rectangle
    assert edit.fill[expected].all() and edit.fill.sum() <= 10 * 5 and edit.fill.sum() >= expected.sum()
    voxels = edit.voxels()
    assert set(voxels[:, 1]) == {7}
    triangle = lasso_fill([(0, 0), (20, 0), (0, 20)], "k", 0, (30, 30, 5)).fill
    assert triangle[2, 2] and not triangle[15, 15]


def test_positive_and_negative_lasso_edit_the_object_and_guide_the_model() -> None:
    image = _image()
    model = EchoModel()
    session = Session(model, image)
    square = [(30, 30), (45, 30), (45, 45), (30, 45)]
    grown = session.add_lasso(square, axis="k", index=25)
    assert grown[31:45, 31:45, 25].all()  # the filled region is part of the object
    assert (model.prompts[-1] == MASK_PROMPT_LOGIT).any()  # ... and went to the decoder
    session.add_point((37, 37, 25))
    assert session.mask()[31:45, 31:45, 25].all()
    hole = [(34, 34), (40, 34), (40, 40), (34, 40)]
    cut = session.add_lasso(hole, axis="k", index=25, positive=False)
    assert not cut[35:40, 35:40, 25].any()
    assert (model.prompts[-1] == -MASK_PROMPT_LOGIT).any()
    session.add_point((31, 31, 25))  # a later click does not undo the removal
    assert not session.mask()[35:40, 35:40, 25].any()


# --- protected objects ----------------------------------------------------------------------------


def test_protected_objects_keep_every_voxel() -> None:
    image = _image()
    model = EchoModel()
    session = Session(model, image, protect_existing=True)
    first = session.add_point((40, 40, 30))
    session.new_object()
    second = session.add_point((45, 40, 30))  # balls overlap
    np.testing.assert_array_equal(session.mask(1), first)
    assert second.any() and not (second & first).any()
    assert (model.prompts[-1] == -MASK_PROMPT_LOGIT).any()  # object 1 is background for object 2
    session.new_object()
    third = session.add_initial_mask(_box_mask(image.shape, (30, 30, 20), (60, 50, 40)))
    assert not (third & (first | second)).any()
    labels = session.label_map()
    assert (labels[first] == 1).all() and (labels[second] == 2).all()
    with pytest.raises(PromptError, match="entirely inside other objects"):
        session.add_initial_mask(first)
    unprotected = Session(SphereModel(), image)
    unprotected.add_point((40, 40, 30))
    unprotected.new_object()
    assert (unprotected.add_point((45, 40, 30)) & first).any()


# --- undo/redo across kinds and bad input -----------------------------------------------------------


def test_undo_redo_across_mixed_prompt_kinds() -> None:
    image = _image()
    session = Session(SphereModel(), image)
    snapshots = [_snapshot(session)]
    session.add_initial_mask(_box_mask(image.shape, (20, 20, 20), (35, 35, 35)))
    snapshots.append(_snapshot(session))
    session.add_point((30, 30, 30))
    snapshots.append(_snapshot(session))
    session.add_scribble([(25, 25, 25), (30, 28, 25)])
    snapshots.append(_snapshot(session))
    session.add_lasso([(40, 40), (50, 40), (50, 50)], axis="k", index=30)
    snapshots.append(_snapshot(session))
    session.add_box((22, 22, 22), (33, 33, 33))
    for expected in reversed(snapshots):
        session.undo()
        current = _snapshot(session)
        assert all(np.array_equal(current[4].get(k, 0), v) for k, v in expected[4].items())
        assert current[0] == expected[0]
    for expected in snapshots[1:]:
        session.redo()
        assert np.array_equal(session.mask(1), expected[4][1])


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda s: s.add_initial_mask(np.ones((3, 3, 3), bool)), "shape"),
        (lambda s: s.add_initial_mask(np.zeros((80, 80, 60), bool)), "empty"),
        (lambda s: s.add_initial_mask(np.ones((80, 80, 60), np.uint8), label=4), "no voxel of label 4"),
        (lambda s: s.add_lasso([(1, 1), (5, 5)], axis="k", index=3), "at least 3 vertices"),
        (lambda s: s.add_lasso([(1, 1), (5, 5), (1, 90)], axis="k", index=3), "leaves slice 3"),
        (lambda s: s.add_lasso([(1, 1), (5, 5), (1, 9)], axis="k", index=60), "outside the image"),
        (lambda s: s.add_lasso([(1, 1), (5, 5), (1, 9)], axis="q", index=6), "axis"),
        (lambda s: s.add_lasso([(1, 1), (2, 2), (3, 3)], axis="k", index=6), "encloses no voxel"),
        (lambda s: s.add_scribble([(10, 10, 10), (10, 10, 70)]), "leaves the image"),
        (lambda s: s.add_scribble([]), "voxel positions"),
        (lambda s: s.add_scribble([(10, 10, 10)], object_id=0), "start at 1"),
    ],
)
def test_bad_editing_prompts_change_nothing(call, fragment) -> None:
    session = Session(SphereModel(), _image())
    session.add_point((40, 40, 30))
    session.new_object()
    before = _snapshot(session)
    with pytest.raises(PromptError, match=fragment) as raised:
        call(session)
    assert "\n" not in str(raised.value)
    assert _same(_snapshot(session), before)


# --- command line ---------------------------------------------------------------------------------


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_cli_init_mask_on_a_shared_volume(capsys, tmp_path, data_dir) -> None:
    from sammed.data import SAMPLE_CT

    labels = data_dir / "totalsegmentator_examples" / "example_seg.nii.gz"
    liver = read_image(labels).array == 5
    out = tmp_path / "liver.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d", "--init-mask", labels,
                     "--init-label", "5", "--out", out)
    assert code == 0, err
    np.testing.assert_array_equal(read_image(out).array == 1, liver)  # no prompt: the mask as given
    refined = tmp_path / "refined.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d", "--init-mask", labels,
                     "--init-label", "5", "--point", "84,58,20", "--out", refined)
    assert code == 0, err
    result = read_image(refined).array == 1
    assert result[84, 58, 20] and result.sum() > 0
    assert not np.array_equal(result, liver)  # the click refined it


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--init-label", "5"], "--init-label needs --init-mask"),
        (["--init-mask", "example_seg_mr.nii.gz"], "does not match the image size"),
        (["--init-mask", "example_seg.nii.gz", "--init-label", "200"], "no voxel of label 200"),
        ([], "--init-mask"),
    ],
)
def test_cli_init_mask_bad_input(capsys, tmp_path, data_dir, extra, fragment) -> None:
    from sammed.data import SAMPLE_CT

    folder = data_dir / "totalsegmentator_examples"
    extra = [str(folder / e) if e.endswith(".nii.gz") else e for e in extra]
    out = tmp_path / "m.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d", *extra, "--out", out)
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
    assert not out.exists()


def test_cli_scribble_and_lasso(capsys, tmp_path) -> None:
    """The command-line forms reach Session.add_scribble / add_lasso: a positive lasso fills its
    polygon on its slice, a negative one cuts its square out, and a scribble adds clicks."""
    from sammed.data import SAMPLE_CT

    out = tmp_path / "lasso.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d",
                     "--lasso", "k=20/70,45/95,45/95,70/70,70", "--out", out)
    assert code == 0, err
    filled = read_image(out).array == 1
    assert filled[71:95, 46:70, 20].all()  # the polygon's inside on slice k = 20
    cut = tmp_path / "cut.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d",
                     "--lasso", "k=20/70,45/95,45/95,70/70,70", "--lasso", "k=20/75,50/85,50/85,60/75,60:-",
                     "--out", cut)
    assert code == 0, err
    after = read_image(cut).array == 1
    assert not after[76:85, 51:60, 20].any() and after[71:74, 46:70, 20].all()
    stroke = tmp_path / "scribble.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d",
                     "--scribble", "80,55,20/86,58,20/90,62,20", "--out", stroke)
    assert code == 0, err
    assert read_image(stroke).array.any()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--lasso", "k=20/70,45/95,45"], "at least 3"),
        (["--lasso", "q=20/70,45/95,45/95,70"], "AXIS=INDEX"),
        (["--lasso", "k=20/70,45/95/95,70"], "2 finite numbers"),
        (["--lasso", "k=99/70,45/95,45/95,70"], "slice"),
        (["--scribble", "80,55,20/900,58,20"], "leaves the image"),
        (["--scribble", "80,55/86,58"], "3 finite numbers"),
        (["--scribble", "80,55,20:x"], "+ or -"),
        (["--world", "--scribble", "80,55,20"], "voxel indices"),
    ],
)
def test_cli_scribble_and_lasso_bad_input(capsys, tmp_path, extra, fragment) -> None:
    from sammed.data import SAMPLE_CT

    out = tmp_path / "m.nii.gz"
    code, err = _cli(capsys, "segment", SAMPLE_CT, "--model", "sammed-demo-3d", *extra, "--out", out)
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
    assert not out.exists()


def test_fake_models_implement_the_protocol() -> None:
    """The stand-ins above are PromptableModel3D, so these tests drive the real Session path."""
    from sammed.models.promptable import PromptableModel3D

    assert isinstance(EchoModel(), PromptableModel3D)
