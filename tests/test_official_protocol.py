"""The official SAM-Med3D inference protocol against the torchio-0.20.9 recordings.

Fixtures: ``shared/fixtures/sam_med3d/preproc`` (see its README). Everything there is compared
exactly (bit-for-bit arrays, equal floats); no tolerance is needed on CPU.

Runtime: one pass over all 15 classes (~30 s on 2 cores) is shared by the per-class tests through
a module-scoped fixture; class 1 is preprocessed once more on its own (~3 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torchio")

from sammed.evaluation import official_clicks as C  # noqa: E402
from sammed.evaluation import official_pipeline as O  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PREPROC = SHARED / "fixtures" / "sam_med3d" / "preproc"
IMAGE = PREPROC / "synthetic_ct_amos_0013_grid.nii.gz"
LABEL = PREPROC / "amos_0013_label.nii.gz"

pytestmark = pytest.mark.skipif(not PREPROC.is_dir(), reason=f"fixtures missing: {PREPROC}")


# --------------------------------------------------------------------------- helpers


class _Encoder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 384, *(s // 16 for s in x.shape[-3:]))


class _PromptEncoder(nn.Module):
    """Records what it is fed; returns empty-ish embeddings of the contract's shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, points, boxes, masks):
        coords, labels = points
        assert boxes is None
        self.calls.append((coords.clone(), labels.clone(), masks.clone()))
        sparse = torch.zeros(coords.shape[0], coords.shape[1] + 1, 384)
        dense = torch.zeros(coords.shape[0], 384, *(s // 4 for s in masks.shape[-3:]))
        return sparse, dense

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 384, 8, 8, 8)


class _Decoder(nn.Module):
    """Returns the i-th fixed low-res logit field on the i-th call (the last one repeats)."""

    def __init__(self, fields: list[torch.Tensor]) -> None:
        super().__init__()
        self.fields = fields
        self.n_calls = 0

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                dense_prompt_embeddings, multimask_output):
        assert multimask_output is False
        field = self.fields[min(self.n_calls, len(self.fields) - 1)]
        self.n_calls += 1
        return field.clone(), torch.zeros(1, 1)


class FakeSam(nn.Module):
    """Parameter-free stand-in honouring the SAM-Med3D sub-module contract."""

    def __init__(self, *fields: torch.Tensor) -> None:
        super().__init__()
        self.image_encoder = _Encoder()
        self.prompt_encoder = _PromptEncoder()
        self.mask_decoder = _Decoder(list(fields))


def _const_logits(value: float, side: int = 32) -> torch.Tensor:
    return torch.full((1, 1, side, side, side), float(value))


def _six_or_none(x):
    return None if x is None else list(x)


def _bbox(mask: np.ndarray) -> dict[str, list[int]]:
    idx = np.argwhere(mask)
    return {"min_inclusive": idx.min(0).tolist(), "max_exclusive": (idx.max(0) + 1).tolist()}


def _sha256(a: np.ndarray) -> str:
    little_endian = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(little_endian.tobytes()).hexdigest()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((PREPROC / "preproc_expected.json").read_text())


@pytest.fixture(scope="module")
def class1_npz():
    return np.load(PREPROC / "preproc_class1.npz")


@pytest.fixture(scope="module")
def class1_case() -> O.OfficialCase:
    return O.preprocess_official(IMAGE, LABEL, 1, keep_canonical=True)


@pytest.fixture(scope="module")
def oracle_run():
    """All 15 classes through the official loop with an 'oracle' predictor.

    The clicks go through ``sam_model_infer_official`` (fake model, real seed chain); the ROI
    prediction handed to paste-back is the ROI GT itself, which is how ``oracle_canvas`` was made.
    """
    seen: dict[int, dict] = {}

    def predict(case: O.OfficialCase, rng):
        _, clicks = O.sam_model_infer_official(FakeSam(_const_logits(-10.0)), case.roi_image,
                                               case.roi_label, num_clicks=1, rng=rng)
        label = case.roi_label[0, 0].numpy()
        seen[case.category] = {
            "case": case if case.category == 1 else None,
            "canonical_shape": case.canonical_shape,
            "canonical_affine_ras": case.canonical_affine_ras,
            "roi_affine_ras": case.roi_affine_ras,
            "padding": case.applied_padding,
            "cropping": case.applied_cropping,
            "functional_padding": case.functional_padding,
            "functional_cropping": case.functional_cropping,
            "mean": case.znorm_mean,
            "std": case.znorm_std,
            "roi_label_voxels": int(label.sum()),
            "roi_label_bbox": _bbox(label),
            "warnings": case.warnings,
            "roi_image_dtype": case.roi_image.dtype,
            "roi_image_shape": tuple(case.roi_image.shape),
        }
        return label.astype(np.uint8), clicks

    canvas, gt_image, infos = O.run_official_protocol(IMAGE, LABEL, predict)
    return canvas, gt_image, infos, seen


# --------------------------------------------------------------------------- class 1 in detail


def test_class1_roi_image_bit_exact(class1_case, class1_npz):
    assert class1_case.roi_image.dtype == torch.float32
    assert class1_case.roi_image.shape == (1, 1, 128, 128, 128)
    np.testing.assert_array_equal(class1_case.roi_image.numpy(), class1_npz["roi_image"])


def test_class1_raw_roi_and_label(class1_case, class1_npz, expected):
    raw = class1_case.roi_raw[0].numpy()
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(raw, class1_npz["roi_image_raw_int16"])
    assert _sha256(raw) == expected["roi_image_raw_summary"]["sha256_le"]
    assert str(class1_case.roi_label.dtype) == expected["chosen_dtypes"]["roi_label"]
    np.testing.assert_array_equal(class1_case.roi_label.numpy(), class1_npz["roi_label"])


def test_class1_canonical_volumes(class1_case, class1_npz, expected):
    canonical = class1_case.canonical_subject
    np.testing.assert_array_equal(canonical.label.data[0].numpy(), class1_npz["canonical_label"])
    image = canonical.image.data[0].numpy()
    assert str(canonical.image.data.dtype) == expected["chosen_dtypes"]["canonical_image"]
    assert _sha256(image) == expected["canonical_image_summary"]["sha256_le"]


def test_class1_affines_and_stats(class1_case, class1_npz, expected):
    for name in ("original_affine_ras", "canonical_affine_ras", "roi_affine_ras"):
        np.testing.assert_array_equal(getattr(class1_case, name), class1_npz[name])
    assert list(class1_case.original_shape) == expected["original_shape_ijk"]
    e = expected["per_class"]["1"]
    assert list(class1_case.applied_padding) == e["applied_padding_params"] == [0, 0, 0, 0, 0, 16]
    assert list(class1_case.applied_cropping) == e["applied_cropping_params"]
    assert class1_case.znorm_mean == e["znorm_mean"]
    assert class1_case.znorm_std == e["znorm_std"]


def test_class1_ellipsoid_paste_back(class1_case, class1_npz, expected):
    pasted = O.postprocess_official(class1_npz["ellipsoid_pred_roi"], class1_case)
    assert pasted.dtype == np.uint8
    assert pasted.shape == tuple(expected["sitk_zyx_shape"])
    np.testing.assert_array_equal(pasted, class1_npz["ellipsoid_pasted_zyx"])
    assert int(pasted.sum()) == expected["ellipsoid_pred"]["pasted_voxels"]


# --------------------------------------------------------------------------- every class


def test_all_classes_in_sorted_order(oracle_run, expected):
    _, _, infos, _ = oracle_run
    assert [i["category"] for i in infos] == expected["categories"]


@pytest.mark.parametrize("category", range(1, 16))
def test_class_geometry(oracle_run, expected, category):
    got = oracle_run[3][category]
    e = expected["per_class"][str(category)]
    assert list(got["canonical_shape"]) == e["canonical_shape"]
    np.testing.assert_array_equal(got["canonical_affine_ras"], np.array(e["canonical_affine_ras"]))
    np.testing.assert_array_equal(got["roi_affine_ras"], np.array(e["roi_affine_ras"]))
    assert _six_or_none(got["padding"]) == e["applied_padding_params"]
    assert _six_or_none(got["cropping"]) == e["applied_cropping_params"]
    assert _six_or_none(got["functional_padding"]) == e["meta_info_padding_params_functional"]
    assert _six_or_none(got["functional_cropping"]) == e["meta_info_cropping_params_functional"]
    assert got["roi_label_voxels"] == e["roi_label_voxels"]
    assert got["roi_label_bbox"] == e["roi_label_bbox"]
    assert got["mean"] == e["znorm_mean"] and got["std"] == e["znorm_std"]
    assert list(got["warnings"]) == e["warnings"]
    assert got["roi_image_dtype"] == torch.float32
    assert got["roi_image_shape"] == (1, 1, 128, 128, 128)


@pytest.mark.parametrize("category", range(1, 16))
def test_first_click_of_seed_chain(oracle_run, expected, category):
    info = next(i for i in oracle_run[2] if i["category"] == category)
    e = expected["per_class"][str(category)]["click"]
    assert len(info["clicks"]) == 1
    point, label = info["clicks"][0]
    assert list(point) == e["point_A0A1A2"]
    assert label == e["label"]


def test_oracle_canvas_all_classes(oracle_run):
    canvas, gt_image, _, _ = oracle_run
    expected_canvas = np.load(PREPROC / "oracle_canvas.npz")["canvas_zyx"]
    assert canvas.dtype == np.uint8
    np.testing.assert_array_equal(canvas, expected_canvas)


def test_loop_case_matches_single_class_api(oracle_run, class1_npz):
    case = oracle_run[3][1]["case"]
    np.testing.assert_array_equal(case.roi_image.numpy(), class1_npz["roi_image"])


# --------------------------------------------------------------------------- model loop


def _tiny_roi(side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.randn(1, 1, side, side, side, generator=torch.Generator().manual_seed(0))
    gt = torch.zeros(1, 1, side, side, side, dtype=torch.int32)
    gt[0, 0, 10:20, 12:18, 8:22] = 1
    return image, gt


def test_infer_accumulates_clicks_and_feeds_logits_back():
    image, gt = _tiny_roi()
    first, second = _const_logits(10.0, 8), _const_logits(-3.0, 8)
    model = FakeSam(first, second)
    pred, clicks = O.sam_model_infer_official(model, image, gt, num_clicks=3,
                                              rng=np.random.RandomState(7))
    calls = model.prompt_encoder.calls
    assert [c[0].shape[1] for c in calls] == [1, 2, 3]  # all clicks so far are fed
    assert all(c[0].dtype == torch.float32 and c[1].dtype == torch.float32 for c in calls)
    torch.testing.assert_close(calls[0][2], torch.zeros(1, 1, 8, 8, 8), rtol=0, atol=0)
    torch.testing.assert_close(calls[1][2], first, rtol=0, atol=0)  # logits, not probabilities
    torch.testing.assert_close(calls[2][2], second, rtol=0, atol=0)
    # Round 1: nothing predicted -> positive click in the GT. Round 2: everything predicted
    # -> only FP errors -> negative click outside the GT. Round 3: empty again -> positive.
    g = gt[0, 0]
    assert [c.label for c in clicks] == [1, 0, 1]
    assert [int(g[c.point]) for c in clicks] == [1, 0, 1]
    assert calls[2][1].tolist() == [[1.0, 0.0, 1.0]]
    assert calls[2][0][0].tolist() == [list(map(float, c.point)) for c in clicks]
    assert pred.dtype == np.uint8 and pred.shape == (32, 32, 32) and pred.sum() == 0


def test_infer_empty_gt_returns_zeros_without_drawing():
    image, gt = _tiny_roi()
    rng = np.random.RandomState(3)
    pred, clicks = O.sam_model_infer_official(FakeSam(_const_logits(5.0, 8)), image,
                                              torch.zeros_like(gt), rng=rng)
    assert clicks == [] and pred.shape == (32, 32, 32) and not pred.any()
    assert rng.randint(1000) == np.random.RandomState(3).randint(1000)


def test_infer_without_gt_clicks_centre():
    image, _ = _tiny_roi()
    model = FakeSam(_const_logits(5.0, 8))
    with pytest.warns(UserWarning):
        pred, clicks = O.sam_model_infer_official(model, image, None, num_clicks=2)
    assert clicks == [O.Click((16, 16, 16), 1)]
    assert pred.all()


def test_final_mask_uses_sigmoid_threshold():
    # A logit of 1e-9 is > 0 but its float32 sigmoid is exactly 0.5, so upstream says 0.
    image, gt = _tiny_roi()
    pred, _ = O.sam_model_infer_official(FakeSam(_const_logits(1e-9, 8)), image, gt,
                                         rng=np.random.RandomState(0))
    assert not pred.any()


def _write_small_case(directory: Path) -> tuple[Path, Path]:
    """A small LAS-like int16 image and a two-class uint16 label on the same grid."""
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    img = rng.integers(-200, 300, size=(10, 40, 48)).astype(np.int16)  # z, y, x
    lab = np.zeros(img.shape, dtype=np.uint16)
    lab[2:7, 10:25, 5:20] = 5
    lab[3:8, 20:30, 15:40] = 2
    paths = []
    for arr, name in ((img, "img.nii.gz"), (lab, "gt.nii.gz")):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((2.0, 2.0, 5.0))
        im.SetOrigin((10.0, -20.0, 30.0))
        im.SetDirection((-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        sitk.WriteImage(im, str(directory / name))
        paths.append(directory / name)
    return paths[0], paths[1]


def test_validate_paired_img_gt_writes_merged_canvas(tmp_path):
    import SimpleITK as sitk

    img_path, gt_path = _write_small_case(tmp_path)
    out = tmp_path / "out" / "pred.nii.gz"
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    # All-positive logits: each class predicts its whole 128^3 ROI, which covers this small
    # image, so the last class (5) overwrites class 2 everywhere.
    info = O.validate_paired_img_gt(FakeSam(_const_logits(10.0)), img_path, gt_path, out)
    assert info["categories"] == [2, 5]
    written = sitk.ReadImage(str(out))
    gt = sitk.ReadImage(str(gt_path))
    arr = sitk.GetArrayFromImage(written)
    assert arr.dtype == np.uint8 and arr.shape == (10, 40, 48)
    assert (arr == 5).all()
    assert written.GetSpacing() == gt.GetSpacing()
    assert written.GetOrigin() == gt.GetOrigin()
    assert written.GetDirection() == gt.GetDirection()
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.nii.gz"]  # no temp file left
    gt_arr = sitk.GetArrayFromImage(gt)
    for cls in info["classes"]:
        assert len(cls["clicks"]) == 1 and cls["clicks"][0].label == 1
        assert cls["applied_padding"] is not None  # the small image is padded up to 128^3
    # Global RNGs are left as they were.
    assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
               for a, b in zip(np_state, np.random.get_state()))
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert gt_arr.max() == 5


def test_validate_negative_model_writes_empty_canvas(tmp_path):
    import SimpleITK as sitk

    img_path, gt_path = _write_small_case(tmp_path)
    out = tmp_path / "pred.nii.gz"
    O.validate_paired_img_gt(FakeSam(_const_logits(-10.0)), img_path, gt_path, out)
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(out))).any()


# --------------------------------------------------------------------------- version guard


def test_version_guard(monkeypatch):
    import torchio

    monkeypatch.setattr(torchio, "__version__", "0.20.11")
    with pytest.raises(O.TorchioVersionError, match="pinned to torchio==0.20.9"):
        O.load_official_subject(IMAGE, LABEL)


def test_module_imports_without_torchio():
    code = (
        "import sys; sys.modules['torchio'] = None\n"
        "import sammed.evaluation.official_pipeline as O\n"
        "try:\n    O.load_official_subject('a', 'b')\n"
        "except O.TorchioVersionError as e:\n    print('guard:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert "guard: the official SAM-Med3D protocol needs torchio==0.20.9" in out.stdout


# --------------------------------------------------------------------------- click samplers


def _cube(side: int, lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(side, side, side, dtype=torch.int32)
    m[lo:hi, lo:hi, lo:hi] = 1
    return m


def test_random_click_first_is_uniform_gt_voxel():
    gt = _cube(12, 3, 7)
    np.random.seed(233)
    p_global, l_global = C.random_sample_next_click(torch.zeros_like(gt), gt)
    p_local, l_local = C.random_sample_next_click(torch.zeros_like(gt), gt,
                                                  rng=np.random.RandomState(233))
    assert torch.equal(p_global, p_local) and torch.equal(l_global, l_local)
    assert p_local.shape == (1, 1, 3) and p_local.dtype == torch.long
    assert l_local.shape == (1, 1) and l_local.dtype == torch.long and l_local.item() == 1
    expected = torch.argwhere(gt > 0)[np.random.RandomState(233).randint(64)]
    assert p_local.reshape(3).tolist() == expected.tolist()


def test_random_click_fp_only_is_negative():
    gt = _cube(12, 3, 7)
    prev = _cube(12, 2, 9)  # covers the GT and more
    for seed in range(20):
        p, lab = C.random_sample_next_click(prev, gt, rng=np.random.RandomState(seed))
        idx = tuple(p.reshape(3).tolist())
        assert lab.item() == 0 and gt[idx] == 0 and prev[idx] == 1


def test_random_click_label_is_fn_at_voxel():
    gt = _cube(12, 3, 7)
    prev = _cube(12, 5, 10)  # partly overlapping: both FN and FP exist
    labels = set()
    for seed in range(40):
        p, lab = C.random_sample_next_click(prev, gt, rng=np.random.RandomState(seed))
        idx = tuple(p.reshape(3).tolist())
        is_fn = bool(gt[idx] and not prev[idx])
        is_fp = bool(prev[idx] and not gt[idx])
        assert is_fn or is_fp
        assert lab.item() == int(is_fn)
        labels.add(lab.item())
    assert labels == {0, 1}


def test_random_click_fallback_without_error():
    gt = _cube(12, 3, 7)
    p, lab = C.random_sample_next_click(gt.clone(), gt, rng=np.random.RandomState(1))
    assert lab.item() == 1 and gt[tuple(p.reshape(3).tolist())] == 1


def test_random_click_rejects_bad_input():
    gt = _cube(8, 2, 4)
    with pytest.raises(ValueError, match="empty"):
        C.random_sample_next_click(torch.zeros_like(gt), torch.zeros_like(gt))
    with pytest.raises(ValueError, match="unknown click method"):
        C.random_sample_next_click(torch.zeros_like(gt), gt, method="box")
    with pytest.raises(ValueError, match="differ in shape"):
        C.random_sample_next_click(torch.zeros(8, 8, 7), gt)


def test_ritm_click_in_eroded_core():
    gt = _cube(20, 5, 14)  # 9^3 cube: centre depth 5, core = depth > 2.5 = indices 7..11
    for seed in range(10):
        p, lab = C.random_sample_next_click(torch.zeros_like(gt), gt, method="ritm",
                                            rng=np.random.RandomState(seed))
        assert lab.item() == 1
        assert all(7 <= v <= 11 for v in p.reshape(3).tolist())


def test_ritm_click_negative_when_fp_is_deeper_and_fallback():
    gt = _cube(20, 9, 11)
    prev = _cube(20, 2, 18)
    p, lab = C.random_sample_next_click(prev, gt, method="ritm", rng=np.random.RandomState(0))
    assert lab.item() == 0 and gt[tuple(p.reshape(3).tolist())] == 0
    p, lab = C.random_sample_next_click(gt.clone(), gt, method="ritm")
    assert p.reshape(3).tolist() == [10, 10, 10] and lab.item() == 0


def test_batched_random_error_click():
    gt = torch.stack([_cube(10, 2, 6), _cube(10, 4, 8)])[:, None].float()
    prev = torch.zeros_like(gt)
    prev[1] = 0.9  # item 1 predicts everything (> 0.5): only FP errors remain
    prev[0] = 0.4  # item 0 predicts nothing (0.4 is below the 0.5 threshold)
    points, labels = C.get_next_click_random_error(prev, gt, rng=np.random.RandomState(0))
    assert [p.shape for p in points] == [(1, 1, 3)] * 2
    assert [lab.item() for lab in labels] == [1, 0]
    assert gt[0, 0][tuple(points[0].reshape(3).tolist())] == 1
    assert gt[1, 0][tuple(points[1].reshape(3).tolist())] == 0
    with pytest.raises(ValueError, match="no error voxel"):
        C.get_next_click_random_error(gt.clone(), gt)


def test_batched_fn_or_fp_click_no_error_draws_random_negative():
    gt = _cube(6, 1, 3)[None, None].float()
    points, labels = C.get_next_click_fn_or_fp(gt.clone(), gt, rng=np.random.RandomState(4))
    ref = np.random.RandomState(4)
    draws = [ref.randint(s) for s in (1, 6, 6, 6)]  # channel dim included, as upstream
    assert points[0].reshape(3).tolist() == draws[1:] and labels[0].item() == 0


def test_batched_ritm_click_batch_one_only():
    gt = _cube(20, 5, 14)[None, None].float()
    points, labels = C.get_next_click_ritm(torch.zeros_like(gt), gt, rng=np.random.RandomState(0))
    assert labels[0].item() == 1 and all(7 <= v <= 11 for v in points[0].reshape(3).tolist())
    with pytest.raises(ValueError, match="batch size 1"):
        C.get_next_click_ritm(torch.zeros(2, 1, 4, 4, 4), torch.ones(2, 1, 4, 4, 4))
