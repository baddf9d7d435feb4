"""SAM's 2D ViTDet image encoder, with SAM-Med2D's optional per-block adapters.

Tensor layout: input (B, 3, S, S) normalised image; tokens are channels-last (B, h, w, C);
output (B, out_chans, S/p, S/p). Numerics follow the official code: LayerNorm eps 1e-6, exact
GELU, q scaled *before* q @ k^T while the decomposed relative-position terms use the unscaled
q, and windowed blocks zero-pad the token map (after ``norm1``) to a multiple of the window,
with no attention mask. Reusable as a building block (SAM-UNet injects CNN features between
``blocks``): every part keeps the official attribute name.
"""

from __future__ import annotations

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
    """:func:`add_decomposed_rel_pos` with the (qh, kh, C) and (qw, kw, C) tables given."""
    (qh, kh), (qw, kw) = table_h.shape[:2], table_w.shape[:2]
    batch, _, dim = q.shape
    q_grid = q.reshape(batch, qh, qw, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", q_grid, table_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", q_grid, table_w)
    attn = attn.view(batch, qh, qw, kh, kw) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(batch, qh * qw, kh * kw)


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

    def attend(self, qkv: torch.Tensor, query_size: Size2 | None = None) -> torch.Tensor:
        """(B, h, w, 3C) output of ``qkv`` -> (B, h, w, C) multi-head attention, before ``proj``.

        With ``query_size`` (hq, wq) only the queries of the top-left hq x wq block are computed
        (every key still takes part): (B, hq, wq, C), the same numbers as those rows of the full
        result (windowed blocks use it to skip the padded positions' queries).
        """
        batch, height, width, channels3 = qkv.shape
        heads, channels = self.num_heads, channels3 // 3
        q_h, q_w = query_size or (height, width)
        tokens = height * width
        kv = qkv[..., channels:].reshape(batch, tokens, 2, heads, -1).permute(2, 0, 3, 1, 4)
        k, v = kv.reshape(2, batch * heads, tokens, -1).unbind(0)
        q = qkv[:, :q_h, :q_w, :channels].reshape(batch, q_h * q_w, heads, -1).transpose(1, 2)
        q = q.reshape(batch * heads, q_h * q_w, -1)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            table_h = get_rel_pos(height, height, self.rel_pos_h)[:q_h]
            table_w = get_rel_pos(width, width, self.rel_pos_w)[:q_w]
            attn = add_rel_pos_tables(attn, q, table_h, table_w)
        out = attn.softmax(dim=-1) @ v
        out = out.view(batch, heads, q_h, q_w, -1).permute(0, 2, 3, 1, 4)
        return out.reshape(batch, q_h, q_w, -1)


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


def pad_to_windows(x: torch.Tensor, window: int, fill: torch.Tensor | None) -> torch.Tensor:
    """Pad (B, h, w, C) at the bottom/right to multiples of ``window`` with the vector ``fill`` (or 0)."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = (window - height % window) % window, (window - width % window) % window
    if not (pad_h or pad_w):
        return x
    shape = (batch, height + pad_h, width + pad_w, channels)
    padded = fill.expand(shape).clone() if fill is not None else x.new_zeros(shape)
    padded[:, :height, :width] = x
    return padded


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
        each window, crop), computed without the padded positions' work.

        A zero token's ``qkv`` output is exactly the bias, so ``qkv`` runs on the real tokens and
        the padding is filled with the bias; the queries of padded positions are cropped away in
        the official code, so only real queries are computed (against every key of the window,
        padded ones included, as officially) and ``proj`` runs on the real tokens. Windows are
        grouped by how many real rows and columns they hold (padding is at the bottom/right, so
        real queries are always a window's top-left block). At 256 (16x16 tokens padded to 28x28)
        this does a third of the official projection and attention work.
        """
        batch, height, width, _ = x.shape
        window = self.window_size
        qkv = pad_to_windows(self.attn.qkv(x), window, self.attn.qkv.bias)
        out = x.new_empty(batch, height, width, self.attn.proj.in_features)
        for (q_h, q_w), origins in _windows_by_real_size(height, width, window).items():
            windows = torch.cat([qkv[:, r : r + window, c : c + window] for r, c in origins])
            attended = self.attn.attend(windows, (q_h, q_w))
            for index, (r, c) in enumerate(origins):
                out[:, r : r + q_h, c : c + q_w] = attended[index * batch : (index + 1) * batch]
        return self.attn.proj(out)

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
