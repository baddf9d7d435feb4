"""Prompt types and their conversion to one internal form: world LPS millimetres.

A user gives points and boxes either as voxel indices ``(i, j, k)`` of the file or as world
millimetres in RAS (NIfTI, Slicer, ITK-SNAP) or LPS (DICOM, ITK). Everything downstream works
in world LPS, so a prompt means the same physical place whatever the file's orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sammed.errors import PromptError
from sammed.io.image import Geometry

Space = Literal["voxel", "world"]
Convention = Literal["RAS", "LPS"]


def _as_xyz(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise PromptError(f"{what} needs three finite numbers, got {values!r}")
    return array


@dataclass(frozen=True)
class Point:
    """A click: ``positive`` adds the structure, negative removes it."""

    position: tuple[float, float, float]
    positive: bool = True
    space: Space = "voxel"
    convention: Convention = "RAS"

    def to_world_lps(self, geometry: Geometry) -> np.ndarray:
        return to_world_lps(self.position, geometry, self.space, self.convention, "point")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box given by two opposite corners (inclusive voxel or world coordinates)."""

    corner_a: tuple[float, float, float]
    corner_b: tuple[float, float, float]
    space: Space = "voxel"
    convention: Convention = "RAS"

    def corners_world_lps(self, geometry: Geometry) -> np.ndarray:
        """The 8 corners of the box in world LPS (a box in voxel space may be oblique in world)."""
        a = _as_xyz(self.corner_a, "box corner")
        b = _as_xyz(self.corner_b, "box corner")
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        return np.stack([to_world_lps(c, geometry, self.space, self.convention, "box") for c in corners])

    def center_world_lps(self, geometry: Geometry) -> np.ndarray:
        return self.corners_world_lps(geometry).mean(axis=0)


def to_world_lps(position, geometry: Geometry, space: str, convention: str, what: str = "point") -> np.ndarray:
    """Convert a voxel index or a world RAS/LPS position to world LPS, checking it is inside."""
    xyz = _as_xyz(position, what)
    if space == "voxel":
        index = xyz
    elif space == "world":
        if convention.upper() not in ("RAS", "LPS"):
            raise PromptError(f"world convention must be RAS or LPS, not {convention!r}")
        index = geometry.world_to_index(xyz, convention.upper())
    else:
        raise PromptError(f"prompt space must be 'voxel' or 'world', not {space!r}")
    ensure_inside(index, geometry, what, xyz, space)
    return geometry.index_to_world(index, "LPS")


def ensure_inside(index: np.ndarray, geometry: Geometry, what: str, given, space: str) -> None:
    """Refuse a prompt outside the image (half a voxel of slack at the borders)."""
    size = np.asarray(geometry.size, dtype=np.float64)
    if np.any(index < -0.5) or np.any(index > size - 0.5):
        shown = ", ".join(f"{v:g}" for v in np.asarray(given).reshape(-1))
        where = f"voxel ({shown})" if space == "voxel" else f"world position ({shown}) -> voxel " + ", ".join(
            f"{v:.1f}" for v in index
        )
        raise PromptError(f"{what} at {where} is outside the image of size {tuple(geometry.size)}")


def parse_point(text: str, space: Space = "voxel", convention: Convention = "RAS") -> Point:
    """Parse the CLI form ``x,y,z`` or ``x,y,z:+`` / ``x,y,z:-`` (default positive)."""
    body, _, sign = text.partition(":")
    sign = sign.strip() or "+"
    if sign not in ("+", "-", "pos", "neg", "1", "0"):
        raise PromptError(f"point {text!r}: the label after ':' must be + or -")
    try:
        values = tuple(float(v) for v in body.split(","))
    except ValueError:
        raise PromptError(f"point {text!r} must look like i,j,k or i,j,k:+ / i,j,k:-") from None
    if len(values) != 3:
        raise PromptError(f"point {text!r} must have three coordinates")
    return Point(values, positive=sign in ("+", "pos", "1"), space=space, convention=convention)


def parse_box(text: str, space: Space = "voxel", convention: Convention = "RAS") -> Box:
    """Parse the CLI form ``x0,y0,z0,x1,y1,z1`` (two opposite corners)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise PromptError(f"box {text!r} must look like i0,j0,k0,i1,j1,k1") from None
    if len(values) != 6:
        raise PromptError(f"box {text!r} must have six coordinates (two corners)")
    return Box(values[:3], values[3:], space=space, convention=convention)


def _sign(text: str, sign: str) -> bool:
    sign = sign.strip() or "+"
    if sign not in ("+", "-"):
        raise PromptError(f"{text!r}: the label after ':' must be + or -")
    return sign == "+"


def _vertices(text: str, parts: list[str], size: int, form: str) -> list[tuple[float, ...]]:
    vertices = []
    for part in parts:
        try:
            values = tuple(float(v) for v in part.split(","))
        except ValueError:
            raise PromptError(f"{text!r} must look like {form}") from None
        if len(values) != size or not all(np.isfinite(values)):
            raise PromptError(f"{text!r}: each vertex takes {size} finite numbers ({form})")
        vertices.append(values)
    return vertices


def parse_scribble(text: str) -> tuple[list[tuple[float, ...]], bool]:
    """The CLI form ``i,j,k/i,j,k/...[:+|-]`` (voxel positions along the stroke) -> (voxels, positive)."""
    body, _, sign = text.partition(":")
    return _vertices(text, body.split("/"), 3, "i,j,k/i,j,k/...[:+|-]"), _sign(text, sign)


def parse_lasso(text: str) -> tuple[list[tuple[float, ...]], str, int, bool]:
    """The CLI form ``AXIS=INDEX/a,b/a,b/a,b[:+|-]`` (a polygon on one slice; a, b are the two
    remaining voxel indices in order) -> (polygon, axis, index, positive)."""
    body, _, sign = text.partition(":")
    head, *parts = body.split("/")
    axis, equals, index = head.partition("=")
    form = "AXIS=INDEX/a,b/a,b/a,b[:+|-], e.g. k=15/55,45/75,45/75,62"
    if not equals or axis.strip() not in ("i", "j", "k") or not index.strip().lstrip("-").isdigit():
        raise PromptError(f"lasso {text!r} must look like {form}")
    return _vertices(text, parts, 2, form), axis.strip(), int(index), _sign(text, sign)

