"""Model registry: name -> architecture, checkpoint facts and preprocessing.

Each entry records where the official weights come from (file name, URL, licence, sha256 when
known) so that ``sammed models info NAME`` can tell a user what to download and whether a file
they have is the right one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from sammed.errors import UnknownModelError
from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.models.sam3d.model import SamMed3DConfig, build_sam_med3d


@dataclass(frozen=True)
class Preprocessing3D:
    """How a 3D model expects its input region (the official inference pipeline)."""

    roi_size: int = 128
    target_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    orientation: str = "RAS"  # canonical orientation of the ROI axes (A0, A1, A2)
    normalization: str = "zscore over voxels > 0"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    description: str
    config: SamMed3DConfig
    preprocessing: Preprocessing3D = field(default_factory=Preprocessing3D)
    checkpoint_file: str | None = None
    source_url: str | None = None
    license: str | None = None
    sha256: str | None = None
    citation: str | None = None
    aliases: tuple[str, ...] = ()

    def build(self, **overrides) -> nn.Module:
        config = self.config.with_overrides(**overrides) if overrides else self.config
        return build_sam_med3d(config)


_SAM_MED3D_CITATION = (
    "Wang H. et al., SAM-Med3D: Towards General-purpose Segmentation Models for Volumetric "
    "Medical Images, ECCV 2024 BIC workshop (arXiv:2310.15161)"
)

_SPECS = [
    ModelSpec(
        name="sam-med3d-turbo",
        family="sam-med3d",
        description="SAM-Med3D-turbo (official vit_b_ori): 3D ViT-B, 128^3 input at 1.5 mm, point prompts",
        config=SamMed3DConfig(),
        checkpoint_file="sam_med3d_turbo.pth",
        source_url="https://huggingface.co/blueyo0/SAM-Med3D/blob/main/sam_med3d_turbo.pth",
        license="Apache-2.0",
        sha256=None,  # not verifiable offline; recorded once a release hash is published
        citation=_SAM_MED3D_CITATION,
        aliases=("sam-med3d", "vit_b_ori"),
    ),
    ModelSpec(
        name="sam-med3d-turbo-bbox",
        family="sam-med3d",
        description=(
            "SAM-Med3D CVPR-2025 challenge variant: turbo architecture plus two box-corner "
            "embeddings (point_embeddings.2/3); accepts 3D boxes"
        ),
        config=SamMed3DConfig(num_point_embeddings=4),
        checkpoint_file="sam_med3d_turbo_bbox_cvpr_coreset.pth",
        source_url="https://huggingface.co/blueyo0/SAM-Med3D (branch CVPR25_3DFM checkpoints)",
        license="Apache-2.0",
        citation=_SAM_MED3D_CITATION,
    ),
    ModelSpec(
        name="sam-med3d-tiny",
        family="sam-med3d",
        description=(
            "Small test configuration of the official builder (width 96, depth 4, 4 heads, global "
            "blocks 1 and 3); same prompt encoder and decoder as turbo. No released weights"
        ),
        config=SamMed3DConfig(
            encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3)
        ),
    ),
]

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
_ALIASES: dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}


def list_models() -> list[str]:
    return list(REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    key = _ALIASES.get(name, name)
    if key not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return REGISTRY[key]


def build_model(
    name: str,
    checkpoint: str | Path | None = None,
    trust_checkpoint: bool = False,
    **overrides,
) -> nn.Module:
    """Build a registered model, optionally loading a checkpoint strictly; returns it in eval mode.

    ``overrides`` change architecture fields of the entry's config (e.g. ``encoder_depth=6``).
    """
    spec = get_model_spec(name)
    model = spec.build(**overrides)
    if checkpoint is not None:
        state_dict = extract_state_dict(read_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint))
        load_weights(model, state_dict, model_name=spec.name)
    model.spec = spec  # type: ignore[attr-defined]  # lets pipelines read preprocessing facts
    return model.eval()
