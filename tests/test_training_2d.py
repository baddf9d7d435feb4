"""2D trainers on the shared SA-Med2D demo list: what learns, what stays frozen, checkpoints that load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sammed.models import build_model
from sammed.training.data2d import noisy_box
from sammed.training.losses2d import SAM_MED2D_WEIGHTS, FocalDiceIoULoss, dice_term, focal_term
from sammed.training.trainer2d import Train2DConfig, train_2d

TINY_MED2D = dict(img_size=64, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                  encoder_global_attn_indexes=(1,), window_size=2, prompt_embed_dim=32, decoder_mlp_dim=64)
TINY_UNET = dict(img_size=128, encoder_embed_dim=32, encoder_depth=4, encoder_num_heads=2,
                 encoder_global_attn_indexes=(0, 1, 2, 3), window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64)


@pytest.fixture(scope="module")
def train_list(data_dir: Path) -> Path:
    return data_dir / "sammed2d_demo_2d" / "image2label_train.json"


def test_losses_follow_the_upstream_formulas():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    p = torch.sigmoid(logits)
    focal = (-(0.25 * target * (1 - p) ** 2 * torch.log(p)) - 0.75 * (1 - target) * p**2 * torch.log(1 - p)).sum() / 4
    assert focal_term(logits, target) == pytest.approx(float(focal), rel=1e-5)
    assert dice_term(logits, target) == pytest.approx(1 - (2 * float(p[0, 0, 0, 0]) + 1) / (float(p.sum()) + 1 + 1), rel=1e-5)
    total = FocalDiceIoULoss(SAM_MED2D_WEIGHTS)(logits, target, torch.tensor([[0.5]]))
    assert float(total) > 20 * float(focal)


def test_noisy_box_is_a_translation_of_the_largest_component():
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:50] = 1
    mask[50:52, 50:52] = 1  # a small second component is ignored
    box = noisy_box(mask, np.random.default_rng(3))
    assert box[2] - box[0] == 30 and box[3] - box[1] == 20
    assert abs(box[0] - 20) <= 5 and abs(box[1] - 10) <= 5


def test_sam_med2d_trains_adapters_and_decoder_only(train_list, tmp_path):
    before = build_model("sam-med2d", **TINY_MED2D).state_dict()
    torch.save({"model": before}, tmp_path / "init.pth")
    config = Train2DConfig(model="sam-med2d", epochs=2, max_steps=2, batch_size=2, mask_num=2, iter_point=3,
                           num_workers=0, model_overrides=TINY_MED2D, init_checkpoint=str(tmp_path / "init.pth"))
    summary = train_2d(config, train_list, tmp_path)
    assert summary.batches == 2 and all(np.isfinite(summary.losses))
    after = torch.load(tmp_path / "latest.pth", weights_only=True)["model"]
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    encoder_changed = {k for k in changed if k.startswith("image_encoder.")}
    assert encoder_changed and all(".Adapter." in k for k in encoder_changed)
    assert any(k.startswith("mask_decoder.") for k in changed)
    loaded = build_model("sam-med2d", checkpoint=tmp_path / "latest.pth", **TINY_MED2D)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, after[key])


def test_sam_unet_keeps_the_vit_frozen(train_list, tmp_path):
    before = build_model("sam-unet-r34", **TINY_UNET).state_dict()
    torch.save({"model": before}, tmp_path / "init.pth")
    config = Train2DConfig(model="sam-unet-r34", epochs=1, max_steps=1, batch_size=1, mask_num=2, num_workers=0,
                           model_overrides=TINY_UNET, init_checkpoint=str(tmp_path / "init.pth"))
    summary = train_2d(config, train_list, tmp_path)
    after = torch.load(tmp_path / "latest.pth", weights_only=True)["model"]
    changed = {k for k in after if after[k].is_floating_point() and not torch.equal(after[k], before[k])}
    assert not any(k.startswith("image_encoder.") for k in changed)
    assert any(k.startswith("resnet.") for k in changed) and any(k.startswith("mask_decoder.") for k in changed)
    assert summary.batches == 1
