"""SAM-UNet: SAM ViT-B (frozen) + a parallel ResNet-34/50 branch + a multi-scale mask decoder."""

from sammed.models.sam2d.sam_unet.inference import (
    decode_item,
    image_features,
    infer,
    infer_image,
    prepare_item,
    preprocess,
)
from sammed.models.sam2d.sam_unet.mask_decoder import MedMaskDecoder
from sammed.models.sam2d.sam_unet.model import SamUNet, SamUNetConfig, SamUNetFeatures, build_sam_unet
from sammed.models.sam2d.sam_unet.pipeline import SamUNetPipeline
from sammed.models.sam2d.sam_unet.resnet import ResNetBranch

__all__ = [
    "MedMaskDecoder",
    "ResNetBranch",
    "SamUNet",
    "SamUNetConfig",
    "SamUNetFeatures",
    "SamUNetPipeline",
    "build_sam_unet",
    "decode_item",
    "image_features",
    "infer",
    "infer_image",
    "prepare_item",
    "preprocess",
]
