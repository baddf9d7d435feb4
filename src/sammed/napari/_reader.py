"""napari reader: NIfTI, NRRD, MetaImage and DICOM (file or series folder) through ``sammed.io``.

Each volume becomes one image layer in display order [k, j, i] with scale and translate in mm
and the full geometry kept in ``layer.metadata["sammed"]`` (see ``_layers``).
"""

from __future__ import annotations

import os
from pathlib import Path

from sammed.io import READ_SUFFIXES, read_image
from sammed.io.dicom import looks_like_dicom
from sammed.napari._layers import image_layer_data


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _readable(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.is_dir():  # a DICOM series folder: its first files say so
        try:
            files = sorted(child for child in p.iterdir() if child.is_file())[:8]
        except OSError:
            return False
        return any(looks_like_dicom(child) for child in files)
    return _suffix(p) in READ_SUFFIXES or (p.is_file() and looks_like_dicom(p))


def get_reader(path):
    """npe2 reader command: a reader function for paths sammed can open, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_readable(p) for p in paths):
        return None
    return read_volumes


def read_volumes(path) -> list[tuple]:
    """Read one or more paths into image LayerData tuples (one line of error text on failure)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        image = read_image(p)
        name = Path(p).name
        for suffix in (".nii.gz", *READ_SUFFIXES):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        if image.ndim == 3:
            layers.append(image_layer_data(image, name=name))
        else:  # 2D or 4D files open as plain layers: the widget explains why it cannot segment them
            layers.append((image.array.T, {"name": name, "metadata": {"sammed": {"source": image.source}}}, "image"))
    return layers
