"""The in-memory image: a voxel array plus the geometry that places it in the world.

Conventions (settled here, used everywhere):

* ``array`` is indexed ``[i, j, k]`` in the file's own voxel order, i.e. what ITK-SNAP,
  Slicer and nibabel call i, j, k. (SimpleITK's ``GetArrayFromImage`` returns ``[k, j, i]``;
  that transpose happens in the readers and writers only.)
* ``spacing``, ``origin`` and ``direction`` follow ITK/DICOM: world coordinates are **LPS**
  millimetres, ``direction[:, a]`` is the world direction of voxel axis ``a``.
* ``Image.index_to_world(..., convention="RAS")`` converts to the NIfTI/Slicer convention;
  RAS = diag(-1, -1, 1) @ LPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _check_convention(convention: str) -> str:
    conv = convention.upper()
    if conv not in ("LPS", "RAS"):
        raise ValueError(f"world convention must be 'RAS' or 'LPS', not {convention!r}")
    return conv


@dataclass(frozen=True)
class Geometry:
    """Voxel grid placement: size (i, j, k), spacing (mm), origin (LPS mm), direction (3x3)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        direction = np.asarray(self.direction, dtype=np.float64).reshape(len(self.size), len(self.size))
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))

    @property
    def ndim(self) -> int:
        return len(self.size)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 (or (n+1)x(n+1)) matrix mapping homogeneous (i, j, k, 1) to LPS mm."""
        n = self.ndim
        affine = np.eye(n + 1)
        affine[:n, :n] = self.direction @ np.diag(self.spacing)
        affine[:n, n] = self.origin
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """The same mapping to RAS mm (what nibabel reports for a NIfTI file)."""
        if self.ndim != 3:
            raise ValueError("RAS affine is defined for 3D geometry only")
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return flip @ self.affine_lps

    def index_to_world(self, index, convention: str = "LPS") -> np.ndarray:
        """Continuous voxel index (..., n) -> world mm (..., n) in the given convention."""
        conv = _check_convention(convention)
        idx = np.asarray(index, dtype=np.float64)
        world = idx @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)
        if conv == "RAS":
            world = world @ LPS_TO_RAS
        return world

    def world_to_index(self, world, convention: str = "LPS") -> np.ndarray:
        """World mm (..., n) in the given convention -> continuous voxel index (..., n)."""
        conv = _check_convention(convention)
        pts = np.asarray(world, dtype=np.float64)
        if conv == "RAS":
            pts = pts @ LPS_TO_RAS
        inv = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return (pts - np.asarray(self.origin)) @ inv.T

    def same_grid(self, other: "Geometry", atol: float = 1e-5) -> bool:
        """True when both describe the same voxel grid (size exact, the rest within atol)."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )


@dataclass
class Image:
    """A voxel array indexed [i, j, k] with its geometry; optional source metadata."""

    array: np.ndarray
    geometry: Geometry
    source: str | None = None

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != tuple(self.geometry.size):
            raise ValueError(f"array shape {self.array.shape} does not match geometry size {self.geometry.size}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.geometry.spacing

    def index_to_world(self, index, convention: str = "LPS") -> np.ndarray:
        return self.geometry.index_to_world(index, convention)

    def world_to_index(self, world, convention: str = "LPS") -> np.ndarray:
        return self.geometry.world_to_index(world, convention)

    def with_array(self, array: np.ndarray) -> "Image":
        """Same geometry, new voxels (e.g. a mask for this image)."""
        return Image(array=array, geometry=self.geometry, source=self.source)
