"""sammed: promptable segmentation of medical images (SAM-Med3D, SAM-Med2D, SAM-UNet, SAM)."""

__version__ = "0.1.0"
