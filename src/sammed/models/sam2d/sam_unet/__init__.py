"""SAM-UNet: SAM ViT-B (frozen) + a parallel ResNet-34/50 branch + a multi-scale mask decoder."""

from sammed._lazy import lazy_exports

__getattr__, __dir__, _LAZY = lazy_exports(
    __name__,
    {
        "sammed.models.sam2d.sam_unet.config": ("SamUNetConfig",),
        "sammed.models.sam2d.sam_unet.inference": ("decode_item", "image_features", "infer", "infer_image", "prepare_item", "preprocess"),
        "sammed.models.sam2d.sam_unet.mask_decoder": ("MedMaskDecoder",),
        "sammed.models.sam2d.sam_unet.model": ("SamUNet", "SamUNetFeatures", "build_sam_unet"),
        "sammed.models.sam2d.sam_unet.pipeline": ("SamUNetPipeline",),
        "sammed.models.sam2d.sam_unet.resnet": ("ResNetBranch",),
    },
)
__all__ = _LAZY
