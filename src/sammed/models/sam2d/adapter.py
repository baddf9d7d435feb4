"""SAM-Med2D's adapter (official ``Adapter_Layer``), one per ViT block.

It reads the block's ``norm2`` output in parallel with the MLP. A squeeze-and-excitation
channel gate is followed by a full (not depthwise) stride-2 conv / transposed-conv pair with
an inner skip from the *ungated* input, and a LayerNorm with PyTorch's default eps 1e-5 (not
the ViT's 1e-6; the difference is below fp32 noise with test weights, so it is checked by
value in the tests).
"""

from __future__ import annotations

import torch
from torch import nn

from sammed.models.sam2d.matmul_conv import conv2d_channels_last, conv_transpose2d_channels_last

ADAPTER_NORM_EPS = 1e-5


class Adapter(nn.Module):
    """(B, h, w, C) -> (B, h, w, C); keys ``norm``, ``channel.{0,2}``, ``spatial.{0,2}``."""

    def __init__(self, embed_dim: int, mlp_ratio: float = 0.25) -> None:
        super().__init__()
        hidden_dim = int(embed_dim * mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim, eps=ADAPTER_NORM_EPS)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim, bias=False),
            nn.ReLU(),
            nn.Linear(hidden_dim, embed_dim, bias=False),
            nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=4, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The official computation kept channels-last (its permutes to (B, C, h, w) and back
        only change the memory layout): mean-pool gate, gated conv / transposed conv, skip, norm."""
        gate = self.channel(x.mean(dim=(1, 2)))  # AdaptiveAvgPool2d(1): the mean over h, w
        down, _, up, _ = self.spatial
        spatial = torch.relu(conv_transpose2d_channels_last(up, torch.relu(conv2d_channels_last(down, x * gate[:, None, None, :]))))
        return self.norm(x + spatial)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The official ``Adapter_Layer.forward`` literally (channels-first, PyTorch's generic
        convolution modules): the baseline that tests and ``benchmarks/bench_2d.py`` compare with."""
        x = x.permute(0, 3, 1, 2)
        batch, channels = x.shape[:2]
        gate = self.channel(self.avg_pool(x).view(batch, channels)).view(batch, channels, 1, 1)
        x = x + self.spatial(gate * x)
        return self.norm(x.permute(0, 2, 3, 1))
