"""Registry entries of SAM-UNet (ResNet-34 and ResNet-50 branches)."""

from __future__ import annotations

from sammed.models.registry import ModelSpec, Ref, register
from sammed.models.sam2d.sam_unet.config import SamUNetConfig

CITATION = (
    "Yang S., Bi H., Zhang H., Sun J., SAM-UNet: Enhancing Zero-Shot Segmentation of SAM for "
    "Universal Medical Images, arXiv:2408.09886v1 (2024)"
)
SOURCE = "https://github.com/Hhankyangg/sam-unet (code only; no released checkpoint)"
LICENSE = "none stated"  # the repository has no LICENSE file
# No checkpoint is released (checkpoint_file=None). Files from the official trainers are
# {'model': state_dict, 'optimizer': <pickled Adam>}: loading one needs trust_checkpoint=True.


def _entry(depth: int, role: str) -> ModelSpec:
    return ModelSpec(
        name=f"sam-unet-r{depth}",
        family="sam-unet",
        dims=2,
        description=(
            f"SAM-UNet with a ResNet-{depth} branch (official res{depth}_sam_unet, {role}): frozen SAM "
            "ViT-B at 256 + CNN injections + multi-scale decoder; boxes (trained), points, masks"
        ),
        config=SamUNetConfig(resnet_depth=depth),
        builder=Ref("sammed.models.sam2d.sam_unet.model:build_sam_unet"),
        preprocessing_source=Ref("sammed.models.sam2d.sam_unet.pipeline:SamUNetPipeline"),
        checkpoint_file=None,
        source_url=SOURCE,
        license=LICENSE,
        citation=CITATION,
        aliases=(f"res{depth}_sam_unet",),
    )


SPECS = [_entry(34, "the multi-GPU trainer's model"), _entry(50, "the code's default")]

for _spec in SPECS:
    register(_spec)
