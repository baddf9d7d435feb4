"""``sammed-demo-3d``: a small SAM-Med3D-architecture model trained by this project, shipped inside.

It lets the README's main command work offline. The architecture is the official one with a
smaller configuration: a 64^3 window at 3 mm (192 mm field of view, the same token grid 8^3 as
turbo with 8^3 patches, and windowed attention on 4^3 windows that tile the grid exactly, so no
padded-window waste). Weights are stored in float16 to keep the package small and are cast to
float32 when loaded. How it was trained and how well it does: ``MODEL_CARD_sammed-demo-3d.md``.
"""

from __future__ import annotations

from pathlib import Path

from sammed.errors import CheckpointError
from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.models.registry import ModelSpec, register
from sammed.models.sam3d.model import SamMed3D, SamMed3DConfig, build_sam_med3d
from sammed.models.sam3d.specs import Preprocessing3D

DEMO_MODEL_NAME = "sammed-demo-3d"
DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "data" / "sammed_demo_3d.pth"
DEMO_MODEL_CARD = DEMO_WEIGHTS.with_name("MODEL_CARD_sammed-demo-3d.md")

DEMO_CONFIG = SamMed3DConfig(
    img_size=64,
    patch_size=8,
    encoder_embed_dim=128,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    window_size=4,
    prompt_embed_dim=96,
    decoder_heads=4,
    decoder_mlp_dim=384,
)
DEMO_PREPROCESSING = Preprocessing3D(roi_size=64, target_spacing_mm=(3.0, 3.0, 3.0))


def build_demo_model(config: SamMed3DConfig) -> SamMed3D:
    """Build the demo network and load the bundled weights (any checkpoint given later replaces them)."""
    model = build_sam_med3d(config)
    if config != DEMO_CONFIG:  # architecture overrides: the bundled weights cannot fit
        return model
    if not DEMO_WEIGHTS.is_file():
        raise CheckpointError(f"the bundled weights of {DEMO_MODEL_NAME} are missing: {DEMO_WEIGHTS}")
    load_weights(model, extract_state_dict(read_checkpoint(DEMO_WEIGHTS)), model_name=DEMO_MODEL_NAME)
    return model


DEMO_SPEC = register(
    ModelSpec(
        name=DEMO_MODEL_NAME,
        family="sam-med3d",
        dims=3,
        description=(
            "sammed's own small SAM-Med3D-architecture model (64^3 window at 3 mm, 8^3 patches, width "
            "128, depth 4), trained on redistributable data; bundled, works offline. A demo, not a "
            "clinical tool: see its model card"
        ),
        config=DEMO_CONFIG,
        builder=build_demo_model,
        preprocessing=DEMO_PREPROCESSING,
        checkpoint_file=DEMO_WEIGHTS.name,
        source_url="bundled with sammed (sammed/data)",
        license="Apache-2.0 (weights); training data licences in the model card",
        citation="sammed model card: sammed/data/MODEL_CARD_sammed-demo-3d.md",
    )
)
