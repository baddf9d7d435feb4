"""``sammed-demo-3d``: a small SAM-Med3D-architecture model trained by this project, shipped inside.

It lets the README's main command work offline. The architecture is the official one with a
smaller configuration: a 64^3 window at 3 mm (192 mm field of view, the same token grid 8^3 as
turbo with 8^3 patches, and windowed attention on 4^3 windows that tile the grid exactly, so no
padded-window waste). Weights are stored in float16 to keep the package small and are cast to
float32 when loaded. How it was trained and how well it does: ``MODEL_CARD_sammed-demo-3d.md``.

One deliberate difference from upstream: the point encoding uses the same axis order as the
dense image encoding. Upstream's sparse and dense encodings disagree by a swap of the first two
axes (spec §3.3); the released checkpoints learned around it, but a model trained from scratch
with little compute cannot, and then ignores its clicks.
"""

from __future__ import annotations

from pathlib import Path

from sammed.models.registry import ModelSpec, Ref, register
from sammed.models.sam3d.config import Preprocessing3D, SamMed3DConfig

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
    window_spacing_mm=3.0,
    aligned_point_axes=True,
)
DEMO_PREPROCESSING = Preprocessing3D.for_config(DEMO_CONFIG)


# ``config.extra[LOAD_BUNDLED] = False`` builds the bare network (what a trainer starts from).
LOAD_BUNDLED = "load_bundled_weights"


DEMO_SPEC = register(
    ModelSpec(
        name=DEMO_MODEL_NAME,
        family="sam-med3d",
        dims=3,
        description=(
            "sammed's own small SAM-Med3D-architecture model (64^3 window at 3 mm, 8^3 patches, width "
            "128, depth 4), bundled, works offline. Trained 43 + 57 + 50 min on a 2-core CPU: held-out "
            "Dice 0.21 / 0.32 / 0.39 after 1 / 3 / 5 clicks (model card); a demo, not a clinical tool"
        ),
        config=DEMO_CONFIG,
        builder=Ref("sammed.models.sam3d.demo_model:build_demo_model"),
        preprocessing_source=DEMO_PREPROCESSING,
        checkpoint_file=DEMO_WEIGHTS.name,
        source_url="bundled with sammed (sammed/data)",
        bundled_path=DEMO_WEIGHTS,
        license="Apache-2.0 (weights); training data licences in the model card",
        sha256="b9ffde5bc1480ce45a102b0eee38edc296f601080b41131dd0eaa6d9ac70cb0f",
        citation="sammed model card: sammed/data/MODEL_CARD_sammed-demo-3d.md",
    )
)
