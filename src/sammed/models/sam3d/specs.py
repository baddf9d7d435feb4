"""Registry entries of the SAM-Med3D family."""

from __future__ import annotations

from dataclasses import dataclass

from sammed.models.registry import ModelSpec, register
from sammed.models.sam3d.model import SamMed3DConfig, build_sam_med3d


@dataclass(frozen=True)
class Preprocessing3D:
    """How a 3D model expects its input region (the official inference pipeline)."""

    roi_size: int = 128
    target_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    orientation: str = "RAS"  # canonical orientation of the ROI axes (A0, A1, A2)
    normalization: str = "zscore over voxels > 0"

    def describe(self) -> str:
        return (
            f"{self.roi_size}^3 voxels at {self.target_spacing_mm[0]} mm, {self.orientation}, {self.normalization}"
        )


CITATION = (
    "Wang H. et al., SAM-Med3D: Towards General-purpose Segmentation Models for Volumetric "
    "Medical Images, ECCV 2024 BIC workshop (arXiv:2310.15161)"
)

SPECS = [
    ModelSpec(
        name="sam-med3d-turbo",
        family="sam-med3d",
        dims=3,
        description="SAM-Med3D-turbo (official vit_b_ori): 3D ViT-B, 128^3 input at 1.5 mm, point prompts",
        config=SamMed3DConfig(),
        builder=build_sam_med3d,
        preprocessing=Preprocessing3D(),
        checkpoint_file="sam_med3d_turbo.pth",
        source_url="https://huggingface.co/blueyo0/SAM-Med3D/blob/main/sam_med3d_turbo.pth",
        license="Apache-2.0",
        sha256=None,  # not verifiable offline; record it once a release hash is published
        citation=CITATION,
        aliases=("sam-med3d", "vit_b_ori"),
    ),
    ModelSpec(
        name="sam-med3d-turbo-bbox",
        family="sam-med3d",
        dims=3,
        description=(
            "SAM-Med3D CVPR-2025 challenge variant: turbo architecture plus two box-corner "
            "embeddings (point_embeddings.2/3); accepts 3D boxes"
        ),
        config=SamMed3DConfig(num_point_embeddings=4),
        builder=build_sam_med3d,
        preprocessing=Preprocessing3D(),
        checkpoint_file="sam_med3d_turbo_bbox_cvpr_coreset.pth",
        source_url="https://huggingface.co/blueyo0/SAM-Med3D (branch CVPR25_3DFM checkpoints)",
        license="Apache-2.0",
        citation=CITATION,
    ),
    ModelSpec(
        name="sam-med3d-tiny",
        family="sam-med3d",
        dims=3,
        description=(
            "Small test configuration of the official builder (width 96, depth 4, 4 heads, global "
            "blocks 1 and 3); same prompt encoder and decoder as turbo. No released weights"
        ),
        config=SamMed3DConfig(
            encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3)
        ),
        builder=build_sam_med3d,
        preprocessing=Preprocessing3D(),
    ),
]

for _spec in SPECS:
    register(_spec)
