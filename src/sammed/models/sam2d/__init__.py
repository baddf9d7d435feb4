"""2D models: SAM ViT-B/L/H and SAM-Med2D (ViT image encoder, prompt encoder, mask decoder).

The parts are reusable building blocks (SAM-UNet builds on them); ``transforms`` holds the
families' exact pre/post-processing and ``pipeline`` the per-family predictor conventions.
"""

from sammed.models.sam2d.adapter import Adapter
from sammed.models.sam2d.image_encoder import ImageEncoderViT
from sammed.models.sam2d.mask_decoder import MaskDecoder, TwoWayTransformer
from sammed.models.sam2d.model import Sam2D, Sam2DConfig, build_sam2d, drop_adapter_weights
from sammed.models.sam2d.pipeline import DirectResizePipeline, LongestSidePipeline, Pipeline2D, PreparedImage
from sammed.models.sam2d.prompt_encoder import PromptEncoder

__all__ = [
    "Adapter",
    "DirectResizePipeline",
    "ImageEncoderViT",
    "LongestSidePipeline",
    "MaskDecoder",
    "Pipeline2D",
    "PreparedImage",
    "PromptEncoder",
    "Sam2D",
    "Sam2DConfig",
    "TwoWayTransformer",
    "build_sam2d",
    "drop_adapter_weights",
]
