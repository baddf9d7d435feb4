"""SAM-UNet's convolutional branch: a ResNet-34/50 body split into five stages.

The official code wraps torchvision's ResNet; torchvision is not a dependency here, so the
residual blocks are written out with torchvision's attribute names (``conv1``/``bn1``/...,
``downsample.0/1``), which is what the checkpoints store under ``resnet.stage1..4``.
``stage0`` is the stem (conv 7x7/2, BN, ReLU, max-pool 3x3/2) as an indexed Sequential.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """1x1 projection on the shortcut when the block changes resolution or width."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        _batch_norm(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = _batch_norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = _batch_norm(width)
        self.downsample = _downsample(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, "ResNet v1.5"), 1x1 expand x4 (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = _batch_norm(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = _batch_norm(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = _batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


@dataclass(frozen=True)
class ResNetLayout:
    """Block type and blocks per stage of a torchvision ResNet."""

    block: type[BasicBlock] | type[Bottleneck]
    blocks_per_stage: tuple[int, int, int, int]

    @property
    def stage_channels(self) -> tuple[int, int, int, int]:
        return tuple(width * self.block.expansion for width in (64, 128, 256, 512))  # type: ignore[return-value]


RESNET_LAYOUTS = {
    34: ResNetLayout(BasicBlock, (3, 4, 6, 3)),
    50: ResNetLayout(Bottleneck, (3, 4, 6, 3)),
}


class ResNetBranch(nn.Module):
    """(B, 3, S, S) -> four feature maps at S/4, S/8, S/16, S/32 (no avgpool/fc)."""

    def __init__(self, depth: int = 34) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"SAM-UNet supports ResNet depths {sorted(RESNET_LAYOUTS)}, got {depth}")
        layout = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.stage0 = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
            _batch_norm(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        in_channels = 64
        stages = []
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), layout.blocks_per_stage)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(count):
                blocks.append(layout.block(in_channels, width, stride if block_index == 0 else 1))
                in_channels = width * layout.block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.stage_channels = layout.stage_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.stage1(self.stage0(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        return f1, f2, f3, f4
