"""Layers shared by the 2D and 3D models (names follow segment-anything so checkpoints load)."""

from __future__ import annotations

import math

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


# --------------------------------------------------------------------------- two-way transformer
# SAM's and SAM-Med3D's mask decoders share this code: it only flattens the spatial axes of the
# image embedding, so one class computes SAM's 2D and SAM-Med3D's 3D maths.


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim / downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _recombine_heads(x: torch.Tensor) -> torch.Tensor:
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on already projected q, k, v (B, n, internal_dim)."""
        q, k, v = self._separate_heads(q), self._separate_heads(k), self._separate_heads(v)
        # The official decoder divides after the matmul (the encoder scales q before it).
        attn = (q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1])
        out = attn.softmax(dim=-1) @ v
        return self.out_proj(self._recombine_heads(out))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token (LayerNorm eps 1e-5)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe
        # Only the first block remembers (see _image_side): later blocks read image tokens that
        # the prompt changed. Switched off for literal baselines (benchmarks/bench_2d.py).
        self.remember_image_side = skip_first_layer_pe
        self._image_side_memo: tuple | None = None  # not module state

    def forward(self, queries, keys, query_pe, key_pe) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        image_k, image_v, image_q = self._image_side(keys, key_pe)
        to_image = self.cross_attn_token_to_image
        queries = self.norm2(queries + to_image.attend(to_image.q_proj(queries + query_pe), image_k, image_v))
        queries = self.norm3(queries + self.mlp(queries))

        to_token = self.cross_attn_image_to_token
        attended = to_token.attend(image_q, to_token.k_proj(queries + query_pe), to_token.v_proj(queries))
        keys = self.norm4(keys + attended)
        return queries, keys

    def _image_side(self, keys: torch.Tensor, key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The projections of the image tokens that do not depend on the prompt tokens.

        Token->image keys and values and image->token queries read only ``keys`` and ``key_pe``
        (the official code adds ``keys + key_pe`` twice; once is the same sum). In the first
        block these are the image embedding plus the no-mask embedding, the same for every
        prompt on one image, so they are remembered: a call whose ``keys`` and ``key_pe`` are
        equal (``torch.equal``) to the last call's, with unchanged projection weights, reuses
        the same projections, i.e. the same numbers. Only when no autograd graph, tracing or
        compiling is involved.
        """
        version = self._image_side_version()
        memo = self._image_side_memo
        if version is not None and memo is not None and memo[2] == version:
            if torch.equal(memo[0], keys) and torch.equal(memo[1], key_pe):
                return memo[3]
        with_pe = keys + key_pe
        projected = (
            self.cross_attn_token_to_image.k_proj(with_pe),
            self.cross_attn_token_to_image.v_proj(keys),
            self.cross_attn_image_to_token.q_proj(with_pe),
        )
        if version is not None:  # copies: the caller may reuse its tensors in place later
            self._image_side_memo = (keys.clone(), key_pe.clone(), version, projected)
        return projected

    def _image_side_version(self) -> tuple | None:
        """Identity and version of the projection weights, or None where no memo may be used."""
        if not self.remember_image_side:
            return None
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return None
        try:  # inference tensors have no version counter: never remember with such weights
            return tuple(
                (tensor.data_ptr(), tensor._version)
                for layer in self._image_side_layers()
                for tensor in (layer.weight, layer.bias)
            )
        except RuntimeError:
            return None

    def _image_side_layers(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.cross_attn_token_to_image.k_proj, self.cross_attn_token_to_image.v_proj, self.cross_attn_image_to_token.q_proj


class TwoWayTransformer(nn.Module):
    """Stack of two-way blocks plus a final token->image attention."""

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 384,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=(i == 0)
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding, image_pe, point_embedding) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, C, *grid) with grid 2D or 3D, pe alike, tokens (B, T, C) -> (tokens, image tokens)."""
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
