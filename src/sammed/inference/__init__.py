"""Inference: model windows around prompts, interactive sessions, the official protocol."""

from sammed.inference.roi import RoiGrid
from sammed.inference.session import ObjectState, Session

__all__ = ["ObjectState", "RoiGrid", "Session"]
