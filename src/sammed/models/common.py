"""Layers shared by the 2D and 3D models (names follow segment-anything so checkpoints load)."""

from __future__ import annotations

import torch
from torch import nn


class LayerNormNd(nn.Module):
    """LayerNorm over the channel axis (dim 1) of an N-d feature map.

    Written with explicit elementwise ops (mean, biased variance, sqrt) rather than
    ``F.layer_norm`` on a permuted tensor: that is what the official models compute, and
    it keeps parity within the strict tolerance tier.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        shape = (-1,) + (1,) * (x.ndim - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


class LayerNorm3d(LayerNormNd):
    """Channel LayerNorm for (B, C, D, H, W) tensors (SAM-Med3D neck, prompt encoder, decoder)."""


class LayerNorm2d(LayerNormNd):
    """Channel LayerNorm for (B, C, H, W) tensors (SAM, SAM-Med2D)."""


class MLPBlock(nn.Module):
    """Transformer feed-forward block: Linear -> activation -> Linear (keys ``lin1``/``lin2``)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (hypernetwork and IoU heads; keys ``layers.i``)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = torch.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class PatchConv3d(nn.Conv3d):
    """Conv3d whose kernel equals its stride (non-overlapping patches), run as one matmul.

    Same parameters and state-dict keys as ``nn.Conv3d``; for these shapes a matmul over
    gathered patches is the same linear map and is far faster on CPUs than the generic
    convolution kernels (100x for the 1 -> 4 channel mask-prompt conv).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if self.stride != k or any(self.padding) or self.groups != 1 or any(s % kk for s, kk in zip(x.shape[2:], k)):
            return super().forward(x)
        b, c, d, h, w = x.shape
        gd, gh, gw = d // k[0], h // k[1], w // k[2]
        patches = x.reshape(b, c, gd, k[0], gh, k[1], gw, k[2]).permute(0, 2, 4, 6, 1, 3, 5, 7)
        patches = patches.reshape(b * gd * gh * gw, -1)
        weight = self.weight.reshape(self.out_channels, -1).t()
        y = patches @ weight if self.bias is None else torch.addmm(self.bias, patches, weight)
        return y.reshape(b, gd, gh, gw, -1).permute(0, 4, 1, 2, 3)


class PatchConvTranspose3d(nn.ConvTranspose3d):
    """ConvTranspose3d with kernel == stride (each input voxel paints its own block), as a matmul."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        k = self.kernel_size
        if (
            output_size is not None
            or self.stride != k
            or any(self.padding)
            or any(self.output_padding)
            or self.groups != 1
            or any(dl != 1 for dl in self.dilation)
        ):
            return super().forward(x, output_size)
        b, c, d, h, w = x.shape
        out = self.out_channels
        y = x.permute(0, 2, 3, 4, 1).reshape(-1, c) @ self.weight.reshape(c, -1)
        y = y.reshape(b, d, h, w, out, *k).permute(0, 4, 1, 5, 2, 6, 3, 7)
        y = y.reshape(b, out, d * k[0], h * k[1], w * k[2])
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1, 1)
