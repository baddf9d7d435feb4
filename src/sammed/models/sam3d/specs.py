"""Registry entries of the SAM-Med3D family."""

from __future__ import annotations

from sammed.models.registry import ModelSpec, Ref, register
from sammed.models.sam3d.config import Preprocessing3D, SamMed3DConfig  # noqa: F401  (Preprocessing3D re-exported)

BUILD_SAM_MED3D = Ref("sammed.models.sam3d.model:build_sam_med3d")


CITATION = (
    "Wang H. et al., SAM-Med3D: Towards General-purpose Segmentation Models for Volumetric "
    "Medical Images, ECCV 2024 BIC workshop (arXiv:2310.15161)"
)

HF_REPO = "https://huggingface.co/blueyo0/SAM-Med3D"
TURBO = SamMed3DConfig()
# The CVPR-2025 challenge branch (uni-medical/SAM-Med3D, CVPR25_3DFM; its readme.md lists the files)
# builds vit_b_ori with num_point_embeddings = 4 (positive/negative click + two box corners) and its
# train.py saves {'model_state_dict': ..., optimizer, args...} as main does.
TURBO_BBOX = SamMed3DConfig(num_point_embeddings=4)
TINY = SamMed3DConfig(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3))


def _hf_entry(name: str, file_name: str, config: SamMed3DConfig, description: str, **fields) -> ModelSpec:
    """An official SAM-Med3D file hosted in the authors' Hugging Face repository (Apache-2.0)."""
    return ModelSpec(
        name=name,
        family="sam-med3d",
        dims=3,
        description=description,
        config=config,
        builder=BUILD_SAM_MED3D,
        preprocessing_source=Preprocessing3D.for_config(config),
        checkpoint_file=file_name,
        source_url=f"{HF_REPO}/blob/main/{file_name}",
        download_url=f"{HF_REPO}/resolve/main/{file_name}",
        license="Apache-2.0",
        sha256=None,  # no hash is published; the first download records the file's digest
        citation=CITATION,
        **fields,
    )


SPECS = [
    _hf_entry(
        "sam-med3d-turbo",
        "sam_med3d_turbo.pth",
        TURBO,
        "SAM-Med3D-turbo (official vit_b_ori): 3D ViT-B, 128^3 input at 1.5 mm, point prompts",
        aliases=("sam-med3d", "vit_b_ori"),
    ),
    _hf_entry(
        "sam-med3d-turbo-bbox",
        "sam_med3d_turbo_cvpr_coreset.pth",
        TURBO_BBOX,
        "SAM-Med3D CVPR-2025 challenge baseline, coreset track (10% of the data): turbo plus two "
        "box-corner embeddings (point_embeddings.2/3); accepts 3D boxes",
        aliases=("sam-med3d-cvpr25-coreset",),
    ),
    _hf_entry(
        "sam-med3d-cvpr25-alldata",
        "sam_med3d_turbo_cvpr_alldata.pth",
        TURBO_BBOX,
        "SAM-Med3D CVPR-2025 challenge baseline, all-data track: same layout as sam-med3d-turbo-bbox",
    ),
    _hf_entry(
        "sam-med3d-turbo-bbox-init",
        "sam_med3d_turbo_bbox_init.pth",
        TURBO_BBOX,
        "Starting point of the CVPR-2025 fine-tuning: turbo with randomly initialised box-corner "
        "embeddings (for 'sammed train --stage 2'; its boxes are untrained)",
    ),
    ModelSpec(
        name="sam-med3d-tiny",
        family="sam-med3d",
        dims=3,
        description=(
            "Small test configuration of the official builder (width 96, depth 4, 4 heads, global "
            "blocks 1 and 3); same prompt encoder and decoder as turbo. No released weights"
        ),
        config=TINY,
        builder=BUILD_SAM_MED3D,
        preprocessing_source=Preprocessing3D.for_config(TINY),
    ),
]

for _spec in SPECS:
    register(_spec)

from sammed.models.sam3d import demo_spec as _demo_spec  # noqa: E402,F401  (registers sammed-demo-3d)
