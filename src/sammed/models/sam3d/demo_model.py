"""Building ``sammed-demo-3d``: the official architecture in the demo configuration, bundled weights loaded."""

from __future__ import annotations

from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.models.registry import get_model_spec
from sammed.models.sam3d.config import SamMed3DConfig
from sammed.models.sam3d.demo_spec import DEMO_CONFIG, DEMO_MODEL_NAME, LOAD_BUNDLED
from sammed.models.sam3d.model import SamMed3D, build_sam_med3d
from sammed.models.weights import bundled_weights


def build_demo_model(config: SamMed3DConfig) -> SamMed3D:
    """Build the demo network and load the bundled weights (any checkpoint given later replaces them).

    Its architecture differs from upstream by configuration only (``aligned_point_axes``).
    """
    model = build_sam_med3d(config)
    if config != DEMO_CONFIG or not config.extra.get(LOAD_BUNDLED, True):  # overrides: weights cannot fit
        return model
    weights = bundled_weights(get_model_spec(DEMO_MODEL_NAME))  # checked against the registry's sha256
    load_weights(model, extract_state_dict(read_checkpoint(weights)), model_name=DEMO_MODEL_NAME)
    return model
