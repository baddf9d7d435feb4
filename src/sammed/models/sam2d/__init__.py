"""2D models: SAM ViT-B/L/H and SAM-Med2D (ViT image encoder, prompt encoder, mask decoder).

The parts are reusable building blocks (SAM-UNet builds on them); ``transforms`` holds the
families' exact pre/post-processing and ``pipeline`` the per-family predictor conventions.
"""

from sammed._lazy import lazy_exports

_EXPORTS = {
    "Adapter": "sammed.models.sam2d.adapter",
    "DirectResizePipeline": "sammed.models.sam2d.pipeline",
    "ImageEncoderViT": "sammed.models.sam2d.image_encoder",
    "LongestSidePipeline": "sammed.models.sam2d.pipeline",
    "MaskDecoder": "sammed.models.sam2d.mask_decoder",
    "Pipeline2D": "sammed.models.sam2d.pipeline",
    "PreparedImage": "sammed.models.sam2d.pipeline",
    "PromptEncoder": "sammed.models.sam2d.prompt_encoder",
    "Sam2D": "sammed.models.sam2d.model",
    "Sam2DConfig": "sammed.models.sam2d.config",
    "TwoWayTransformer": "sammed.models.common",
    "build_sam2d": "sammed.models.sam2d.model",
    "drop_adapter_weights": "sammed.models.sam2d.model",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
