"""SAM-UNet configuration as plain data (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from sammed.models.sam2d.config import Sam2DConfig


@dataclass(frozen=True)
class SamUNetConfig(Sam2DConfig):
    """SAM-UNet hyper-parameters: SAM ViT-B at 256 (no adapters) plus the ResNet depth.

    Defaults are the official ``res34_sam_unet``; ``resnet_depth=50`` is ``res50_sam_unet``.
    """

    img_size: int = 256
    resnet_depth: int = 34
