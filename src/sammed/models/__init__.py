"""Model architectures, the registry and safe checkpoint loading.

The registry (``get_model_spec``, ``list_models``, ``REGISTRY``...) is plain data and imports
without torch; the architectures and ``build_model``'s loading import torch on first use.
"""

from sammed._lazy import lazy_exports
from sammed.models.registry import (  # noqa: F401  (re-exported: see __all__)
    REGISTRY,
    ModelSpec,
    Ref,
    build_model,
    get_model_spec,
    list_models,
    register,
)

_EXPORTS = {
    "SamMed3D": "sammed.models.sam3d.model",
    "SamMed3DConfig": "sammed.models.sam3d.config",
    "build_sam_med3d": "sammed.models.sam3d.model",
    "extract_state_dict": "sammed.models.checkpoint",
    "load_weights": "sammed.models.checkpoint",
    "read_checkpoint": "sammed.models.checkpoint",
}
__all__ = sorted(
    [*_EXPORTS, "REGISTRY", "ModelSpec", "Ref", "build_model", "get_model_spec", "list_models", "register"]
)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
