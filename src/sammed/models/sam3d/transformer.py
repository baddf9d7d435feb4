"""SAM-Med3D's names for the shared two-way transformer (``sammed.models.common``)."""

from sammed.models.common import Attention, TwoWayAttentionBlock, TwoWayTransformer

# The official SAM-Med3D class names; the maths is SAM's, for any number of spatial axes.
TwoWayTransformer3D = TwoWayTransformer
TwoWayAttentionBlock3D = TwoWayAttentionBlock

__all__ = ["Attention", "TwoWayAttentionBlock3D", "TwoWayTransformer3D"]
