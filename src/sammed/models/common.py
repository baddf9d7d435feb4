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
