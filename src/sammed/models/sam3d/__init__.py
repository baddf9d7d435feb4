"""SAM-Med3D: 3D ViT image encoder, 3D prompt encoder, 3D mask decoder."""

from sammed.models.sam3d.image_encoder import ImageEncoderViT3D
from sammed.models.sam3d.mask_decoder import MaskDecoder3D
from sammed.models.sam3d.model import SamMed3D, SamMed3DConfig, build_sam_med3d
from sammed.models.sam3d.prompt_encoder import PromptEncoder3D

__all__ = [
    "ImageEncoderViT3D",
    "MaskDecoder3D",
    "PromptEncoder3D",
    "SamMed3D",
    "SamMed3DConfig",
    "build_sam_med3d",
]
