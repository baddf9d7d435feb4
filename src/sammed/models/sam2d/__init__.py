"""2D models: SAM ViT-B/L/H and SAM-Med2D (ViT image encoder, prompt encoder, mask decoder).

The parts are reusable building blocks (SAM-UNet builds on them); ``transforms`` holds the
families' exact pre/post-processing and ``pipeline`` the per-family predictor conventions.
"""

from sammed._lazy import lazy_exports

__getattr__, __dir__, _LAZY = lazy_exports(
    __name__,
    {
        "sammed.models.common": ("TwoWayTransformer",),
        "sammed.models.sam2d.adapter": ("Adapter",),
        "sammed.models.sam2d.config": ("Sam2DConfig",),
        "sammed.models.sam2d.image_encoder": ("ImageEncoderViT",),
        "sammed.models.sam2d.mask_decoder": ("MaskDecoder",),
        "sammed.models.sam2d.model": ("Sam2D", "build_sam2d", "drop_adapter_weights"),
        "sammed.models.sam2d.pipeline": ("DirectResizePipeline", "LongestSidePipeline", "Pipeline2D", "PreparedImage"),
        "sammed.models.sam2d.prompt_encoder": ("PromptEncoder",),
    },
)
__all__ = _LAZY
