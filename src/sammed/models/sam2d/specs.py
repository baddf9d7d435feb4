"""Registry entries of the 2D SAM family: SAM ViT-B/L/H and SAM-Med2D (with / without adapters)."""

from __future__ import annotations

from sammed.models.registry import ModelSpec, Ref, register
from sammed.models.sam2d.config import Sam2DConfig

BUILD_SAM2D = Ref("sammed.models.sam2d.model:build_sam2d")
LONGEST_SIDE = Ref("sammed.models.sam2d.pipeline:LongestSidePipeline")
DIRECT_RESIZE = Ref("sammed.models.sam2d.pipeline:DirectResizePipeline")

SAM_CITATION = "Kirillov A. et al., Segment Anything, ICCV 2023 (arXiv:2304.02643)"
SAM_MED2D_CITATION = "Cheng J. et al., SAM-Med2D, arXiv:2308.16184 (2023)"
SAM_DOWNLOAD = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_MED2D_SOURCE = "https://github.com/OpenGVLab/SAM-Med2D (README: Google Drive / Baidu Pan links)"

SAM_B = Sam2DConfig()
SAM_L = Sam2DConfig(
    encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23)
)
SAM_H = Sam2DConfig(
    encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31)
)
SAM_MED2D = Sam2DConfig(img_size=256, encoder_adapter=True)


def _sam_entry(size: str, config: Sam2DConfig, file_name: str, sha256: str, params: str) -> ModelSpec:
    return ModelSpec(
        name=f"sam-vit-{size}",
        family="sam",
        dims=2,
        description=f"Segment Anything ViT-{size.upper()} ({params} parameters), 1024 input, points/boxes/masks",
        config=config,
        builder=BUILD_SAM2D,
        preprocessing_source=LONGEST_SIDE,
        checkpoint_file=file_name,
        source_url=SAM_DOWNLOAD + file_name,
        download_url=SAM_DOWNLOAD + file_name,
        license="Apache-2.0",
        # The file name's 6-hex suffix is the start of the file's MD5; these are the SHA-256s.
        sha256=sha256,
        citation=SAM_CITATION,
        aliases=(f"vit_{size}",),
    )


SPECS = [
    _sam_entry(
        "b", SAM_B, "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "94M"
    ),
    _sam_entry(
        "l", SAM_L, "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", "312M"
    ),
    _sam_entry(
        "h", SAM_H, "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", "641M"
    ),
    ModelSpec(
        name="sam-med2d",
        family="sam-med2d",
        dims=2,
        description=(
            "SAM-Med2D (ViT-B at 256 with an adapter in every block), points/boxes/masks; code "
            "Apache-2.0, the weights' licence is not stated"
        ),
        config=SAM_MED2D,
        builder=BUILD_SAM2D,
        preprocessing_source=DIRECT_RESIZE,
        checkpoint_file="sam-med2d_b.pth",
        source_url=SAM_MED2D_SOURCE,
        license="not stated",
        sha256=None,  # the file is only on Google Drive / Baidu; no published hash
        citation=SAM_MED2D_CITATION,
        aliases=("sam-med2d-b",),
    ),
    ModelSpec(
        name="sam-med2d-no-adapter",
        family="sam-med2d",
        dims=2,
        description=(
            "SAM-Med2D* of the paper: the released sam-med2d_b.pth without its adapters (built "
            "without them; their 180M weights are dropped on load)"
        ),
        config=SAM_MED2D.with_overrides(encoder_adapter=False),
        builder=BUILD_SAM2D,
        preprocessing_source=DIRECT_RESIZE,
        checkpoint_file="sam-med2d_b.pth",
        source_url=SAM_MED2D_SOURCE,
        license="not stated",
        adapt_state_dict=Ref("sammed.models.sam2d.model:drop_adapter_weights"),
        citation=SAM_MED2D_CITATION,
    ),
]

for _spec in SPECS:
    register(_spec)
