"""Numerical parity of the 2D re-implementation (SAM ViT-B, SAM-Med2D) with the official code.

Fixtures (../shared/fixtures/sam_vit_b, ../shared/fixtures/sam_med2d) were recorded from the
official models with deterministic synthetic weights; the assertions are the READMEs'
recommended CPU float32 tolerances. The SAM ViT-B encoder at 1024 takes ~20 s on two cores,
so that family is marked slow (it still runs in CI). Also checked here: the official
preprocessing arrays, coordinate transforms, epsilon values, the adapter-free "SAM-Med2D*"
switch and the ViT-L/H architectures (on the meta device, no weights).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sammed.errors import CheckpointError
from sammed.models import build_model, get_model_spec, list_models, load_weights
from sammed.models.common import LayerNorm2d
from sammed.models.registry import spec_of
from sammed.models.sam2d import Sam2D, build_sam2d, drop_adapter_weights
from sammed.models.sam2d.adapter import Adapter
from support import FIXTURES_DIR, synth_weights

TOL = {
    "encoder": dict(atol=1e-4, rtol=1e-4),
    "prompt": dict(atol=1e-4, rtol=1e-4),
    "logits": dict(atol=2e-4, rtol=1e-4),
    "iou": dict(atol=1e-5, rtol=0),
    "f16": dict(atol=2e-3, rtol=2e-3),
}
MASK_DIFF_FRACTION = 1e-4  # "at most 0.01 % of pixels may differ"
MASK_CERTAIN_LOGIT = 1e-3  # pixels with |logit| above this must agree


@dataclass(frozen=True)
class Family:
    """One recorded fixture folder and how its official run was set up."""

    folder: Path
    model_name: str
    seed: int
    raw_image_key: str
    block0_crops: dict[str, tuple[slice, slice]]


FAMILIES = {
    "sam-med2d": Family(FIXTURES_DIR / "sam_med2d", "sam-med2d", 1101, "raw_image_bgr", {"enc_block0": np.s_[:, :]}),
    "sam-vit-b": Family(
        FIXTURES_DIR / "sam_vit_b",
        "sam-vit-b",
        1301,
        "raw_image_rgb",
        {
            "enc_block0_win00": np.s_[0:14, 0:14],
            "enc_block0_win04": np.s_[0:14, 56:64],
            "enc_block0_win44": np.s_[56:64, 56:64],
        },
    ),
}
FAMILY_PARAMS = ["sam-med2d", pytest.param("sam-vit-b", marks=pytest.mark.slow)]

pytestmark = pytest.mark.skipif(
    not all(f.folder.is_dir() for f in FAMILIES.values()), reason="shared parity fixtures not available"
)


@functools.lru_cache(maxsize=None)
def recorded_model(family: str) -> Sam2D:
    """The registry model loaded strictly with the fixture weights (cached: also used by
    test_predictor2d)."""
    spec = FAMILIES[family]
    model = build_model(spec.model_name)
    state_dict = synth_weights().make_state_dict(spec.folder / "manifest.tsv", spec.seed)
    load_weights(model, state_dict, spec.model_name)
    return model


class Recorded:
    """The fixture model plus its encoder outputs (and block-0 / patch-embed hooks) on the
    recorded encoder input."""

    def __init__(self, family: str) -> None:
        self.name = family
        self.family = FAMILIES[family]
        self.model = recorded_model(family)
        self.pipeline = spec_of(self.model).preprocessing
        self.image = dict(np.load(self.family.folder / "image.npz"))
        self.expected_encoder = dict(np.load(self.family.folder / "encoder.npz"))
        self.prepared = self.pipeline.prepare_image(self.image[self.family.raw_image_key], "RGB")
        self.intermediates: dict[str, torch.Tensor] = {}
        encoder = self.model.image_encoder
        hooks = [
            encoder.patch_embed.register_forward_hook(self._keep("enc_patch_embed")),
            encoder.blocks[0].register_forward_hook(self._keep("enc_block0")),
        ]
        with torch.no_grad():
            self.embeddings = self.model.encode_image(torch.from_numpy(self.image["input"]))
        for hook in hooks:
            hook.remove()

    def _keep(self, key):
        def hook(_module, _inputs, output):
            self.intermediates[key] = output.detach().clone()

        return hook

    def cases(self) -> list[str]:
        return sorted(p.stem for p in self.family.folder.glob("case_*.npz"))


@pytest.fixture(scope="module", params=FAMILY_PARAMS)
def recorded(request) -> Recorded:
    return Recorded(request.param)


def assert_close(actual: torch.Tensor, expected: np.ndarray, tier: str) -> None:
    expected = torch.from_numpy(np.asarray(expected, dtype=np.float32))
    torch.testing.assert_close(actual.float(), expected, **TOL[tier])


def assert_masks_match(actual: np.ndarray, expected: np.ndarray, logits: np.ndarray, what: str) -> None:
    """Binary masks agree wherever the reference logit is clearly away from the threshold."""
    differ = actual != expected
    assert differ.mean() <= MASK_DIFF_FRACTION, f"{what}: {differ.sum()} pixels differ"
    assert not np.any(differ & (np.abs(logits) > MASK_CERTAIN_LOGIT)), f"{what}: a confident pixel differs"


# --- weights -----------------------------------------------------------------------------------


def test_generated_weights_match_recorded_digest(recorded: Recorded) -> None:
    digest_file = next(recorded.family.folder.glob("digest_seed*.json"))
    digest = json.loads(digest_file.read_text())
    assert digest["seed"] == recorded.family.seed
    state_dict = recorded.model.state_dict()
    assert synth_weights().state_dict_sha256(state_dict) == digest["state_dict_sha256"]


def test_state_dict_keys_shapes_and_order_match_manifest(recorded: Recorded) -> None:
    manifest = synth_weights().read_manifest(recorded.family.folder / "manifest.tsv")
    actual = [(k, tuple(v.shape)) for k, v in recorded.model.state_dict().items()]
    assert actual == [(entry[0], tuple(entry[1])) for entry in manifest]


def test_pixel_buffers_are_not_in_the_state_dict(recorded: Recorded) -> None:
    assert not {"pixel_mean", "pixel_std"} & set(recorded.model.state_dict())
    assert recorded.model.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocessing_reproduces_the_recorded_encoder_input(recorded: Recorded) -> None:
    prepared = recorded.prepared
    assert torch.equal(prepared.input, torch.from_numpy(recorded.image["input"]))
    assert prepared.original_size == tuple(recorded.image["original_size"])
    if "input_size" in recorded.image:
        assert prepared.input_size == tuple(recorded.image["input_size"])


def test_sam_resize_longest_side_is_pil_bilinear() -> None:
    from sammed.models.sam2d import transforms

    image = np.load(FAMILIES["sam-vit-b"].folder / "image.npz")
    resized = transforms.resize_longest_side(image["raw_image_rgb"], 1024)
    assert np.array_equal(resized, image["image_resized"])


def test_sam_med2d_dataset_loader_input() -> None:
    from sammed.models.sam2d import transforms

    image = np.load(FAMILIES["sam-med2d"].folder / "image.npz")
    spec = get_model_spec("sam-med2d").preprocessing
    tensor, pad = transforms.prepare_dataset_input(image["raw_image_bgr"], 256, spec.pixel_mean, spec.pixel_std)
    assert pad is None  # W = 258 >= 256: resized, not padded
    assert torch.equal(tensor, torch.from_numpy(image["input_testloader"]))


def test_prompt_coordinates_map_to_the_recorded_model_frame(recorded: Recorded) -> None:
    for name in recorded.cases():
        case = np.load(recorded.family.folder / f"{name}.npz")
        if "point_coords" in case:
            coords = recorded.pipeline.coords_to_input(case["point_coords_orig"], recorded.prepared)
            assert np.array_equal(coords.astype(np.float32)[None], case["point_coords"]), name
        if "boxes" in case:
            boxes = recorded.pipeline.boxes_to_input(case["box_orig"][None], recorded.prepared)
            assert np.array_equal(boxes.astype(np.float32), case["boxes"]), name


# --- encoder -------------------------------------------------------------------------------------


def test_encoder_intermediates(recorded: Recorded) -> None:
    expected = recorded.expected_encoder
    if "enc_patch_embed" in expected:
        assert_close(recorded.intermediates["enc_patch_embed"], expected["enc_patch_embed"], "encoder")
    block0 = recorded.intermediates["enc_block0"]
    for key, (rows, cols) in recorded.family.block0_crops.items():
        assert_close(block0[:, rows, cols], expected[key], "encoder")


def test_image_embeddings(recorded: Recorded) -> None:
    assert_close(recorded.embeddings, recorded.expected_encoder["image_embeddings"], "encoder")


def test_dense_pe(recorded: Recorded) -> None:
    with torch.no_grad():
        pe = recorded.model.prompt_encoder.get_dense_pe()
    if "dense_pe" in recorded.expected_encoder:
        assert_close(pe, recorded.expected_encoder["dense_pe"], "encoder")
    else:
        assert_close(pe, recorded.expected_encoder["dense_pe_f16"], "f16")


# --- prompt encoder + decoder, every recorded case ---------------------------------------------


def _run_case(recorded: Recorded, case: dict, multimask: bool):
    points = None
    if "point_coords" in case:
        points = (torch.from_numpy(case["point_coords"]), torch.from_numpy(case["point_labels"]))
    boxes = torch.from_numpy(case["boxes"]) if "boxes" in case else None
    masks = torch.from_numpy(case["mask_input"]) if "mask_input" in case else None
    model = recorded.model
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        low_res, iou = model.mask_decoder(
            image_embeddings=recorded.embeddings,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        final = recorded.pipeline.logits_to_original(low_res, recorded.prepared)
    return sparse, dense, low_res, iou, final


def test_every_case_single_and_multimask(recorded: Recorded) -> None:
    names = recorded.cases()
    assert len(names) == 5
    for name in names:
        case = dict(np.load(recorded.family.folder / f"{name}.npz"))
        for suffix, multimask in (("", False), ("_multimask", True)):
            sparse, dense, low_res, iou, final = _run_case(recorded, case, multimask)
            assert_close(sparse, case["sparse_embeddings"], "prompt")
            assert_close(dense, case["dense_embeddings"], "prompt")
            assert_close(low_res, case[f"low_res_masks{suffix}"], "logits")
            assert_close(iou, case[f"iou_predictions{suffix}"], "iou")
            assert_close(final, case[f"final_logits{suffix}"], "logits")
            binary = recorded.pipeline.binarize(final).numpy()
            expected_logits = case[f"final_logits{suffix}"]
            expected = recorded.pipeline.binarize(torch.from_numpy(expected_logits)).numpy()
            assert_masks_match(binary, expected, expected_logits, f"{name}{suffix}")
            if multimask:
                assert int(iou.argmax()) == int(case["best_index_multimask"]), name


def test_point_only_prompt_gets_the_padding_token(recorded: Recorded) -> None:
    case = dict(np.load(recorded.family.folder / "case_a_point1.npz"))
    sparse, *_ = _run_case(recorded, case, multimask=False)
    assert sparse.shape[1] == case["point_coords"].shape[1] + 1
    torch.testing.assert_close(sparse[0, -1], recorded.model.prompt_encoder.not_a_point_embed.weight[0])


# --- hyper-parameters that numbers cannot see ---------------------------------------------------


def _layer_norm_eps(module: nn.Module) -> set[float]:
    return {m.eps for m in module.modules() if isinstance(m, (nn.LayerNorm, LayerNorm2d))}


@pytest.mark.parametrize("name", ["sam-vit-b", "sam-med2d"])
def test_epsilon_values_are_the_official_ones(name: str) -> None:
    with torch.device("meta"):
        model = get_model_spec(name).build()
    encoder = model.image_encoder
    adapters = nn.ModuleList(m for m in encoder.modules() if isinstance(m, Adapter))
    vit_norms = nn.ModuleList(m for b in encoder.blocks for m in (b.norm1, b.norm2))
    assert _layer_norm_eps(vit_norms) == {1e-6}
    assert _layer_norm_eps(encoder.neck) == {1e-6}
    assert _layer_norm_eps(model.prompt_encoder.mask_downscaling) == {1e-6}
    assert _layer_norm_eps(model.mask_decoder.transformer) == {1e-5}
    assert _layer_norm_eps(model.mask_decoder.output_upscaling) == {1e-6}
    if name == "sam-med2d":
        # Adapter LayerNorm: PyTorch's default 1e-5, not the ViT's 1e-6 (README: invisible numerically).
        assert len(adapters) == 12 and _layer_norm_eps(adapters) == {1e-5}
    else:
        assert len(adapters) == 0
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(g.approximate == "none" for g in gelus)


def test_sam_med2d_attention_geometry() -> None:
    with torch.device("meta"):
        model = build_model("sam-med2d")
    blocks = model.image_encoder.blocks
    assert [i for i, b in enumerate(blocks) if b.window_size == 0] == [2, 5, 8, 11]
    assert tuple(blocks[0].attn.rel_pos_h.shape) == (27, 64)
    assert tuple(blocks[2].attn.rel_pos_w.shape) == (31, 64)
    assert model.low_res_size == 64


# --- SAM-Med2D* (adapters dropped) -------------------------------------------------------------


def test_no_adapter_variant_equals_a_model_built_without_adapters() -> None:
    state_dict = recorded_model("sam-med2d").state_dict()  # the fixture weights (digest-checked)
    bypassed = build_model("sam-med2d", bypass_adapters=True)
    load_weights(bypassed, state_dict, "sam-med2d (adapters bypassed)")
    lean = build_model("sam-med2d-no-adapter")  # the registry entry holds no adapter weights
    assert len(state_dict) - len(lean.state_dict()) == 72
    load_weights(lean, get_model_spec("sam-med2d-no-adapter").adapt(state_dict), "sam-med2d-no-adapter")
    image = torch.from_numpy(np.load(FAMILIES["sam-med2d"].folder / "image.npz")["input"])
    with torch.no_grad():
        bypassed_embedding = bypassed.encode_image(image)
        lean_embedding = lean.encode_image(image)
    torch.testing.assert_close(bypassed_embedding, lean_embedding, atol=0, rtol=0)
    expected_with_adapters = np.load(FAMILIES["sam-med2d"].folder / "encoder.npz")["image_embeddings"]
    assert (bypassed_embedding - torch.from_numpy(expected_with_adapters)).abs().max() > 0.1


# --- ViT-L / ViT-H (no fixtures: architecture only) --------------------------------------------


@pytest.mark.parametrize(
    "name, params, keys, depth, head_dim, global_blocks",
    [
        ("sam-vit-b", 93_735_472, 314, 12, 64, [2, 5, 8, 11]),
        ("sam-vit-l", 312_342_832, 482, 24, 64, [5, 11, 17, 23]),
        ("sam-vit-h", 641_090_608, 594, 32, 80, [7, 15, 23, 31]),
        ("sam-med2d", 271_241_776, 386, 12, 64, [2, 5, 8, 11]),
    ],
)
def test_architecture_sizes(name, params, keys, depth, head_dim, global_blocks) -> None:
    with torch.device("meta"):
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys
    blocks = model.image_encoder.blocks
    assert len(blocks) == depth
    assert [i for i, b in enumerate(blocks) if b.window_size == 0] == global_blocks
    grid = model.config.embedding_grid
    assert tuple(blocks[global_blocks[0]].attn.rel_pos_h.shape) == (2 * grid - 1, head_dim)
    assert tuple(blocks[0].attn.rel_pos_w.shape) == (27, head_dim)


# --- registry ------------------------------------------------------------------------------------


def test_registry_entries() -> None:
    assert {"sam-vit-b", "sam-vit-l", "sam-vit-h", "sam-med2d", "sam-med2d-no-adapter"} <= set(list_models(dims=2))
    for name in ("sam-vit-b", "sam-vit-l", "sam-vit-h"):
        spec = get_model_spec(name)
        assert spec.dims == 2 and spec.license == "Apache-2.0"
        assert spec.checkpoint_file in spec.source_url
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert "1024" in spec.preprocessing.describe()
    assert get_model_spec("vit_b").name == "sam-vit-b"
    med = get_model_spec("sam-med2d")
    assert med.checkpoint_file == "sam-med2d_b.pth" and med.sha256 is None
    assert "nearest" in med.preprocessing.describe() and "BGR" in med.preprocessing.describe()
    lean = get_model_spec("sam-med2d-no-adapter")
    assert not lean.config.encoder_adapter and lean.adapt_state_dict.load() is drop_adapter_weights


def test_unknown_config_override_is_rejected() -> None:
    with pytest.raises(TypeError, match="encoder_adpter"):
        build_sam2d(get_model_spec("sam-med2d").config.with_overrides(encoder_adpter=True))


# --- official checkpoint file layouts, through build_model (small overrides keep it fast) -------

SMALL = dict(
    img_size=64, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
    window_size=3,
)


def _small_state_dict(name: str, **overrides) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return get_model_spec(name).build(**SMALL, **overrides).state_dict()


def test_sam_med2d_file_layout_loads_strictly_into_both_variants(tmp_path: Path) -> None:
    """sam-med2d_b.pth is {'model': state_dict}; SAM-Med2D* loads the same file."""
    state_dict = _small_state_dict("sam-med2d")
    path = tmp_path / "sam-med2d_b.pth"
    torch.save({"model": state_dict}, path)
    for name in ("sam-med2d", "sam-med2d-no-adapter"):
        model = build_model(name, checkpoint=path, **SMALL)
        loaded = model.state_dict()
        expected = state_dict if name == "sam-med2d" else drop_adapter_weights(state_dict)
        assert len(loaded) == len(expected) and all(torch.equal(loaded[k], v) for k, v in expected.items()), name
    assert not model.image_encoder.blocks[0].has_adapter  # the lean entry drops the adapter weights


def test_sam_bare_state_dict_loads_and_a_sam_file_is_refused_by_sam_med2d(tmp_path: Path) -> None:
    """sam_vit_b_01ec64.pth is a bare state dict; without adapter keys SAM-Med2D names what is missing."""

    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(_small_state_dict("sam-vit-b"), path)
    build_model("sam-vit-b", checkpoint=path, **SMALL)
    with pytest.raises(CheckpointError, match=r"missing 12 key\(s\): image_encoder\.blocks\.0\.Adapter"):
        build_model("sam-med2d", checkpoint=path, **SMALL)
