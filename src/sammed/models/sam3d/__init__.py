"""SAM-Med3D: 3D ViT image encoder, 3D prompt encoder, 3D mask decoder (imported on first use)."""

from sammed._lazy import lazy_exports

_EXPORTS = {
    "ImageEncoderViT3D": "sammed.models.sam3d.image_encoder",
    "MaskDecoder3D": "sammed.models.sam3d.mask_decoder",
    "PromptEncoder3D": "sammed.models.sam3d.prompt_encoder",
    "SamMed3D": "sammed.models.sam3d.model",
    "SamMed3DConfig": "sammed.models.sam3d.config",
    "build_sam_med3d": "sammed.models.sam3d.model",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
