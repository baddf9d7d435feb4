"""SAM-UNet's glue modules: CNN->ViT reshapers and the ViT->64x64 upsamplers.

* :class:`Reshaper` (``adapters_in.i``) brings a ResNet stage output to the ViT token grid
  (16x16x768) by repeated stride-2 convs (finer maps) or transposed convs (coarser maps),
  each followed by LayerNorm2d and GELU, then a 1x1 conv to the ViT width.
* :func:`upsampler_x4` builds the two-step x4 upsampler used for the bridges
  (``adapters_bridge.k``) and the image-embedding branch (``embedding_encoder``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sammed.models.common import LayerNorm2d


def _halvings(size_in: int, size_out: int) -> int:
    ratio = max(size_in, size_out) / min(size_in, size_out)
    steps = round(math.log2(ratio))
    if 2**steps != ratio:
        raise ValueError(f"Reshaper needs a power-of-two size ratio, got {size_in} -> {size_out}")
    return steps


class Reshaper(nn.Module):
    """(B, c_in, s_in, s_in) -> (B, c_out, s_out, s_out); keys ``reshaper.<index>``."""

    def __init__(self, size_in: int, channels_in: int, size_out: int = 16, channels_out: int = 768) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = channels_in
        for _ in range(_halvings(size_in, size_out)):
            if size_in > size_out:
                step = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1)
                channels *= 2
            else:
                step = nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2)
                channels //= 2
            layers += [step, LayerNorm2d(channels), nn.GELU()]
        layers.append(nn.Conv2d(channels, channels_out, kernel_size=1))
        self.reshaper = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.reshaper:
            x = layer(x)
        return x


def upsampler_x4(channels_in: int, channels_mid: int, channels_out: int = 32) -> nn.Sequential:
    """ConvT(k2,s2) -> LayerNorm2d -> GELU -> ConvT(k2,s2), no final activation (keys 0, 1, 3)."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels_in, channels_mid, kernel_size=2, stride=2),
        LayerNorm2d(channels_mid),
        nn.GELU(),
        nn.ConvTranspose2d(channels_mid, channels_out, kernel_size=2, stride=2),
    )
