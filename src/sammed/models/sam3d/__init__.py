"""SAM-Med3D: 3D ViT image encoder, 3D prompt encoder, 3D mask decoder (imported on first use)."""

from sammed._lazy import lazy_exports

__getattr__, __dir__, _LAZY = lazy_exports(
    __name__,
    {
        "sammed.models.sam3d.config": ("SamMed3DConfig",),
        "sammed.models.sam3d.image_encoder": ("ImageEncoderViT3D",),
        "sammed.models.sam3d.mask_decoder": ("MaskDecoder3D",),
        "sammed.models.sam3d.model": ("SamMed3D", "build_sam_med3d"),
        "sammed.models.sam3d.prompt_encoder": ("PromptEncoder3D",),
    },
)
__all__ = _LAZY
