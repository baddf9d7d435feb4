"""Reading and writing images and masks with their exact geometry (no model knowledge)."""

from sammed.io.image import Geometry, Image
from sammed.io.readers import READ_SUFFIXES, from_sitk, read_image, to_sitk
from sammed.io.validation import validate_label_map, validate_volume
from sammed.io.writers import WRITE_SUFFIXES, write_image, write_mask

__all__ = [
    "Geometry",
    "Image",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "from_sitk",
    "read_image",
    "to_sitk",
    "validate_label_map",
    "validate_volume",
    "write_image",
    "write_mask",
]
