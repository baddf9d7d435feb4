"""Model architectures, the registry and safe checkpoint loading."""

from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.models.registry import REGISTRY, ModelSpec, build_model, get_model_spec, list_models
from sammed.models.sam3d import SamMed3D, SamMed3DConfig, build_sam_med3d

__all__ = [
    "REGISTRY",
    "ModelSpec",
    "SamMed3D",
    "SamMed3DConfig",
    "build_model",
    "build_sam_med3d",
    "extract_state_dict",
    "get_model_spec",
    "list_models",
    "load_weights",
    "read_checkpoint",
]
