"""Numerical parity of the SAM-Med3D re-implementation with the official code.

Fixtures (../shared/fixtures/sam_med3d) were recorded from the official model with
deterministic synthetic weights; tolerances are the README's *strict* tier (CPU float32).
The turbo configuration is marked slow (it builds a 100M-parameter model) and runs in CI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sammed.models import build_model, load_weights
from sammed.models.common import LayerNorm3d
from support import SAM3D_FIXTURES as SAM3D
from support import synth_weights

pytestmark = pytest.mark.skipif(not SAM3D.is_dir(), reason="shared parity fixtures not available")

STRICT = {
    "enc": dict(atol=6e-5, rtol=0),
    "image_embeddings": dict(atol=3e-5, rtol=0),
    "pe": dict(atol=2e-5, rtol=0),
    "low_res": dict(atol=3e-5, rtol=0),
    "iou": dict(atol=3e-6, rtol=0),
    "final_f16": dict(atol=1e-4, rtol=1e-3),
}
CONFIGS = {
    "tiny": ("sam-med3d-tiny", 4321, ["enc_block0", "enc_block1", "enc_block3"]),
    "turbo": ("sam-med3d-turbo", 1234, ["enc_block0", "enc_block2", "enc_block11"]),
}


class Recorded:
    """A model loaded with the fixture weights plus its encoder outputs on the fixture image."""

    def __init__(self, config: str) -> None:
        name, seed, blocks = CONFIGS[config]
        synth = synth_weights()
        self.state_dict = synth.make_state_dict(SAM3D / f"manifest_{config}.tsv", seed)
        self.sha256 = synth.state_dict_sha256(self.state_dict)
        self.model = build_model(name)
        load_weights(self.model, self.state_dict, name)
        self.image = torch.from_numpy(np.load(SAM3D / "image.npz")["image"])
        self.expected_encoder = np.load(SAM3D / f"{config}_encoder.npz")
        self.intermediates: dict[str, torch.Tensor] = {}
        encoder = self.model.image_encoder
        hooks = [encoder.patch_embed.register_forward_hook(self._keep("enc_patch_embed"))]
        for key in blocks:
            index = int(key.removeprefix("enc_block"))
            hooks.append(encoder.blocks[index].register_forward_hook(self._keep(key)))
        with torch.no_grad():
            self.embeddings = encoder(self.image)
        for hook in hooks:
            hook.remove()

    def _keep(self, key):
        def hook(_module, _inputs, output):
            self.intermediates[key] = output.detach().clone()

        return hook


@pytest.fixture(scope="module", params=["tiny", pytest.param("turbo", marks=pytest.mark.slow)])
def recorded(request) -> Recorded:
    return Recorded(request.param)


@pytest.fixture(scope="module")
def index() -> dict:
    return json.loads((SAM3D / "index.json").read_text())


def assert_close(actual: torch.Tensor, expected: np.ndarray, tier: str) -> None:
    torch.testing.assert_close(actual, torch.from_numpy(np.asarray(expected)), **STRICT[tier])


def test_generated_weights_match_recorded_digest(recorded: Recorded, index: dict) -> None:
    config = "turbo" if recorded.model.config.encoder_depth == 12 else "tiny"
    assert recorded.sha256 == index["configs"][config]["weights"]["state_dict_sha256"]


def test_state_dict_keys_and_order_match_manifest(recorded: Recorded) -> None:
    assert list(recorded.model.state_dict()) == list(recorded.state_dict)


def test_encoder_intermediates(recorded: Recorded) -> None:
    for key in recorded.expected_encoder.files:
        if key.startswith("enc_"):
            assert_close(recorded.intermediates[key], recorded.expected_encoder[key], "enc")


def test_image_embeddings(recorded: Recorded) -> None:
    assert_close(recorded.embeddings, recorded.expected_encoder["image_embeddings"], "image_embeddings")


def test_dense_pe(recorded: Recorded) -> None:
    with torch.no_grad():
        pe = recorded.model.prompt_encoder.get_dense_pe()
    assert_close(pe, recorded.expected_encoder["dense_pe"], "pe")


def test_reference_windowing_equals_fast_path(recorded: Recorded) -> None:
    encoder = recorded.model.image_encoder
    encoder.set_reference_windowing(True)
    try:
        with torch.no_grad():
            reference = encoder(recorded.image)
    finally:
        encoder.set_reference_windowing(False)
    assert_close(reference, recorded.expected_encoder["image_embeddings"], "image_embeddings")
    torch.testing.assert_close(reference, recorded.embeddings, **STRICT["image_embeddings"])


def _cases(config: str) -> list[str]:
    return sorted(p.stem for p in SAM3D.glob(f"{config}_case_*.npz"))


def _run_case(recorded: Recorded, case: dict, multimask: bool):
    points = None
    if "point_coords" in case:
        points = (torch.from_numpy(case["point_coords"]), torch.from_numpy(case["point_labels"]))
    masks = torch.from_numpy(case["mask_input"]) if "mask_input" in case else None
    model = recorded.model
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=masks)
        low_res, iou = model.mask_decoder(
            image_embeddings=recorded.embeddings,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    return sparse, dense, low_res, iou


def test_every_case(recorded: Recorded) -> None:
    config = "turbo" if recorded.model.config.encoder_depth == 12 else "tiny"
    names = _cases(config)
    assert len(names) == (5 if config == "turbo" else 2)
    for name in names:
        case = dict(np.load(SAM3D / f"{name}.npz"))
        sparse, dense, low_res, iou = _run_case(recorded, case, multimask=False)
        assert_close(sparse, case["sparse_embeddings"], "pe")
        assert_close(dense, case["dense_embeddings"], "pe")
        assert_close(low_res, case["low_res_masks"], "low_res")
        assert_close(iou, case["iou_predictions"], "iou")

        _, _, low_res3, iou3 = _run_case(recorded, case, multimask=True)
        assert_close(low_res3, case["low_res_masks_multimask"], "low_res")
        assert_close(iou3, case["iou_predictions_multimask"], "iou")

        with torch.no_grad():
            final = recorded.model.upscale_logits(low_res)
        if "final_logits_128_f16" in case:
            assert_close(final, case["final_logits_128_f16"].astype(np.float32), "final_f16")
        batch = final.shape[0]
        expected_mask = np.unpackbits(case["final_mask_packbits"])[: batch * 128**3].reshape(final.shape)
        actual_mask = (final > 0).numpy()
        differ = actual_mask != expected_mask.astype(bool)
        assert differ.mean() <= 1e-5, f"{name}: {differ.sum()} voxels differ"
        assert np.all(np.abs(final.numpy()[differ]) < 1e-3)


def test_points_none_gives_empty_sparse_tokens(recorded: Recorded) -> None:
    config = "turbo" if recorded.model.config.encoder_depth == 12 else "tiny"
    if config != "turbo":
        pytest.skip("points=None case is recorded for turbo")
    case = dict(np.load(SAM3D / "turbo_case_e_points_none.npz"))
    sparse, *_ = _run_case(recorded, case, multimask=False)
    assert sparse.shape == (1, 0, 384)


def test_zero_mask_differs_from_no_mask(recorded: Recorded) -> None:
    """The official first click passes a zero mask, which is not the no-mask embedding."""
    prompt_encoder = recorded.model.prompt_encoder
    with torch.no_grad():
        _, dense_zero = prompt_encoder(points=None, boxes=None, masks=torch.zeros(1, 1, 32, 32, 32))
        _, dense_none = prompt_encoder(points=None, boxes=None, masks=None)
    assert (dense_zero - dense_none).abs().max() > 1e-2


def _layer_norm_eps(module: nn.Module) -> set[float]:
    return {m.eps for m in module.modules() if isinstance(m, (nn.LayerNorm, LayerNorm3d))}


def test_epsilon_values_are_the_official_ones() -> None:
    model = build_model("sam-med3d-tiny")
    encoder_blocks = nn.ModuleList(model.image_encoder.blocks)
    assert _layer_norm_eps(encoder_blocks) == {1e-6}
    assert _layer_norm_eps(model.image_encoder.neck) == {1e-6}
    assert _layer_norm_eps(model.prompt_encoder.mask_downscaling) == {1e-6}
    assert _layer_norm_eps(model.mask_decoder.transformer) == {1e-5}
    assert _layer_norm_eps(model.mask_decoder.output_upscaling) == {1e-6}
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus and all(g.approximate == "none" for g in gelus)
