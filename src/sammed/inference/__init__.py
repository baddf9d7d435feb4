"""Inference: model windows around prompts, interactive sessions (3D), the 2D predictor, the official protocol."""

from sammed.inference.automatic2d import AutomaticMaskGenerator2D
from sammed.inference.predictor2d import Predictor2D
from sammed.inference.roi import RoiGrid
from sammed.inference.session import ObjectState, Session

__all__ = ["AutomaticMaskGenerator2D", "ObjectState", "Predictor2D", "RoiGrid", "Session"]
