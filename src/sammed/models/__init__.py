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

__getattr__, __dir__, _LAZY = lazy_exports(
    __name__,
    {
        "sammed.models.checkpoint": ("extract_state_dict", "load_weights", "read_checkpoint"),
        "sammed.models.sam3d.config": ("SamMed3DConfig",),
        "sammed.models.sam3d.model": ("SamMed3D", "build_sam_med3d"),
    },
)
__all__ = sorted([*_LAZY, "REGISTRY", "ModelSpec", "Ref", "build_model", "get_model_spec", "list_models", "register"])
