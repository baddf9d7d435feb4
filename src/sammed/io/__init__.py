"""Reading and writing images and masks with their exact geometry (no model knowledge)."""

from sammed.io.image import Geometry, Image

__all__ = ["Geometry", "Image"]
