"""DICOM series discovery and reading (GDCM, through SimpleITK).

A folder is read as one series: GDCM groups the files by series and sorts the slices by
their position along the slice normal, so the z axis of the result follows the patient,
not the file names.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sammed.errors import ImageReadError

_DICOM_MAGIC_OFFSET = 128
_POSITION_TAG = "0020|0032"  # Image Position (Patient)
_STEP_TOLERANCE = 0.01  # relative spread of slice steps tolerated before warning


def looks_like_dicom(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble ("DICM" at byte 128).

    DICOM files often have no extension (or a UID as "extension"), so the suffix alone
    cannot tell.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _series_files(folder: Path) -> list[str]:
    """File names of the series to read; the largest one when the folder holds several."""
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageReadError(
            f"cannot read image '{folder}': no DICOM series found in this folder (subfolders are not searched)"
        )
    files_by_id = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: len(files_by_id[sid]))
    if len(series_ids) > 1:
        counts = ", ".join(f"{sid or '<no UID>'} ({len(files_by_id[sid])} files)" for sid in series_ids)
        warnings.warn(
            f"'{folder}' holds {len(series_ids)} DICOM series: {counts}; reading the largest, {chosen or '<no UID>'}",
            stacklevel=4,
        )
    files = list(files_by_id[chosen])
    if not files:
        raise ImageReadError(f"cannot read image '{folder}': the DICOM series {chosen!r} lists no files")
    return files


def _slice_steps(reader: sitk.ImageSeriesReader, n_files: int, normal: np.ndarray) -> np.ndarray | None:
    """Distances between consecutive slice positions along the slice normal, or None if unknown."""
    positions = []
    for i in range(n_files):
        if not reader.HasMetaDataKey(i, _POSITION_TAG):
            return None
        try:
            positions.append([float(v) for v in reader.GetMetaData(i, _POSITION_TAG).split("\\")])
        except ValueError:
            return None
    return np.diff(np.sort(np.asarray(positions) @ normal))


def read_dicom_series(folder: Path) -> sitk.Image:
    """Read the (largest) DICOM series in ``folder`` as one SimpleITK volume.

    Raises ``ImageReadError`` when the folder holds no DICOM; warns when it holds several
    series or when the slices are unevenly spaced (a missing slice makes ITK's single z
    spacing wrong for part of the volume).
    """
    files = _series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()  # RuntimeError is turned into ImageReadError by the caller
    if len(files) >= 3 and image.GetDimension() == 3:
        normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
        steps = _slice_steps(reader, len(files), normal)
        # ITK flags any floating-point deviation; only a real gap or duplicate matters.
        if steps is not None and steps.size and (
            steps.min() < 1e-3 or steps.max() - steps.min() > _STEP_TOLERANCE * abs(steps.mean())
        ):
            warnings.warn(
                f"'{folder}': DICOM slices are unevenly spaced (steps {steps.min():.3g} to {steps.max():.3g} mm: "
                f"missing or duplicate slices?); the volume assumes a uniform {image.GetSpacing()[2]:.4g} mm",
                stacklevel=3,
            )
    return image
