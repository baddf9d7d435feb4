"""The 2D image encoder's fast paths equal the straightforward (official-order) computation.

The encoder skips the zero padding of windowed attention (padded keys merged into one key whose
logit carries their log softmax mass), runs the adapter's convolutions as channels-last matmuls
and adds relative positions in place. Here every such block is compared, on random weights with
non-zero relative-position tables and biases, with the literal computation: pad the normed
tokens to whole windows, attend over every token, crop; adapters through PyTorch's generic
Conv2d / ConvTranspose2d (``Block.reference_forward``, the official ``Block.forward``). Padded
grids (6x6 in windows of 4: four window shapes; 2x2, inside one window) and an unpadded one
(8x8) are checked, with and without adapters and qkv bias. Also: the SAM-Med2D input is
resized before it is normalised, bit-identical to the official normalise-then-resize.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sammed.models.sam2d import transforms
from sammed.models.sam2d.image_encoder import Block, ImageEncoderViT

TOL = dict(atol=2e-5, rtol=1e-5)


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (zero-initialised tables and biases included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("grid", [6, 2, 8], ids=["padded", "one-small-window", "unpadded"])
@pytest.mark.parametrize("adapter", [True, False], ids=["adapter", "plain"])
@pytest.mark.parametrize("qkv_bias", [True, False], ids=["bias", "no-bias"])
def test_windowed_block_equals_padded_attention(grid: int, adapter: bool, qkv_bias: bool) -> None:
    torch.manual_seed(grid)
    block = Block(32, num_heads=4, qkv_bias=qkv_bias, window_size=4, input_size=(grid, grid), adapter=adapter)
    randomise(block, seed=grid)
    block.eval()
    x = torch.randn(2, grid, grid, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.reference_forward(x), **TOL)


def test_padded_window_attention_puts_mass_on_the_padding() -> None:
    """A large qkv bias makes the padded keys dominate: the merged key must carry their mass."""
    block = Block(16, num_heads=2, window_size=4, input_size=(4, 4))
    randomise(block, seed=3)
    with torch.no_grad():
        block.attn.qkv.bias.mul_(20)
        x = torch.randn(1, 3, 2, 16)
        torch.testing.assert_close(block(x), block.reference_forward(x), **TOL)


@pytest.mark.parametrize("img_size", [96, 128], ids=["padded", "unpadded"])
def test_encoder_equals_the_literal_computation(img_size: int) -> None:
    """The whole encoder (global and windowed blocks, adapters, neck) at 6x6 and 8x8 tokens."""
    encoder = ImageEncoderViT(
        img_size=img_size, patch_size=16, embed_dim=32, depth=4, num_heads=4, out_chans=16,
        window_size=4, global_attn_indexes=(1, 3), adapter=True,
    )
    randomise(encoder, seed=img_size)
    encoder.eval()
    image = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        x = encoder.patch_embed(image) + encoder.pos_embed
        for block in encoder.blocks:
            x = block.reference_forward(x)
        expected = encoder.neck(x.permute(0, 3, 1, 2))
        torch.testing.assert_close(encoder(image), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(512, 512), (37, 300), (256, 256), (1000, 70)])
def test_direct_resize_input_is_bit_identical_to_normalise_then_resize(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    official = transforms.resize_nearest(transforms.normalize(image, mean, std), (256, 256))
    ours = transforms.prepare_direct_resize(image, 256, mean, std)
    assert torch.equal(ours, transforms.to_batch_tensor(official))
