"""``sam-med2d`` protocol: the prompts it sends a 2D predictor, and a run on the SA-Med2D demo list."""

from __future__ import annotations

import numpy as np
import pytest

from sammed.evaluation import EvalSettings, dice, get_protocol, load_dataset
from sammed.evaluation.protocols.med2d import Med2DProtocol, read_label_2d
from sammed.evaluation.simulators import med2d_box

LOW_RES = 8


class FakePredictor:
    """Records every call; predicts squares around the prompts so the metrics are known.

    Three candidate masks with scores; the protocol must keep the best-scoring one.
    """

    def __init__(self) -> None:
        self.image = None
        self.calls: list[dict] = []

    def set_image(self, image: np.ndarray) -> None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.image = image

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
        self.calls.append({"points": None if point_coords is None else np.array(point_coords),
                           "labels": None if point_labels is None else np.array(point_labels),
                           "box": None if box is None else np.array(box), "mask_input": mask_input,
                           "multimask": multimask_output})
        h, w = self.image.shape[:2]
        best = np.zeros((h, w), dtype=bool)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            best[y0:y1, x0:x1] = True
        else:
            for (x, y), label in zip(point_coords, point_labels):
                if label == 1:
                    best[max(0, int(y) - 4) : int(y) + 5, max(0, int(x) - 4) : int(x) + 5] = True
        masks = np.stack([np.zeros_like(best), best, np.ones_like(best)])
        low = np.full((3, LOW_RES, LOW_RES), float(len(self.calls)), dtype=np.float32)
        return masks, np.array([0.1, 0.9, 0.5]), low

    def mask_prompt_from(self, low_res: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-low_res))


@pytest.fixture(scope="module")
def demo(data_dir):
    return load_dataset(data_dir / "sammed2d_demo_2d" / "label2image_test.json")


def test_prompts_sent_to_the_predictor(demo):
    fakes: list[FakePredictor] = []

    def factory(model):
        fakes.append(FakePredictor())
        return fakes[-1]

    protocol = Med2DProtocol(predictor_factory=factory)
    case = next(c for c in demo.cases if c.case_id == "amos_0004_75")
    settings = EvalSettings(interactions=3, seed=233, nsd_tolerance_mm=1.0, classes=("liver",))
    result = protocol.run_case(model=None, case=case, settings=settings)
    calls = fakes[0].calls
    gt = read_label_2d(dict(case.masks)["liver_000"], "mask") > 0
    assert calls[0]["box"].tolist() == list(med2d_box(gt)) and calls[0]["points"] is None
    assert [len(c["points"]) for c in calls[1:]] == [1, 2, 3]  # points accumulate
    assert all(c["multimask"] for c in calls)
    assert calls[1]["mask_input"] is None  # first point: no mask prompt
    for index in range(2, len(calls)):
        # the mask prompt is the predictor's form (here a sigmoid) of the previous call's low-res
        # output, which the fake fills with that call's number (= index)
        expected = np.full((1, LOW_RES, LOW_RES), 1 / (1 + np.exp(-float(index))))
        np.testing.assert_allclose(calls[index]["mask_input"], expected, rtol=1e-6)
        np.testing.assert_array_equal(calls[index]["points"][:-1], calls[index - 1]["points"])
    x, y = calls[1]["points"][0]
    assert gt[int(y), int(x)] and calls[1]["labels"][0] == 1
    assert [(r["track"], r["interaction"]) for r in result.rows] == [("box", 1), ("points", 1), ("points", 2),
                                                                    ("points", 3)]
    box_row = result.rows[0]
    x0, y0, x1, y1 = (int(v) for v in calls[0]["box"])
    square = np.zeros_like(gt)
    square[y0:y1, x0:x1] = True
    assert box_row["dice"] == dice(square, gt) and box_row["coords"] == f"{x0} {y0} {x1} {y1}"
    assert all(r["class_name"] == "liver" and r["class"] == "liver_000" for r in result.rows)


def test_real_predictor_on_demo_list(demo):
    pytest.importorskip("sammed.inference.predictor2d")
    from sammed.models import build_model, list_models

    if "sam-med2d" not in list_models(2):
        pytest.skip("the sam-med2d model is not registered")
    model = build_model("sam-med2d")  # architecture check only: metrics of random weights mean nothing
    protocol = get_protocol("sam-med2d")
    case = next(c for c in demo.cases if c.case_id == "s0619_32")
    settings = EvalSettings(interactions=2, seed=233, nsd_tolerance_mm=1.0, classes=("colon",))
    result = protocol.run_case(model, case, settings)
    assert [(r["track"], r["interaction"], r["class_name"]) for r in result.rows] == [
        ("box", 1, "colon"), ("points", 1, "colon"), ("points", 2, "colon")]
    gt = read_label_2d(dict(case.masks)["colon_000"], "mask") > 0
    assert all(r["gt_voxels"] == gt.sum() and 0.0 <= r["dice"] <= 1.0 for r in result.rows)
    preview = result.previews["colon_000"]
    assert preview.gt.shape == preview.pred.shape == gt.shape
