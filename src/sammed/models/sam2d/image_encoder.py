"""SAM's 2D ViTDet image encoder, with SAM-Med2D's optional per-block adapters.

Tensor layout: input (B, 3, S, S) normalised image; tokens are channels-last (B, h, w, C);
output (B, out_chans, S/p, S/p). Numerics follow the official code: LayerNorm eps 1e-6, exact
GELU, q scaled *before* q @ k^T while the decomposed relative-position terms use the unscaled
q, and windowed blocks zero-pad the token map (after ``norm1``) to a multiple of the window,
with no attention mask. Reusable as a building block (SAM-UNet injects CNN features between
``blocks``): every part keeps the official attribute name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sammed.models.common import LayerNorm2d, MLPBlock
from sammed.models.sam2d.adapter import Adapter
from sammed.models.sam3d.image_encoder import get_rel_pos  # dimension-agnostic table lookup

Size2 = tuple[int, int]


class PatchEmbed(nn.Module):
    """Non-overlapping Conv2d patchify (key ``proj``), returned channels-last (B, h, w, C)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: Size2,
    k_size: Size2,
) -> torch.Tensor:
    """attn[(qh, qw), (kh, kw)] += q[qh, qw] . Rh[qh, kh] + q[qh, qw] . Rw[qw, kw].

    ``attn`` is (B, qh*qw, kh*kw); ``q`` (B, qh*qw, C) is the *unscaled* query.
    """
    (qh, qw), (kh, kw) = q_size, k_size
    return add_rel_pos_tables(attn, q, get_rel_pos(qh, kh, rel_pos_h), get_rel_pos(qw, kw, rel_pos_w))


def add_rel_pos_tables(
    attn: torch.Tensor, q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor
) -> torch.Tensor:
    """:func:`add_decomposed_rel_pos` with the (qh, kh, C) and (qw, kw, C) tables given.

    Adds in place (``attn`` is the caller's fresh logits; no second logits-sized tensor)."""
    (qh, kh), (qw, kw) = table_h.shape[:2], table_w.shape[:2]
    batch, _, dim = q.shape
    q_grid = q.reshape(batch, qh, qw, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", q_grid, table_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", q_grid, table_w)
    view = attn.view(batch, qh, qw, kh, kw)  # in place, in the official order (qk + rel_h) + rel_w
    view.add_(rel_h[:, :, :, :, None])
    view.add_(rel_w[:, :, :, None, :])
    return attn


class Attention(nn.Module):
    """Multi-head self-attention over a (B, h, w, C) token map with 2-axis relative positions."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: Size2 | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos is True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, h, w, 3C) output of ``qkv`` -> (B, h, w, C) multi-head attention, before ``proj``."""
        batch, height, width, _ = qkv.shape
        q, k, v = self._split_heads(qkv)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            table_h = get_rel_pos(height, height, self.rel_pos_h)
            table_w = get_rel_pos(width, width, self.rel_pos_w)
            attn = add_rel_pos_tables(attn, q, table_h, table_w)
        return self._merge_heads(attn.softmax(dim=-1) @ v, batch, height, width)

    def attend_padded_window(self, qkv: torch.Tensor, window: int) -> torch.Tensor:
        """Attention in zero-padded ``window`` x ``window`` windows, given only their real tokens.

        ``qkv`` (B, qh, qw, 3C) is the ``qkv`` output of the real top-left qh x qw block of each
        window; the rest of the window is the official zero padding (after ``norm1``). Returns
        the real positions' outputs (B, qh, qw, C), the same numbers (up to float32 rounding)
        as padding, attending over all window**2 tokens and cropping, because

        * the padded positions' outputs are cropped away, so only real queries are computed;
        * a zero token projects to exactly the ``qkv`` bias, so every padded key is the same
          ``b_k`` and every padded value the same ``b_v``. A padded key (i, j) then has the logit
          ``scale q.b_k + Rh[i] + Rw[j]`` (Rh, Rw: the query's relative-position terms), and the
          padded keys are the window minus the real block, {i >= qh} + {i < qh, j >= qw}; their
          total softmax mass is exp(scale q.b_k) times a product of per-axis sums, i.e. one extra
          key ``b_k`` carrying the log-sum-exp of those terms as its logit offset, with value ``b_v``.

        Attention costs (qh qw) x (qh qw + 1) per head instead of (qh qw) x window**2, and no
        padded tensor is built.
        """
        batch, q_h, q_w, channels3 = qkv.shape
        if q_h == q_w == window:
            return self.attend(qkv)
        heads = self.num_heads
        q, k, v = self._split_heads(qkv)  # (B * heads, qh * qw, hd)
        rows, tokens = q.shape[:2]
        bias = self.qkv.bias if self.qkv.bias is not None else qkv.new_zeros(channels3)
        _, bias_k, bias_v = (t.repeat(batch, 1, 1) for t in bias.view(3, heads, 1, -1).unbind(0))
        scaled = q * self.scale
        logits = scaled @ k.transpose(-2, -1)
        if self.use_rel_pos:
            q_grid = q.view(rows, q_h, q_w, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", q_grid, get_rel_pos(window, window, self.rel_pos_h)[:q_h])
            rel_w = torch.einsum("bhwc,wkc->bhwk", q_grid, get_rel_pos(window, window, self.rel_pos_w)[:q_w])
            view = logits.view(rows, q_h, q_w, q_h, q_w)  # the official order: (qk + rel_h) + rel_w
            view.add_(rel_h[:, :, :, :q_h, None])
            view.add_(rel_w[:, :, :, None, :q_w])
            # log sum over padded (i, j) of exp(Rh[i] + Rw[j]): rows below the real block (any
            # column), plus real rows right of it; no empty reductions (nor in an exported graph)
            below = rel_h[..., q_h:].logsumexp(-1) + rel_w.logsumexp(-1) if q_h < window else None
            right = rel_h[..., :q_h].logsumexp(-1) + rel_w[..., q_w:].logsumexp(-1) if q_w < window else None
            if below is not None and right is not None:
                padded_rel = torch.logaddexp(below, right)
            else:
                padded_rel = below if below is not None else right
            padded_rel = padded_rel.reshape(rows, tokens, 1)
        else:
            padded_rel = logits.new_full((rows, tokens, 1), math.log(window * window - q_h * q_w))
        padded_logit = scaled @ bias_k.transpose(-2, -1) + padded_rel  # (B * heads, tokens, 1)
        weights = torch.cat([logits, padded_logit], dim=-1).softmax(dim=-1)
        out = torch.baddbmm(weights[..., -1:] * bias_v, weights[..., :-1], v)
        return self._merge_heads(out, batch, q_h, q_w)

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, h, w, 3C) -> q, k, v each (B * heads, h * w, head_dim)."""
        batch, height, width, channels3 = qkv.shape
        tokens, heads = height * width, self.num_heads
        parts = qkv.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = parts.reshape(3, batch * heads, tokens, -1).unbind(0)
        return q, k, v

    def _merge_heads(self, out: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """(B * heads, h * w, head_dim) -> (B, h, w, C)."""
        out = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return out.reshape(batch, height, width, -1)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, Size2]:
    """Zero-pad (B, h, w, C) at the bottom/right to multiples of ``window``; cut row-major windows."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = (window - height % window) % window, (window - width % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = height + pad_h, width + pad_w
    x = x.view(batch, hp // window, window, wp // window, window, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, channels)
    return windows, (hp, wp)


def _windows_by_real_size(height: int, width: int, window: int) -> dict[Size2, list[Size2]]:
    """Top-left corners of the windows tiling an (height, width) grid, keyed by their real size."""
    groups: dict[Size2, list[Size2]] = {}
    for r in range(0, height, window):
        for c in range(0, width, window):
            groups.setdefault((min(window, height - r), min(window, width - c)), []).append((r, c))
    return groups


def window_unpartition(windows: torch.Tensor, window: int, padded: Size2, size: Size2) -> torch.Tensor:
    """Inverse of :func:`window_partition`, cropping the padding away."""
    hp, wp = padded
    height, width = size
    batch = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(batch, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, hp, wp, -1)
    return x[:, :height, :width, :].contiguous()


class Block(nn.Module):
    """Pre-norm ViT block; windowed when ``window_size > 0``, global otherwise.

    With ``adapter=True`` (SAM-Med2D) an :class:`Adapter` reads ``norm2``'s output in parallel
    with the MLP and both are added to the residual stream. ``bypass_adapter`` keeps the adapter
    weights (so the checkpoint still loads strictly) but skips the branch ("SAM-Med2D*").
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: Size2 | None = None,
        adapter: bool = False,
        adapter_mlp_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size
        if adapter:
            self.Adapter = Adapter(dim, mlp_ratio=adapter_mlp_ratio)  # official (capitalised) key
        self.bypass_adapter = False

    @property
    def has_adapter(self) -> bool:
        return hasattr(self, "Adapter")

    def windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The official windowed attention (zero-pad the normed tokens to whole windows, attend in
        each window, crop), computed without the padding.

        ``qkv`` and ``proj`` run on the real tokens only (a zero token's ``qkv`` output is the
        bias); windows are grouped by how many real rows and columns they hold (padding is at the
        bottom/right, so a window's real tokens are its top-left block) and each group goes
        through :meth:`Attention.attend_padded_window`, which never builds the padded keys. At
        256 (16x16 tokens padded to 28x28) this does a third of the official projection work and
        no padded attention.
        """
        batch, height, width, _ = x.shape
        window = self.window_size
        qkv = self.attn.qkv(x)
        groups = _windows_by_real_size(height, width, window)
        if len(groups) == 1 and (height, width) in groups:  # one window holding the whole grid
            return self.attn.proj(self.attn.attend_padded_window(qkv, window))
        out = x.new_empty(batch, height, width, self.attn.proj.in_features)
        for (q_h, q_w), origins in groups.items():
            windows = torch.cat([qkv[:, r : r + q_h, c : c + q_w] for r, c in origins])
            attended = self.attn.attend_padded_window(windows, window)
            for index, (r, c) in enumerate(origins):
                out[:, r : r + q_h, c : c + q_w] = attended[index * batch : (index + 1) * batch]
        return self.attn.proj(out)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The official ``Block.forward`` literally: zero-padded windows through the whole attention
        module, then cropped; the adapter as :meth:`Adapter.reference_forward`. The baseline that
        tests and ``benchmarks/bench_2d.py`` compare :meth:`forward` with."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = (x.shape[1], x.shape[2])
            windows, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(windows), self.window_size, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        normed = self.norm2(x)
        if self.has_adapter and not self.bypass_adapter:
            return x + self.mlp(normed) + self.Adapter.reference_forward(normed)
        return x + self.mlp(normed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        x = self.windowed_attention(x) if self.window_size > 0 else self.attn(x)
        x = shortcut + x
        normed = self.norm2(x)
        if self.has_adapter and not self.bypass_adapter:
            return x + self.mlp(normed) + self.Adapter(normed)
        return x + self.mlp(normed)


class ImageEncoderViT(nn.Module):
    """(B, in_chans, S, S) normalised image -> (B, out_chans, S/p, S/p) image embedding.

    Args:
        img_size: square input side S (1024 for SAM, 256 for SAM-Med2D and SAM-UNet).
        patch_size: ViT patch side p.
        embed_dim, depth, num_heads, mlp_ratio: ViT width, number of blocks, heads, MLP ratio.
        out_chans: channels of the neck output (the prompt embedding width, 256).
        window_size: window side of the non-global blocks (14).
        global_attn_indexes: indices of the blocks with full (global) attention.
        adapter: build SAM-Med2D's adapter in every block (keys ``blocks.i.Adapter.*``).
        adapter_mlp_ratio: adapter channel-branch reduction (0.25).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        adapter: bool = False,
        adapter_mlp_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
                adapter=adapter,
                adapter_mlp_ratio=adapter_mlp_ratio,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def set_adapter_bypass(self, bypass: bool) -> None:
        """Skip (True) or run (False) every block's adapter; weights stay loaded either way."""
        for block in self.blocks:
            block.bypass_adapter = bypass

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus absolute position embedding, channels-last (B, h, w, C)."""
        x = self.patch_embed(x)
        return x + self.pos_embed if self.pos_embed is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_patches(x)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
