"""Model architectures, the registry and safe checkpoint loading.

Importing this package registers every family's entries (``sam3d/specs.py``, ...).
"""

from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.models.registry import REGISTRY, ModelSpec, build_model, get_model_spec, list_models, register
from sammed.models.sam3d import SamMed3D, SamMed3DConfig, build_sam_med3d
from sammed.models.sam3d import specs as _sam3d_specs  # noqa: F401  (registers the entries)
from sammed.models.sam3d import demo_spec as _demo_spec  # noqa: F401  (registers sammed-demo-3d)
from sammed.models.sam2d import specs as _sam2d_specs  # noqa: F401  (registers the entries)
from sammed.models.sam2d.sam_unet import specs as _sam_unet_specs  # noqa: F401  (registers the entries)

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
    "register",
]
