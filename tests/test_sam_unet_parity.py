"""Numerical parity of SAM-UNet (ResNet-34 and ResNet-50 branches) with the official code.

Fixtures (../shared/fixtures/sam_unet) were recorded from Hhankyangg/sam-unet with
deterministic synthetic weights whose manifests add BatchNorm buffers as ``#@buffer`` lines.
Tolerances are the fixture README's recommended fp32 assertions. The ResNet-50 variant is
marked slow (a 138M-parameter model, 2 cases); it runs in CI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sammed.errors import CheckpointError, PromptError
from sammed.inference.predictor2d import Predictor2D
from sammed.models import build_model, get_model_spec, load_weights
from sammed.models.common import LayerNorm2d
from sammed.models.sam2d.sam_unet import (
    SamUNet,
    SamUNetConfig,
    SamUNetFeatures,
    SamUNetPipeline,
    decode_item,
    infer,
    infer_image,
    prepare_item,
    preprocess,
)
from sammed.models.sam2d.sam_unet.pipeline import scale_boxes_float32, scale_coords_float32
from sammed.models.sam2d.transforms import longest_side_shape, resize_longest_side
from support import FIXTURES_DIR, synth_weights

UNET = FIXTURES_DIR / "sam_unet"
SPECS_DIR = FIXTURES_DIR.parent / "specs"

pytestmark = pytest.mark.skipif(not UNET.is_dir(), reason="shared SAM-UNet fixtures not available")

TOL = {
    "features": dict(atol=1e-4, rtol=1e-4),
    "prompts": dict(atol=1e-4, rtol=1e-4),
    "logits": dict(atol=2e-4, rtol=1e-4),
    "float16": dict(atol=2e-3, rtol=2e-3),
}


@dataclass(frozen=True)
class Variant:
    name: str
    manifest: str
    keys_file: str
    prefix: str  # fixture file prefix
    index_key: str
    cnn_suffix: str  # ResNet-50 stores its CNN features as float16 copies
    cases: tuple[str, ...]
    parameters: int  # spec table, buffers excluded
    trainable: int


VARIANTS = {
    "r34": Variant(
        "sam-unet-r34", "manifest.tsv", "sam_unet_keys_full.txt", "", "main", "",
        ("case_a_point1", "case_b_points3", "case_c_box", "case_d_box_mask", "case_e_boxes2"),
        116_019_884, 29_347_244,
    ),
    "r50": Variant(
        "sam-unet-r50", "manifest_res50.tsv", "sam_unet_res50_keys_full.txt", "res50_", "res50_", "_f16",
        ("case_a_point1", "case_c_box"),
        138_428_204, 51_755_564,
    ),
}
SEED = 1201
GLOBAL_BLOCKS = (2, 5, 8, 11)


def fixture_state_dict(manifest: Path, seed: int = SEED) -> dict[str, torch.Tensor]:
    """The README's recipe: synth_weights entries plus the ``#@buffer`` BatchNorm buffers, in file order."""
    synth = synth_weights()
    generated = synth.make_state_dict(manifest, seed)
    state: dict[str, torch.Tensor] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.startswith("#@buffer\t"):
            _, key, shape_field, dtype, rule = line.split("\t")
            shape = tuple(int(s) for s in shape_field.split("x")) if shape_field else ()
            if rule.startswith("make_tensor:"):
                state[key] = synth.make_tensor(rule.removeprefix("make_tensor:"), shape, dtype, seed)
            elif rule == "zeros":
                state[key] = torch.zeros(shape, dtype=torch.int64)
            else:
                raise ValueError(f"unknown buffer rule {rule!r}")
        elif line.strip() and not line.startswith("#"):
            key = line.split("\t")[0]
            state[key] = generated[key]
    return state


@dataclass
class Recorded:
    """A variant loaded with the fixture weights and its encoder intermediates on the fixture input."""

    variant: Variant
    model: nn.Module
    keys: list[str]
    shapes: list[tuple[int, ...]]
    sha256: str
    expected: dict
    captured: dict[str, torch.Tensor] = field(default_factory=dict)


def _capture(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run encode_image with hooks that record every intermediate the fixtures store."""
    captured: dict[str, torch.Tensor] = {}
    vit = model.image_encoder.sam_img_encoder

    def keep(name):
        return lambda _module, _inputs, output: captured.__setitem__(name, output)

    def keep_input(name):
        return lambda _module, inputs: captured.__setitem__(name, inputs[0])

    hooks = [vit.patch_embed.register_forward_hook(keep("enc_patch_embed"))]
    hooks.append(vit.blocks[0].register_forward_hook(keep("enc_block0")))
    for g in GLOBAL_BLOCKS:
        hooks.append(vit.blocks[g].register_forward_pre_hook(keep_input(f"enc_block{g}_in")))
        hooks.append(vit.blocks[g].register_forward_hook(keep(f"enc_block{g}_out")))
    for i, stage in enumerate((model.resnet.stage1, model.resnet.stage2, model.resnet.stage3, model.resnet.stage4)):
        hooks.append(stage.register_forward_hook(keep(f"cnn_f{i + 1}")))
    for i, adapter in enumerate(model.adapters_in):
        hooks.append(adapter.register_forward_hook(keep(f"adapter_in{i}")))
    for k, bridge in enumerate(model.adapters_bridge):
        hooks.append(bridge.register_forward_hook(keep(f"bridge{k}")))
    hooks.append(model.embedding_encoder.register_forward_hook(keep("embedding_encoder_out")))
    try:
        with torch.no_grad():
            features = model.encode_image(x)
            captured["dense_pe"] = model.prompt_encoder.get_dense_pe()
    finally:
        for hook in hooks:
            hook.remove()
    captured["image_embeddings"] = features.image_embeddings
    captured["multi_scale_feature"] = features.multi_scale_feature
    return captured


_CACHE: dict[str, Recorded] = {}


def recorded_variant(key: str) -> Recorded:
    if key not in _CACHE:
        variant = VARIANTS[key]
        state = fixture_state_dict(UNET / variant.manifest)
        model = build_model(variant.name)
        load_weights(model, state, variant.name)
        recorded = Recorded(
            variant=variant,
            model=model,
            keys=list(state),
            shapes=[tuple(t.shape) for t in state.values()],
            sha256=synth_weights().state_dict_sha256(state),
            expected=dict(np.load(UNET / f"{variant.prefix}encoder.npz")),
        )
        del state
        recorded.captured = _capture(model, torch.from_numpy(np.load(UNET / "image.npz")["input"]))
        _CACHE[key] = recorded
    return _CACHE[key]


@pytest.fixture(scope="module", params=["r34", pytest.param("r50", marks=pytest.mark.slow)])
def recorded(request) -> Recorded:
    yield recorded_variant(request.param)
    _CACHE.pop(request.param, None)  # free ~1 GB before the next variant


@pytest.fixture(scope="module")
def image_npz() -> dict:
    return dict(np.load(UNET / "image.npz"))


@pytest.fixture(scope="module")
def index() -> dict:
    return json.loads((UNET / "index.json").read_text())


def assert_close(actual: torch.Tensor, expected: np.ndarray, tier: str, what: str = "") -> None:
    reference = torch.from_numpy(np.asarray(expected, dtype=np.float32))
    torch.testing.assert_close(actual.float(), reference, **TOL[tier], msg=lambda m: f"{what}: {m}")


# --- weights and state dict ---------------------------------------------------------------------


def test_generated_weights_match_recorded_digest(recorded: Recorded, index: dict) -> None:
    assert recorded.sha256 == index["variants"][recorded.variant.index_key]["weights"]["state_dict_sha256"]


def test_state_dict_keys_order_and_shapes_match_official(recorded: Recorded) -> None:
    state = recorded.model.state_dict()
    assert list(state) == recorded.keys
    official = [line.split(" ", 1) for line in (SPECS_DIR / recorded.variant.keys_file).read_text().splitlines()]
    assert [key for key, _ in official] == recorded.keys
    assert [tuple(v.shape) for v in state.values()] == recorded.shapes
    assert [str(tuple(v.shape)) for v in state.values()] == [shape for _, shape in official]


def test_parameter_counts_match_official(recorded: Recorded) -> None:
    model = recorded.model
    assert sum(p.numel() for p in model.parameters()) == recorded.variant.parameters
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == recorded.variant.trainable
    assert not any(p.requires_grad for p in model.image_encoder.parameters())  # frozen ViT


def test_other_variant_weights_are_refused(recorded: Recorded) -> None:
    """A ResNet-34 file given to the ResNet-50 model (or the reverse) fails with a clear error."""
    other_depth = 50 if recorded.variant.name == "sam-unet-r34" else 34
    wrong = {k: v for k, v in recorded.model.state_dict().items() if not k.startswith(("resnet.", "adapters_in."))}
    other = SamUNet(SamUNetConfig(resnet_depth=other_depth))
    wrong.update({k: v for k, v in other.state_dict().items() if k.startswith(("resnet.", "adapters_in."))})
    with pytest.raises(CheckpointError, match="does not match"):
        load_weights(recorded.model, wrong, recorded.variant.name)  # refused before anything is copied


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocessing_is_exact(image_npz: dict) -> None:
    raw = image_npz["raw_image_rgb"]
    assert longest_side_shape(raw.shape[:2], 256) == tuple(image_npz["input_size"])
    resized = resize_longest_side(raw, 256)
    np.testing.assert_array_equal(resized, image_npz["image_resized"])
    official = preprocess(torch.from_numpy(resized.copy()).permute(2, 0, 1).float())
    assert torch.equal(official[None], torch.from_numpy(image_npz["input"]))
    prepared = SamUNetPipeline().prepare_image(raw, "RGB")
    assert torch.equal(prepared.input, torch.from_numpy(image_npz["input"]))
    assert prepared.input_size == tuple(image_npz["input_size"])


def test_image_file_reads_as_the_recorded_rgb(data_dir: Path, image_npz: dict) -> None:
    from PIL import Image

    with Image.open(data_dir / "sammed2d_demo_2d" / "images" / "s0114_111.png") as image:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), image_npz["raw_image_rgb"])


@pytest.mark.parametrize("name", VARIANTS["r34"].cases)
def test_prompt_scaling_is_exact_float32(name: str, image_npz: dict) -> None:
    case = np.load(UNET / f"{name}.npz")
    original, resized = tuple(image_npz["original_size"]), tuple(image_npz["input_size"])
    if "point_coords_orig" in case:
        scaled = scale_coords_float32(case["point_coords_orig"][None], original, resized)
        assert torch.equal(scaled, torch.from_numpy(case["point_coords"]))
    else:
        scaled = scale_boxes_float32(case["box_orig"], original, resized)
        assert torch.equal(scaled, torch.from_numpy(case["boxes"]))
        pipeline = SamUNetPipeline()
        prepared = pipeline.prepare_image(image_npz["raw_image_rgb"])
        np.testing.assert_array_equal(pipeline.boxes_to_input(case["box_orig"], prepared), case["boxes"])


# --- encoder ------------------------------------------------------------------------------------


def test_cnn_branch_features(recorded: Recorded) -> None:
    tier = "float16" if recorded.variant.cnn_suffix else "features"
    for i in range(1, 5):
        key = f"cnn_f{i}{recorded.variant.cnn_suffix}"
        assert_close(recorded.captured[f"cnn_f{i}"], recorded.expected[key], tier, key)


def test_cnn_to_vit_injections(recorded: Recorded) -> None:
    for i in range(4):
        key = f"adapter_in{i}"
        assert_close(recorded.captured[key], recorded.expected[key], "features", key)
    for key in recorded.expected:
        if key.startswith("enc_"):
            assert_close(recorded.captured[key], recorded.expected[key], "features", key)


def test_bridges_and_fused_multi_scale_map(recorded: Recorded) -> None:
    for key in ("bridge0", "bridge1", "bridge2", "embedding_encoder_out", "multi_scale_feature"):
        assert_close(recorded.captured[key], recorded.expected[key], "features", key)


def test_image_embeddings_and_dense_pe(recorded: Recorded) -> None:
    assert_close(recorded.captured["image_embeddings"], recorded.expected["image_embeddings"], "features")
    assert_close(recorded.captured["dense_pe"], recorded.expected["dense_pe"], "features")


# --- infer() cases ------------------------------------------------------------------------------


def _prompt_kwargs(case: dict) -> dict:
    kwargs: dict = {}
    if "point_coords_orig" in case:
        kwargs.update(point_coords=case["point_coords_orig"], point_labels=case["point_labels"][0])
    if "box_orig" in case:
        kwargs["boxes"] = case["box_orig"]
    if "mask_input" in case:
        kwargs["mask_input"] = torch.from_numpy(case["mask_input"])
    return kwargs


def assert_masks_match(mask: torch.Tensor, expected_mask: np.ndarray, logits: np.ndarray, name: str) -> None:
    """README rule: equal wherever |logit| > 1e-3, at most 0.01 % of pixels differ overall."""
    differ = mask.numpy() != expected_mask
    assert differ.mean() <= 1e-4, f"{name}: {differ.sum()} pixels differ"
    assert np.all(np.abs(logits[differ]) <= 1e-3), f"{name}: a confident pixel differs"


def test_infer_cases(recorded: Recorded, image_npz: dict) -> None:
    """Every recorded ``infer()`` call: official item preparation from the raw RGB image and
    original-pixel prompts, then the per-image decode on the (already checked) encoder features."""
    model = recorded.model
    features = SamUNetFeatures(recorded.captured["image_embeddings"], recorded.captured["multi_scale_feature"])
    for name in recorded.variant.cases:
        case = dict(np.load(UNET / f"{recorded.variant.prefix}{name}.npz"))
        item = prepare_item(image_npz["raw_image_rgb"], **_prompt_kwargs(case))
        assert torch.equal(item["image"], torch.from_numpy(image_npz["image_resized"]).permute(2, 0, 1).float())
        for key, stored in (("point_coords", "point_coords"), ("point_labels", "point_labels"), ("boxes", "boxes")):
            assert (key in item) == (stored in case), f"{name}: {key}"
            if key in item:
                assert torch.equal(item[key], torch.from_numpy(case[stored])), f"{name}: {key}"

        points = (item["point_coords"], item["point_labels"]) if "point_coords" in item else None
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(points=points, boxes=item.get("boxes"), masks=item.get("mask_inputs"))
        assert_close(sparse, case["sparse_embeddings"], "prompts", f"{name} sparse")
        assert_close(dense, case["dense_embeddings"], "prompts", f"{name} dense")

        output = decode_item(model, features, item, return_logits=True)
        assert output["masks"].dtype == torch.bool
        assert output["low_res_logits"].shape == case["low_res_masks"].shape
        assert_close(output["low_res_logits"], case["low_res_masks"], "logits", f"{name} low-res")
        assert_close(output["logits"], case["final_logits"], "logits", f"{name} final")
        assert_masks_match(output["masks"], case["final_mask"], case["final_logits"], name)


def test_infer_image_end_to_end(recorded: Recorded, image_npz: dict) -> None:
    """The whole official path in one call (encoder included) on the box case, SAM-UNet's prompt."""
    case = np.load(UNET / f"{recorded.variant.prefix}case_c_box.npz")
    output = infer_image(recorded.model, image_npz["raw_image_rgb"], boxes=case["box_orig"], return_logits=True)
    assert_close(output["low_res_logits"], case["low_res_masks"], "logits", "low-res")
    assert_close(output["logits"], case["final_logits"], "logits", "final")
    assert_masks_match(output["masks"], case["final_mask"], case["final_logits"], "case_c_box")


def test_predictor2d_wraps_sam_unet(recorded: Recorded, image_npz: dict) -> None:
    """``Predictor2D`` with the registry pipeline reproduces every case (one mask, NaN score)."""
    predictor = Predictor2D(recorded.model)
    predictor.set_image(image_npz["raw_image_rgb"])
    for name in recorded.variant.cases:
        case = dict(np.load(UNET / f"{recorded.variant.prefix}{name}.npz"))
        prompts: dict = {"mask_input": case["mask_input"][0] if "mask_input" in case else None}
        if "point_coords_orig" in case:
            prompts.update(point_coords=case["point_coords_orig"], point_labels=case["point_labels"][0])
        if "box_orig" in case:
            prompts["box"] = case["box_orig"]  # (Bp, 4): batched outputs
        masks, scores, low_res = predictor.predict(**prompts)
        if "box_orig" not in case:
            masks, scores, low_res = masks[None], scores[None], low_res[None]
        assert masks.shape == case["final_mask"].shape and np.isnan(scores).all()
        assert_close(torch.from_numpy(low_res), case["low_res_masks"], "logits", f"{name} predictor")
        assert_masks_match(torch.from_numpy(masks), case["final_mask"], case["final_logits"], f"{name} predictor")


def test_batched_infer_matches_single_images(recorded: Recorded, image_npz: dict) -> None:
    """The official batched API: two images in one call give each image's own results."""
    resized = torch.from_numpy(image_npz["image_resized"].copy()).permute(2, 0, 1).float()
    original = tuple(int(s) for s in image_npz["original_size"])
    box_case = np.load(UNET / f"{recorded.variant.prefix}case_c_box.npz")
    point_case = np.load(UNET / f"{recorded.variant.prefix}case_a_point1.npz")
    items = [
        {"image": resized, "original_size": original, "boxes": torch.from_numpy(box_case["boxes"])},
        {
            "image": resized,
            "original_size": original,
            "point_coords": torch.from_numpy(point_case["point_coords"]),
            "point_labels": torch.from_numpy(point_case["point_labels"]),
        },
    ]
    outputs = infer(recorded.model, items)
    assert len(outputs) == 2
    assert_close(outputs[0]["low_res_logits"], box_case["low_res_masks"], "logits", "batched box")
    assert_close(outputs[1]["low_res_logits"], point_case["low_res_masks"], "logits", "batched point")
    assert outputs[1]["masks"].shape == (1, 1, *original)


# --- numerics conventions and guards -------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_r34() -> nn.Module:
    """An untrained ResNet-34 SAM-UNet as build_model returns it."""
    return build_model("sam-unet-r34")


def test_batchnorm_is_eval_mode_with_official_eps(fresh_r34: nn.Module) -> None:
    norms = [m for m in fresh_r34.resnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 36
    assert all(not m.training and m.track_running_stats for m in norms)
    assert {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.1)}


def test_layer_norm_eps_and_gelu_are_the_official_ones(fresh_r34: nn.Module) -> None:
    model = fresh_r34
    decoder = model.mask_decoder

    def eps(module: nn.Module) -> set[float]:
        return {m.eps for m in module.modules() if isinstance(m, (nn.LayerNorm, LayerNorm2d))}

    assert eps(model.image_encoder) == eps(model.prompt_encoder) == {1e-6}
    assert eps(model.adapters_in) == eps(model.adapters_bridge) == eps(model.embedding_encoder) == {1e-6}
    assert eps(decoder.embedding_maskfeature) == eps(decoder.sam_mask_decoder.output_upscaling) == {1e-6}
    assert eps(decoder.sam_mask_decoder.transformer) == {1e-5}
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(g.approximate == "none" for g in gelus)


def test_infer_refuses_train_mode_batchnorm(fresh_r34: nn.Module, image_npz: dict) -> None:
    fresh_r34.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            infer_image(fresh_r34, image_npz["raw_image_rgb"], boxes=np.array([94.0, 65.0, 144.0, 97.0]))
    finally:
        fresh_r34.eval()


def test_bad_prompts_give_clear_errors(fresh_r34: nn.Module, image_npz: dict) -> None:
    image = image_npz["raw_image_rgb"]
    with pytest.raises(PromptError, match="x0, y0, x1, y1"):
        infer_image(fresh_r34, image, boxes=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(PromptError, match="point_labels"):
        infer_image(fresh_r34, image, point_coords=np.array([[10.0, 20.0]]))
    with pytest.raises(PromptError, match="point_labels has shape"):
        infer_image(fresh_r34, image, point_coords=np.array([[10.0, 20.0]]), point_labels=[1, 0])
    with pytest.raises(PromptError, match=r"\(x, y\)"):
        infer_image(fresh_r34, image, point_coords=np.array([[10.0, 20.0, 3.0]]), point_labels=[1])


def test_registry_entries() -> None:
    for name, depth, alias in (("sam-unet-r34", 34, "res34_sam_unet"), ("sam-unet-r50", 50, "res50_sam_unet")):
        spec = get_model_spec(name)
        assert spec.dims == 2 and spec.family == "sam-unet"
        assert spec.config.resnet_depth == depth
        assert get_model_spec(alias) is spec
        assert spec.license and spec.source_url and "sam-unet" in spec.source_url
        assert spec.checkpoint_file is None  # no released checkpoint
        text = spec.preprocessing.describe()
        assert "256" in text and "PIL bilinear" in text and "float32" in text
