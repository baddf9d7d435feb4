"""The segmentation server: session API, MONAI-Label-compatible subset and web viewer (``sammed serve``)."""

from sammed.server.app import create_app
from sammed.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
