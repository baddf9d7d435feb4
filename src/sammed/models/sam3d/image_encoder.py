"""SAM-Med3D image encoder: a 3D ViTDet-style transformer (windowed + global attention).

Tensor layout: input (B, 1, A0, A1, A2); tokens are channels-last (B, g0, g1, g2, C).
Numerics follow the official model exactly (LayerNorm eps 1e-6, exact GELU, q scaled
before q@k^T while the relative-position terms use the unscaled q, and zero padding of
the token grid up to the window size *after* ``norm1``, with no attention mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sammed.models.common import LayerNorm3d, MLPBlock, PatchConv3d

Size3 = tuple[int, int, int]


class PatchEmbed3D(nn.Module):
    """Non-overlapping Conv3d patchify, returned channels-last."""

    def __init__(self, patch_size: int = 16, in_chans: int = 1, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = PatchConv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Table rows R[i, j] = rel_pos[i - j + k_size - 1] (resampled if the table length differs)."""
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        table = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        table = table.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        table = rel_pos
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[relative.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    q_rows: torch.Tensor,
    rel_tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    q_size: Size3,
    key_side: int,
) -> torch.Tensor:
    """Add the official model's three relative-position terms to attention logits, in place.

    The official code broadcasts the per-axis terms in an unusual way (its ``rel_d[..., None,
    None]`` lands on the *last* key axis, and the ``h``/``w`` terms index the query grid's third
    axis with a key index). The released weights were trained with exactly this, so it is
    reproduced term for term. With ``attn`` viewed as (B, d, h, w, i, j, l) over a cubic key grid
    of side S = ``key_side``::

        + sum_c q[d, h, w, c] Rd[d, l, c]     (Rd = rel_tables[0], rows d of the table lookup)
        + sum_c q[d, h, i, c] Rh[h, l, c]     (q at query-grid position (d, h, i))
        + sum_c q[d, h, j, c] Rw[j, l, c]

    ``q`` holds the queries whose outputs are wanted, (B, d*h*w, C); ``q_rows`` (B, d, h, S, C)
    holds the queries along the third axis for every key index (equal to ``q`` when the query and
    key grids coincide; padded positions otherwise).
    """
    rd, rh, rw = rel_tables
    qd, qh, qw = q_size
    side = key_side
    batch, _, dim = q.shape
    rel_d = torch.einsum("bdhwc,dkc->bdhwk", q.reshape(batch, qd, qh, qw, dim), rd)
    rel_h = torch.einsum("bdhwc,hkc->bdhwk", q_rows, rh)
    rel_w = torch.einsum("bdhwc,wkc->bdhwk", q_rows, rw)
    view = attn.view(batch, qd, qh, qw, side, side, side)
    view.add_(rel_d[:, :, :, :, None, None, :])
    view.add_(rel_h[:, :, :, None, :, None, :])
    view.add_(rel_w[:, :, :, None, None, :, :])
    return attn


class Attention3D(nn.Module):
    """Multi-head self-attention with decomposed 3-axis relative position embeddings."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: Size3 | None = None,
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
            self.rel_pos_d = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[2] - 1, head_dim))

    def _split_heads(self, qkv: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        """(B, ..., 3C) -> (3, B*heads, tokens, head_dim)."""
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv.reshape(3, batch * self.num_heads, tokens, -1)

    def _attend(self, q, k, v, q_size: Size3, key_side: int, q_rows, rel_tables) -> torch.Tensor:
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, q_rows, rel_tables, q_size, key_side)
        return attn.softmax(dim=-1) @ v

    def _merge_heads(self, out: torch.Tensor, batch: int, size: Size3) -> torch.Tensor:
        out = out.view(batch, self.num_heads, *size, -1).permute(0, 2, 3, 4, 1, 5)
        return self.proj(out.reshape(batch, *size, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, d, h, w, _ = x.shape
        if self.use_rel_pos and not d == h == w:
            raise ValueError(f"SAM-Med3D attention needs a cubic token grid, got {(d, h, w)}")
        q, k, v = self._split_heads(self.qkv(x), batch, d * h * w).unbind(0)
        tables = None
        if self.use_rel_pos:
            tables = (get_rel_pos(d, d, self.rel_pos_d), get_rel_pos(h, h, self.rel_pos_h), get_rel_pos(w, w, self.rel_pos_w))
        q_rows = q.view(q.shape[0], d, h, w, -1)
        out = self._attend(q, k, v, (d, h, w), d, q_rows, tables)
        return self._merge_heads(out, batch, (d, h, w))

    def forward_single_padded_window(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """Attention inside one zero-padded window, without materialising the padding.

        Mathematically identical to padding ``x`` with zeros up to ``window`` per axis, running
        :meth:`forward` and cropping (what the official model does), because

        * outputs at padded query positions are cropped away, so only real queries are needed;
        * every padded token projects to exactly the qkv bias, so all padded keys share one key
          ``b_k`` and one value ``b_v``. Their logits differ only through the relative-position
          terms, which are sums of per-axis terms, so the total softmax mass of the padded keys
          factorises into per-axis log-sum-exps (see ``_padded_key_log_mass``).

        Attention then costs (real x real) instead of (real x window^3): for SAM-Med3D-turbo,
        512 x 512 instead of 512 x 2744 per head, with no 2744-token tensors at all.
        """
        batch, d, h, w, channels = x.shape
        if not self.use_rel_pos or self.qkv.bias is None or not (d < window and h < window and w < window):
            windows, padded = window_partition3d(x, window)
            return window_unpartition3d(self(windows), window, padded, (d, h, w))
        heads = self.num_heads
        q, k, v = self._split_heads(self.qkv(x), batch, d * h * w).unbind(0)  # (B*heads, N, hd)
        bias_q, bias_k, bias_v = self.qkv.bias.view(3, heads, 1, -1).unbind(0)  # (heads, 1, hd)
        bias_q, bias_k, bias_v = (t.repeat(batch, 1, 1) for t in (bias_q, bias_k, bias_v))  # (B*heads, 1, hd)
        rows = q.shape[0]

        rd = get_rel_pos(window, window, self.rel_pos_d)[:d]  # (d, S, hd)
        rh = get_rel_pos(window, window, self.rel_pos_h)[:h]  # (h, S, hd)
        rw = get_rel_pos(window, window, self.rel_pos_w)  # (S, S, hd)
        # Queries along the third query axis for every key index (the official broadcast reads
        # them there); beyond the real width they are padded tokens, i.e. the q bias.
        q_grid = q.view(rows, d, h, w, -1)
        q_rows = torch.cat([q_grid, bias_q.view(rows, 1, 1, 1, -1).expand(rows, d, h, window - w, -1)], dim=3)
        rel_d = torch.einsum("bdhwc,dkc->bdhwk", q_grid, rd)  # (B', d, h, w, S): indexed by key axis 2
        rel_h = torch.einsum("bdhic,hkc->bdhik", q_rows, rh)  # (B', d, h, S_i, S_l)
        rel_w = torch.einsum("bdhjc,jkc->bdhjk", q_rows, rw)  # (B', d, h, S_j, S_l)

        logits = (q * self.scale) @ k.transpose(-2, -1)  # real keys only: (B', N, N)
        view = logits.view(rows, d, h, w, d, h, w)
        view.add_(rel_d[:, :, :, :, None, None, :w])
        view.add_(rel_h[:, :, :, None, :d, None, :w])
        view.add_(rel_w[:, :, :, None, None, :h, :w])

        padded_mass = (q * self.scale) @ bias_k.transpose(-2, -1)  # (B', N, 1): q . b_k
        padded_mass = padded_mass.view(rows, d, h, w) + _padded_key_log_mass(rel_d, rel_h, rel_w, (d, h, w))
        weights = torch.cat([logits, padded_mass.view(rows, -1, 1)], dim=-1).softmax(dim=-1)
        out = weights[..., :-1] @ v + weights[..., -1:] * bias_v
        return self._merge_heads(out, batch, (d, h, w))


def _padded_key_log_mass(rel_d, rel_h, rel_w, real: Size3) -> torch.Tensor:
    """log sum over padded keys (i, j, l) of exp(rel_d[.., l] + rel_h[.., i, l] + rel_w[.., j, l]).

    Padded keys are the window cells outside the real [0,d) x [0,h) x [0,w) block. Per key
    index l along the third axis they are: every (i, j) when l >= w; otherwise the cells with
    i >= d (any j) plus those with i < d and j >= h. Each piece is a product of two sums, so
    everything reduces to per-axis log-sum-exps (no subtraction, no overflow).
    Shapes: rel_d (B', d, h, w, S), rel_h and rel_w (B', d, h, S, S); returns (B', d, h, w).
    """
    d, h, w = real
    lse_i_all = rel_h.logsumexp(dim=3)  # (B', d, h, S_l)
    lse_i_pad = rel_h[:, :, :, d:].logsumexp(dim=3)
    lse_i_real = rel_h[:, :, :, :d].logsumexp(dim=3)
    lse_j_all = rel_w.logsumexp(dim=3)
    lse_j_pad = rel_w[:, :, :, h:].logsumexp(dim=3)
    per_l = torch.cat(
        [
            torch.logaddexp(lse_i_pad[..., :w] + lse_j_all[..., :w], lse_i_real[..., :w] + lse_j_pad[..., :w]),
            lse_i_all[..., w:] + lse_j_all[..., w:],
        ],
        dim=-1,
    )  # (B', d, h, S_l)
    return (rel_d + per_l[:, :, :, None, :]).logsumexp(dim=-1)


def window_partition3d(x: torch.Tensor, window: int) -> tuple[torch.Tensor, Size3]:
    """Zero-pad each spatial axis at its end to a multiple of ``window`` and cut windows."""
    batch, d, h, w, channels = x.shape
    pad_d, pad_h, pad_w = ((window - s % window) % window for s in (d, h, w))
    if pad_d or pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h, 0, pad_d))
    dp, hp, wp = d + pad_d, h + pad_h, w + pad_w
    x = x.view(batch, dp // window, window, hp // window, window, wp // window, window, channels)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window, window, window, channels)
    return windows, (dp, hp, wp)


def window_unpartition3d(windows: torch.Tensor, window: int, padded: Size3, size: Size3) -> torch.Tensor:
    """Inverse of :func:`window_partition3d`, cropping the padding away."""
    dp, hp, wp = padded
    d, h, w = size
    batch = windows.shape[0] // ((dp // window) * (hp // window) * (wp // window))
    x = windows.view(batch, dp // window, hp // window, wp // window, window, window, window, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(batch, dp, hp, wp, -1)
    return x[:, :d, :h, :w, :].contiguous()


class Block3D(nn.Module):
    """Pre-norm transformer block; windowed when ``window_size > 0``, global otherwise."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: Size3 | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size,) * 3
        self.attn = Attention3D(dim, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size
        # When False, windowed attention runs over every padded token exactly as the
        # official code does; the default never materialises the padding (forward_single_padded_window).
        self.skip_padded_queries = True

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[1:4])
        if self.skip_padded_queries and all(s <= self.window_size for s in size):
            return self.attn.forward_single_padded_window(x, self.window_size)
        windows, padded = window_partition3d(x, self.window_size)
        return window_unpartition3d(self.attn(windows), self.window_size, padded, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h = self._windowed_attention(h) if self.window_size > 0 else self.attn(h)
        x = x + h
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT3D(nn.Module):
    """(B, in_chans, S, S, S) volume -> (B, out_chans, S/p, S/p, S/p) image embedding."""

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 384,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim)) if use_abs_pos else None
        self.patch_embed = PatchEmbed3D(patch_size, in_chans, embed_dim)
        self.blocks = nn.ModuleList(
            Block3D(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans),
        )

    def set_reference_windowing(self, enabled: bool) -> None:
        """Run windowed attention over all padded tokens, as the official code does (slower)."""
        for block in self.blocks:
            block.skip_padded_queries = not enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))
