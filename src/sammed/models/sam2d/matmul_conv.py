"""2D convolutions computed as one matrix product: the same linear maps, faster on CPUs.

PyTorch's generic CPU convolution kernels are slow for the shapes SAM-family models use: the
SAM-Med2D adapters' 768-channel 3x3 / 4x4 convolutions on 16x16 maps, and the kernel == stride
("patch") convolutions of the mask decoder's upscaling and the mask-prompt down-scaler. Written
as im2col (or a reshape) plus one matmul and, for transposed convolutions, col2im, they compute
the same sums in another order (float32 rounding differences only). The ``nn`` subclasses keep
the parameters, state-dict keys and constructor of the modules they replace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _plain(conv: nn.Module) -> bool:
    return conv.groups == 1 and conv.dilation == (1, 1) and isinstance(conv.padding, tuple)


def conv2d_as_matmul(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a (B, C, H, W) input, as im2col + one matmul."""
    if not _plain(conv) or conv.padding_mode != "zeros":
        return conv(x)
    batch, _, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    if conv.kernel_size == conv.stride and not (ph or pw) and height % kh == 0 and width % kw == 0:
        patches = x.reshape(batch, -1, out_h, kh, out_w, kw).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(batch * out_h * out_w, -1)
        weight = conv.weight.reshape(conv.out_channels, -1).t()
        y = patches @ weight if conv.bias is None else torch.addmm(conv.bias, patches, weight)
        return y.reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2)
    columns = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    y = conv.weight.reshape(conv.out_channels, -1) @ columns
    if conv.bias is not None:
        y = y + conv.bias[:, None]
    return y.reshape(batch, conv.out_channels, out_h, out_w)


def conv_transpose2d_as_matmul(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``: one matmul (each input pixel paints its weighted kernel), then col2im sums overlaps."""
    if not _plain(conv) or any(conv.output_padding):
        return conv(x)
    batch, channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if conv.kernel_size == conv.stride and not (ph or pw):  # patches do not overlap: no col2im
        pixels, weight = x.permute(0, 2, 3, 1).reshape(-1, channels), conv.weight.reshape(channels, -1)
        if conv.bias is None:
            y = pixels @ weight
        else:  # the bias of output channel o, once per kernel position, added by the matmul
            y = torch.addmm(conv.bias.repeat_interleave(kh * kw), pixels, weight)
        y = y.reshape(batch, height, width, -1, kh, kw).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(batch, -1, height * kh, width * kw)
    out_size = ((height - 1) * sh - 2 * ph + kh, (width - 1) * sw - 2 * pw + kw)
    columns = conv.weight.reshape(channels, -1).t() @ x.reshape(batch, channels, height * width)
    y = F.fold(columns, out_size, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


class MatmulConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same keys) whose forward is :func:`conv2d_as_matmul`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_as_matmul(self, x)


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same keys) whose forward is :func:`conv_transpose2d_as_matmul`."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:
            return super().forward(x, output_size)
        return conv_transpose2d_as_matmul(self, x)


def conv2d_channels_last(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` on a channels-last (B, H, W, C) map, returned channels-last (B, H', W', C').

    im2col with the kernel taps innermost, so that a column's layout (C_in, kh, kw) is the
    weight's own: the matmul reads ``conv.weight`` as stored (a transposed view, no copy) and
    neither the input nor the output is permuted. Same sums as the convolution.
    """
    if not _plain(conv) or conv.padding_mode != "zeros":
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    batch, height, width, channels = x.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    padded = F.pad(x, (0, 0, pw, pw, ph, ph)) if ph or pw else x
    taps = [
        padded[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    columns = torch.stack(taps, dim=-1).view(batch * out_h * out_w, channels * kh * kw)
    weight = conv.weight.reshape(conv.out_channels, -1).t()
    y = columns @ weight if conv.bias is None else torch.addmm(conv.bias, columns, weight)
    return y.view(batch, out_h, out_w, -1)


def conv_transpose2d_channels_last(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (transposed) on a channels-last (B, H, W, C) map, returned channels-last.

    One matmul paints every input pixel's weighted kernel (``conv.weight`` read as stored), then
    the painted kernels are summed into the output by one strided add per kernel tap (col2im
    without leaving channels-last) and the padding is cropped. Same sums as the convolution.
    """
    if not _plain(conv) or any(conv.output_padding):
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    batch, height, width, channels = x.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    out_channels = conv.out_channels
    painted = (x.reshape(-1, channels) @ conv.weight.reshape(channels, -1)).view(batch, height, width, out_channels, kh, kw)
    full_h, full_w = (height - 1) * sh + kh, (width - 1) * sw + kw
    full = x.new_zeros(batch, full_h, full_w, out_channels)
    for i in range(kh):
        for j in range(kw):
            full[:, i : i + sh * (height - 1) + 1 : sh, j : j + sw * (width - 1) + 1 : sw] += painted[..., i, j]
    y = full[:, ph : full_h - ph, pw : full_w - pw]
    return y if conv.bias is None else y + conv.bias
