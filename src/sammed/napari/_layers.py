"""Between sammed images and napari layers: display order, scale, translate and the kept geometry.

No napari or Qt import here, so the conventions can be tested (and reused) without a viewer.

**Display convention.** A layer shows the voxel array transposed, ``data[k, j, i] ==
image.array[i, j, k]`` (a view, no copy): napari slices along its first axis (the slider is k),
rows are j and columns i. This is SimpleITK's array order, so a plain numpy volume ``(z, y, x)``
maps to a file the way ``sitk.GetImageFromArray`` would.

**World convention.** napari layers carry scale and translate only. The layer gets, per display
axis ``a``, ``scale_a = sign_a * spacing_a`` and ``translate_a = sign_a * (D^-1 @ origin)_a``,
where ``D`` is the direction matrix and ``sign_a`` the sign of the axis' dominant LPS component.
napari's world is then millimetres along the scan's own voxel axes, each increasing towards L, P
or S: for an axis-aligned scan (any mix of flips, e.g. a NIfTI stored RAS) it is exactly the LPS
coordinate, and an axial slice shows radiologically (patient right on the screen's left, anterior
up) whatever the storage order. Distances and the scale bar are in mm, and the clicks, boxes and
labels layers the widget adds get the same scale and translate, so they overlay voxel for voxel.
Rotation is deliberately not given to napari (an oblique direction would make napari slice
off-grid); instead the full geometry (size, spacing, LPS origin, direction) is kept beside the
layer in ``layer.metadata["sammed"]["geometry"]`` with the source path and orientation letters,
and masks are written with it, so a saved mask lands exactly on the input's grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sammed.io import Geometry, Image

METADATA_KEY = "sammed"
DISPLAY_AXES = ("k", "j", "i")
_LPS_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


class LayerError(ValueError):
    """A layer cannot be segmented by a 3D model (2D, RGB, multiscale, bad scale...)."""


def orientation_code(direction: np.ndarray) -> str:
    """Three letters: the LPS direction towards which i, j and k increase (e.g. 'LPS', 'RAS')."""
    letters = []
    for axis in range(3):
        column = np.asarray(direction)[:, axis]
        dominant = int(np.argmax(np.abs(column)))
        letters.append(_LPS_LETTERS[dominant][0 if column[dominant] >= 0 else 1])
    return "".join(letters)


def axis_signs(geometry: Geometry) -> np.ndarray:
    """+1 or -1 per voxel axis (i, j, k): the sign of its dominant LPS component."""
    direction = np.asarray(geometry.direction, dtype=np.float64)
    dominant = np.argmax(np.abs(direction), axis=0)
    return np.where(direction[dominant, np.arange(direction.shape[1])] < 0, -1.0, 1.0)


def display_transform(geometry: Geometry) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, translate) of a layer showing ``geometry``'s voxels in display order [k, j, i].

    ``world_a = sign_a * (D^-1 @ p)_a``: millimetres along each voxel axis, signed so that it
    increases towards L, P or S; for an axis-aligned scan that is the LPS coordinate itself.
    """
    signs = axis_signs(geometry)
    translate = signs * np.linalg.solve(np.asarray(geometry.direction, dtype=np.float64), np.asarray(geometry.origin))
    scale = signs * np.asarray(geometry.spacing, dtype=np.float64)
    return tuple(float(s) for s in scale[::-1]), tuple(float(t) for t in translate[::-1])


def layer_metadata(image: Image) -> dict:
    """The metadata entry that keeps what napari cannot: the full geometry and the source."""
    return {
        METADATA_KEY: {
            "geometry": image.geometry,
            "source": image.source,
            "axes": "".join(DISPLAY_AXES),
            "orientation": orientation_code(image.geometry.direction) if image.geometry.ndim == 3 else None,
            "origin_lps": tuple(image.geometry.origin),
            "direction": np.asarray(image.geometry.direction).tolist(),
        }
    }


def image_layer_data(image: Image, name: str | None = None) -> tuple[np.ndarray, dict, str]:
    """A napari LayerData tuple (data in display order, kwargs, 'image') for a 3D ``image``."""
    scale, translate = display_transform(image.geometry)
    kwargs = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "metadata": layer_metadata(image),
        "axis_labels": DISPLAY_AXES,
        "units": "mm",
    }
    return image.array.T, {k: v for k, v in kwargs.items() if v is not None}, "image"


@dataclass(frozen=True)
class LayerVolume:
    """A layer seen as a sammed volume: the ``Image`` ([i, j, k]) and where it came from."""

    image: Image
    from_file: bool  # True when the geometry came from the reader (else scale/translate of a plain array)


def volume_from_layer(layer) -> LayerVolume:
    """The sammed ``Image`` behind a napari image layer, or ``LayerError`` saying why not.

    A layer opened by the sammed reader gives back its file's geometry. A plain array
    (no file behind it) becomes a volume whose spacing is the layer's scale and whose origin is
    its translate, in the same reversed order (napari axis 0 is k); a negative scale is a flipped
    axis (direction -1), so napari's world coordinates are the volume's LPS millimetres. The
    layer's rotate/shear/affine, if any, are not part of the volume (prompts are voxels anyway).
    """
    name = getattr(layer, "name", "layer")
    if getattr(layer, "multiscale", False):
        raise LayerError(f"'{name}' is a multiscale layer; open a single-resolution 3D volume")
    if getattr(layer, "rgb", False):
        raise LayerError(f"'{name}' is an RGB(A) image; a 3D model needs a single-channel 3D volume")
    ndim = int(layer.ndim)
    if ndim != 3:
        raise LayerError(f"'{name}' is a {ndim}D layer of shape {tuple(layer.data.shape)}; a 3D model needs a 3D volume")
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise LayerError(f"'{name}' has data of shape {data.shape}; a 3D model needs a single-channel 3D volume")
    kept = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY, {})
    geometry = kept.get("geometry")
    if isinstance(geometry, Geometry) and tuple(geometry.size) == tuple(data.shape[::-1]):
        return LayerVolume(Image(array=data.T, geometry=geometry, source=kept.get("source")), from_file=True)
    scale = np.asarray(layer.scale, dtype=np.float64)
    translate = np.asarray(layer.translate, dtype=np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale == 0) or not np.all(np.isfinite(translate)):
        raise LayerError(f"'{name}' has scale {tuple(scale)} and translate {tuple(translate)}; they must be finite and non-zero")
    geometry = Geometry(
        size=data.shape[::-1], spacing=np.abs(scale[::-1]), origin=translate[::-1], direction=np.diag(np.sign(scale[::-1]))
    )
    return LayerVolume(Image(array=data.T, geometry=geometry, source=None), from_file=False)


def display_to_voxel(display_index) -> np.ndarray:
    """Layer data coordinates [k, j, i] (continuous) -> voxel index (i, j, k)."""
    return np.asarray(display_index, dtype=np.float64)[..., ::-1]


def voxel_to_display(voxel_index) -> np.ndarray:
    """Voxel index (i, j, k) -> layer data coordinates [k, j, i]."""
    return np.asarray(voxel_index, dtype=np.float64)[..., ::-1]


def inside(voxel_index, size) -> bool:
    """True when a continuous voxel index lies in the image (half a voxel of slack, as the CLI)."""
    index = np.asarray(voxel_index, dtype=np.float64)
    return bool(np.all(np.isfinite(index)) and np.all(index >= -0.5) and np.all(index <= np.asarray(size) - 0.5))
