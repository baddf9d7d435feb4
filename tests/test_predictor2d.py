"""Predictor2D against the official predictors, end to end, plus its transforms and input checks.

``predictor_*.npz`` (../shared/fixtures/sam_med2d and sam_vit_b) record ``SammedPredictor`` and
``SamPredictor`` on a grey CT slice and on a pseudo-colour image given as "RGB" and as "BGR":
image in, masks / IoU / low-res logits out, with refinement clicks fed the previous mask the
way each official notebook does. Tolerances are the fixture READMEs' recommended ones. SAM's
1024 encoder is slow on CPU, so its cases are marked slow.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from sammed.errors import InvalidImageError, PromptError
from sammed.inference.predictor2d import Predictor2D
from sammed.models.sam2d import DirectResizePipeline, LongestSidePipeline, Sam2DConfig, build_sam2d, transforms
from test_sam2d_parity import FAMILIES, TOL, assert_masks_match, recorded_model

PREDICTOR_CASES = [
    ("sam-med2d", "gray"),
    ("sam-med2d", "color_rgb"),
    ("sam-med2d", "color_bgr"),
    pytest.param("sam-vit-b", "gray", marks=pytest.mark.slow),
    pytest.param("sam-vit-b", "color_rgb", marks=pytest.mark.slow),
    pytest.param("sam-vit-b", "color_bgr", marks=pytest.mark.slow),
]


def close(actual: np.ndarray, expected: np.ndarray, tier: str) -> None:
    torch.testing.assert_close(torch.from_numpy(np.asarray(actual)), torch.from_numpy(np.asarray(expected)), **TOL[tier])


def _call_inputs(record: dict, k: int) -> dict:
    def get(name):
        return record.get(f"c{k}_{name}")

    return dict(
        point_coords=get("point_coords"),
        point_labels=get("point_labels"),
        box=get("box"),
        mask_input=get("mask_input"),
        multimask_output=bool(get("multimask_output")),
        return_logits=bool(get("return_logits")),
    )


def load_record(family: str, variant: str) -> dict:
    return dict(np.load(FAMILIES[family].folder / f"predictor_{variant}.npz"))


@functools.lru_cache(maxsize=None)
def predictor_with_image(family: str, variant: str) -> Predictor2D:
    """A predictor on the fixture model with the recorded image set (encoded once per test run)."""
    record = load_record(family, variant)
    predictor = Predictor2D(recorded_model(family))
    predictor.set_image(record["image"], str(record["image_format"]))
    return predictor


@pytest.mark.parametrize("family, variant", PREDICTOR_CASES)
def test_predictor_reproduces_the_official_predictor(family: str, variant: str) -> None:
    folder = FAMILIES[family].folder
    record = load_record(family, variant)
    predictor = predictor_with_image(family, variant)

    features = predictor.get_image_embedding()
    if "features" in record:
        close(features, record["features"], "encoder")
    elif "features_f16" in record:
        close(features, record["features_f16"].astype(np.float32), "f16")
    else:  # SAM grey: the same image as the model-level cases
        close(features, np.load(folder / "encoder.npz")["image_embeddings"], "encoder")

    for k in range(int(record["n_calls"])):
        inputs = _call_inputs(record, k)
        masks, scores, low_res = predictor.predict(**inputs)
        close(scores, record[f"c{k}_iou_predictions"], "iou")
        close(low_res, record[f"c{k}_low_res_masks"], "logits")
        if inputs["return_logits"]:
            close(masks, record[f"c{k}_masks_logits"], "logits")
            logits = masks
            masks = predictor.pipeline.binarize(torch.from_numpy(masks)).numpy()
        else:
            logits = predictor.predict(**{**inputs, "return_logits": True})[0]
        assert masks.dtype == bool and masks.shape == record[f"c{k}_masks"].shape
        assert_masks_match(masks, record[f"c{k}_masks"], logits, f"{family} {variant} c{k}")


def test_refinement_mask_prompts_follow_each_family() -> None:
    """SAM-Med2D feeds sigmoid probabilities back; SAM feeds the best mask's logits."""
    med = dict(np.load(FAMILIES["sam-med2d"].folder / "predictor_gray.npz"))
    predictor = Predictor2D(recorded_model("sam-med2d"))
    np.testing.assert_array_equal(predictor.mask_prompt_from(med["c0_low_res_masks"]), med["c1_mask_input"])

    sam = dict(np.load(FAMILIES["sam-vit-b"].folder / "predictor_gray.npz"))
    best = int(np.argmax(sam["c0_iou_predictions"]))
    previous = sam["c0_low_res_masks"][best][None]
    identity = LongestSidePipeline().mask_prompt_from(torch.from_numpy(previous)).numpy()
    np.testing.assert_array_equal(identity, sam["c1_mask_input"])


def test_several_boxes_give_one_best_mask_each() -> None:
    record = load_record("sam-med2d", "gray")
    predictor = predictor_with_image("sam-med2d", "gray")
    masks, scores, low_res = predictor.predict(box=record["mb_boxes"], multimask_output=True)
    assert masks.shape == record["mb_masks"].shape and scores.shape == (2, 1)
    logits = predictor.predict(box=record["mb_boxes"], return_logits=True)[0]
    assert_masks_match(masks, record["mb_masks"], logits, "several boxes")
    # The official predict_torch only returns the last box's IoU and low-res logits.
    close(scores[-1:], record["mb_iou_predictions"], "iou")
    close(low_res[-1:], record["mb_low_res_masks"], "logits")
    # The official several-box path scales in float32 torch (apply_boxes_torch), predict() in
    # float64 as apply_boxes does: the two agree to 1 ulp.
    boxes_256 = predictor.pipeline.boxes_to_input(record["mb_boxes"], predictor.prepared)
    np.testing.assert_allclose(boxes_256.astype(np.float32), record["mb_boxes_256"], rtol=2e-7, atol=0)


# --- a tiny random model for the API and its input checks --------------------------------------

TINY = Sam2DConfig(
    img_size=64,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    window_size=3,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_sam2d(TINY)


@pytest.fixture(params=["longest-side", "direct-resize"])
def tiny_predictor(request, tiny_model) -> Predictor2D:
    pipeline = LongestSidePipeline(model_size=64) if request.param == "longest-side" else DirectResizePipeline(model_size=64)
    predictor = Predictor2D(tiny_model, pipeline=pipeline)
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    return predictor


def test_output_shapes_follow_the_family(tiny_predictor: Predictor2D) -> None:
    masks, scores, low_res = tiny_predictor.predict(point_coords=[[10, 5]], point_labels=[1])
    kept = 1 if tiny_predictor.pipeline.keep_best_of_multimask else 3
    assert masks.shape == (kept, 30, 50) and masks.dtype == bool
    assert scores.shape == (kept,) and low_res.shape == (kept, 16, 16)
    masks, scores, _ = tiny_predictor.predict(box=[2, 3, 20, 25], multimask_output=False)
    assert masks.shape == (1, 30, 50) and scores.shape == (1,)


def test_batched_boxes_equal_one_call_per_box(tiny_predictor: Predictor2D) -> None:
    boxes = np.array([[2, 3, 20, 25], [10, 0, 49, 29], [0, 0, 5, 5]], dtype=float)
    clicks = dict(point_coords=[[12, 8]], point_labels=[0])
    masks, scores, low_res = tiny_predictor.predict(box=boxes, **clicks)
    assert masks.shape[0] == scores.shape[0] == low_res.shape[0] == 3
    for i, box in enumerate(boxes):
        single_masks, single_scores, single_low = tiny_predictor.predict(box=box, **clicks)
        np.testing.assert_allclose(single_scores, scores[i], atol=1e-5)
        np.testing.assert_allclose(single_low, low_res[i], atol=1e-4)
    single_box = tiny_predictor.predict(box=boxes[:1])[0]
    assert single_box.ndim == 4  # a (B, 4) box always gives batched outputs


def test_grey_image_equals_its_three_channel_copy(tiny_predictor: Predictor2D) -> None:
    grey = np.arange(30 * 50, dtype=np.uint8).reshape(30, 50)
    pipeline = tiny_predictor.pipeline
    as_grey = pipeline.prepare_image(grey)
    as_rgb = pipeline.prepare_image(np.repeat(grey[:, :, None], 3, axis=2))
    assert torch.equal(as_grey.input, as_rgb.input)


def test_bgr_input_is_reversed_to_the_model_order(tiny_predictor: Predictor2D) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    pipeline = tiny_predictor.pipeline
    assert torch.equal(pipeline.prepare_image(image[..., ::-1], "BGR").input, pipeline.prepare_image(image, "RGB").input)
    assert not torch.equal(pipeline.prepare_image(image, "BGR").input, pipeline.prepare_image(image, "RGB").input)


def test_predict_before_set_image_raises(tiny_model) -> None:
    predictor = Predictor2D(tiny_model, pipeline=DirectResizePipeline(model_size=64))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(point_coords=[[1, 1]], point_labels=[1])


def test_model_without_pipeline_is_refused(tiny_model) -> None:
    with pytest.raises(ValueError, match="pipeline"):
        Predictor2D(tiny_model)


@pytest.mark.parametrize(
    "image, image_format, message",
    [
        (np.zeros((8, 8, 4), np.uint8), "RGB", "H x W x 3"),
        (np.zeros((8, 8, 3), np.float32), "RGB", "uint8"),
        (np.zeros((0, 8, 3), np.uint8), "RGB", "empty"),
        (np.zeros((8, 8, 3), np.uint8), "GBR", "image_format"),
    ],
)
def test_bad_images_are_refused_in_one_line(tiny_predictor, image, image_format, message) -> None:
    with pytest.raises(InvalidImageError, match=message) as error:
        tiny_predictor.set_image(image, image_format)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "prompts, message",
    [
        (dict(point_coords=[[1, 2]]), "together"),
        (dict(point_coords=[1, 2], point_labels=[1]), r"\(N, 2\)"),
        (dict(point_coords=[[1, 2], [3, 4]], point_labels=[1]), "shape"),
        (dict(point_coords=[[1, 2]], point_labels=[2]), "foreground"),
        (dict(point_coords=[[np.nan, 2]], point_labels=[1]), "finite"),
        (dict(box=[1, 2, 3]), "box"),
        (dict(box=[1, 2, 3, 4], mask_input=np.zeros((1, 8, 8))), "mask_input"),
    ],
)
def test_bad_prompts_are_refused_in_one_line(tiny_predictor, prompts, message) -> None:
    with pytest.raises(PromptError, match=message) as error:
        tiny_predictor.predict(**prompts)
    assert "\n" not in str(error.value)


# --- transforms, against hand-derived values ----------------------------------------------------


def test_longest_side_shape_rounds_half_up() -> None:
    assert transforms.longest_side_shape((181, 258), 1024) == (718, 1024)  # 181 * 1024 / 258 = 718.4
    assert transforms.longest_side_shape((3, 5), 1024) == (614, 1024)  # 614.4
    assert transforms.longest_side_shape((1, 8), 4) == (1, 4)  # 0.5 rounds up


def test_nearest_resize_samples_floor_of_scaled_index() -> None:
    x = np.arange(15).reshape(3, 5)
    # rows floor(i * 3 / 2) = 0, 1; cols floor(j * 5 / 2) = 0, 2
    np.testing.assert_array_equal(transforms.resize_nearest(x, (2, 2)), [[0, 2], [5, 7]])


def test_dataset_input_pads_centred_when_both_sides_are_small() -> None:
    image = np.full((2, 3, 3), 200, np.uint8)
    tensor, pad = transforms.prepare_dataset_input(image, 4, (100.0, 100.0, 100.0), (50.0, 50.0, 50.0))
    assert pad == (1, 0)  # top = (4 - 2) // 2, left = (4 - 3) // 2
    expected = np.zeros((4, 4), np.float32)
    expected[1:3, 0:3] = 2.0  # (200 - 100) / 50
    np.testing.assert_array_equal(tensor[0, 0].numpy(), expected)
    logits = torch.arange(16.0).reshape(1, 1, 4, 4)
    back = transforms.postprocess_dataset_masks(logits, 4, pad, (2, 3))
    np.testing.assert_array_equal(back[0, 0].numpy(), logits[0, 0, 1:3, 0:3].numpy())


def test_coordinates_scale_per_axis() -> None:
    scaled = transforms.scale_coords(np.array([[10.0, 20.0]]), (100, 200), (50, 50))
    np.testing.assert_array_equal(scaled, [[2.5, 10.0]])  # x * 50 / 200, y * 50 / 100
    boxes = transforms.scale_boxes(np.array([10.0, 20.0, 30.0, 40.0]), (100, 200), (50, 50))
    np.testing.assert_array_equal(boxes, [2.5, 10.0, 7.5, 20.0])


def test_postprocess_crops_the_padding_before_resizing() -> None:
    low_res = torch.zeros(1, 1, 4, 4)
    # Input 8 x 16 in a 16 x 16 square: low-res row 3 lies in the padding and is far enough
    # from the crop that bilinear upsampling does not bleed it into rows 0-7.
    low_res[..., 3, :] = 5.0
    out = transforms.postprocess_masks(low_res, 16, (8, 16), (4, 8))
    assert out.shape == (1, 1, 4, 8) and float(out.max()) == 0.0
