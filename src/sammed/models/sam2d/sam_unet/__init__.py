"""SAM-UNet: SAM ViT-B (frozen) + a parallel ResNet-34/50 branch + a multi-scale mask decoder."""

from sammed._lazy import lazy_exports

_EXPORTS = {
    "MedMaskDecoder": "sammed.models.sam2d.sam_unet.mask_decoder",
    "ResNetBranch": "sammed.models.sam2d.sam_unet.resnet",
    "SamUNet": "sammed.models.sam2d.sam_unet.model",
    "SamUNetConfig": "sammed.models.sam2d.sam_unet.config",
    "SamUNetFeatures": "sammed.models.sam2d.sam_unet.model",
    "SamUNetPipeline": "sammed.models.sam2d.sam_unet.pipeline",
    "build_sam_unet": "sammed.models.sam2d.sam_unet.model",
    "decode_item": "sammed.models.sam2d.sam_unet.inference",
    "image_features": "sammed.models.sam2d.sam_unet.inference",
    "infer": "sammed.models.sam2d.sam_unet.inference",
    "infer_image": "sammed.models.sam2d.sam_unet.inference",
    "prepare_item": "sammed.models.sam2d.sam_unet.inference",
    "preprocess": "sammed.models.sam2d.sam_unet.inference",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
