"""DICOM Segmentation objects (DICOM-SEG) for masks of DICOM series, written and read with highdicom.

Radiology keeps results next to the images in DICOM: a SEG references the source series'
instances, copies patient and study, and names each segment with a label, a colour and the
algorithm that made it, so any PACS viewer (and Slicer, OHIF, MONAI Label) shows it over the
right slices. Frames map to our ``[i, j, k]`` label maps by each source instance's position:
frame of instance at slice ``k`` is ``labels[:, :, k].T`` (rows run along j, columns along i).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sammed.errors import ImageReadError, ImageWriteError, InvalidImageError
from sammed.io.atomic import atomic_path
from sammed.io.image import Geometry, Image
from sammed.io.segments import Segment, checked_labels, segments_for

DCM = ".dcm"
_TRACKING = re.compile(r"^sammed label (\d+)$")
_POSITION_TOLERANCE_MM = 0.05  # how far a frame may lie from a slice of the reference grid


def looks_like_dicom_input(path: Path) -> bool:
    """True for a DICOM file, or a folder whose first regular file is DICOM (a series folder)."""
    from sammed.io.dicom import looks_like_dicom

    if path.is_file():
        return looks_like_dicom(path)
    if not path.is_dir():
        return False
    try:
        first = next((c for c in sorted(path.iterdir()) if c.is_file() and not c.name.startswith(".")), None)
    except OSError:
        return False
    return first is not None and looks_like_dicom(first)


def series_datasets(folder: str | os.PathLike) -> list:
    """The headers (no pixels) of the DICOM series ``read_image`` reads from ``folder``.

    UIDs that an anonymiser blanked are filled so the SEG can reference the instances: SOP
    class and instance from the file meta, study and series UIDs derived from the instances
    (the same values on every run).
    """
    import pydicom
    from pydicom.uid import generate_uid

    from sammed.io.dicom import _series_files

    source = Path(folder)
    files = _series_files(source) if source.is_dir() else [str(source)]
    datasets = []
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for a damaged file
            raise ImageReadError(f"cannot read DICOM file '{Path(name).name}': {exc}") from None
        meta = getattr(ds, "file_meta", None)
        if not ds.get("SOPClassUID") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not ds.get("SOPInstanceUID") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        if not ds.get("SOPInstanceUID") or not ds.get("SOPClassUID"):
            raise ImageReadError(f"DICOM file '{Path(name).name}' has no SOP instance UID: a DICOM-SEG cannot reference it")
        datasets.append(ds)
    instances = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not all(ds.get(key) for ds in datasets):
            derived = generate_uid(entropy_srcs=[key, *instances])
            for ds in datasets:
                if not ds.get(key):
                    setattr(ds, key, derived)
    return datasets


def _slice_of(ds, geometry: Geometry) -> int:
    """The k index of a source instance on ``geometry``, from its Image Position (Patient)."""
    position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    index = geometry.world_to_index(position, "LPS")
    k = int(round(index[2]))
    if abs(index[0]) > 0.01 or abs(index[1]) > 0.01 or abs(index[2] - k) > 0.01 or not 0 <= k < geometry.size[2]:
        raise InvalidImageError(
            f"DICOM instance {ds.SOPInstanceUID} does not lie on a slice of the image grid: "
            "write the DICOM-SEG from the series the mask was made on"
        )
    if int(ds.Rows) != geometry.size[1] or int(ds.Columns) != geometry.size[0]:
        raise InvalidImageError(
            f"DICOM instance {ds.SOPInstanceUID} is {ds.Columns} x {ds.Rows} pixels, the mask {geometry.size[0]} x {geometry.size[1]}"
        )
    return k


def write_dicom_seg(
    labels: np.ndarray,
    reference: Image | Geometry,
    source: str | os.PathLike | list,
    path: str | os.PathLike,
    *,
    names: Mapping[int, str] | None = None,
    algorithm: tuple[str, str] = ("sammed", "unknown"),
    segments: list[Segment] | None = None,
) -> Path:
    """Write a label map made on a DICOM series as a DICOM-SEG (binary, one segment per label value).

    ``source`` is the series folder (or its headers from ``series_datasets``); ``algorithm`` is
    (model name, version) for the Algorithm Identification. Written atomically; returns the path.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from sammed import __version__

    target = Path(path).expanduser()
    if target.suffix.lower() != DCM:
        raise ImageWriteError(f"cannot write '{target}': a DICOM-SEG file ends in {DCM}")
    array, geometry = checked_labels(labels, reference)
    datasets = source if isinstance(source, list) else series_datasets(source)
    slices = [_slice_of(ds, geometry) for ds in datasets]
    segments = segments if segments is not None else segments_for(array, names)
    if not segments:
        segments = segments_for([1], names)  # an empty mask still names its (empty) segment
    name, version = algorithm
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=name, family=codes.cid7162.ArtificialIntelligence, version=version or "unknown"
    )
    descriptions = []
    numbered = np.zeros((len(datasets), geometry.size[1], geometry.size[0]), dtype=np.uint16)
    for number, segment in enumerate(segments, start=1):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=segment.name[:64],
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
                algorithm_identification=algorithm_id,
                tracking_uid=hd.UID(),
                tracking_id=f"sammed label {segment.label}",
                display_color=hd.color.CIELabColor.from_rgb(*(round(c * 255) for c in segment.color)),
            )
        )
        for frame, k in enumerate(slices):
            numbered[frame][array[:, :, k].T == segment.label] = number
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=numbered if len(segments) > 1 else numbered.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="sammed",
        manufacturer_model_name=name[:64],
        software_versions=f"sammed {__version__}",
        device_serial_number="0",
        series_description=f"{name} segmentation"[:64],
        omit_empty_frames=bool(numbered.any()),
    )
    try:
        with atomic_path(target) as tmp:
            seg.save_as(tmp)
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{target}': {exc.strerror or exc}") from None
    return target


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """True for a single DICOM file whose SOP class is Segmentation Storage."""
    import pydicom

    p = Path(path)
    if not p.is_file():
        return False
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.66.4"


def read_dicom_seg(path: str | os.PathLike, reference: Image | Geometry) -> tuple[np.ndarray, list[Segment]]:
    """A DICOM-SEG as a label map on ``reference``'s grid, with its segments.

    Each frame is placed by its Image Position (Patient); the SEG's planes must be the
    reference's slices (the series it was made on). Segments written by sammed keep their
    label values; others get their segment numbers. Later segments win where two overlap.
    """
    import highdicom as hd

    source = Path(path)
    geometry = reference.geometry if isinstance(reference, Image) else reference
    try:
        seg = hd.seg.segread(source)
        frames = seg.pixel_array
    except Exception as exc:  # highdicom and pydicom raise many types for a damaged file
        raise ImageReadError(f"cannot read DICOM-SEG '{source}': {exc}") from None
    if frames.ndim == 2:
        frames = frames[None]
    if str(seg.SegmentationType) == "FRACTIONAL":
        frames = frames >= (int(seg.MaximumFractionalValue) + 1) // 2
    segments: dict[int, Segment] = {}
    values: dict[int, int] = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        match = _TRACKING.match(str(item.get("TrackingID", "")))
        value = int(match.group(1)) if match else number
        values[number] = value
        color: tuple[float, float, float] = (1.0, 1.0, 0.0)
        if item.get("RecommendedDisplayCIELabValue"):
            rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
            color = (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)
        segments[number] = Segment(value, str(item.SegmentLabel), color)
    shared = seg.SharedFunctionalGroupsSequence[0]

    def group(frame, name: str):
        """A functional group of one frame: its own, or the one all frames share."""
        own = frame.get(name)
        return own[0] if own else shared[name][0]

    first = seg.PerFrameFunctionalGroupsSequence[0]
    orientation = np.asarray([float(v) for v in group(first, "PlaneOrientationSequence").ImageOrientationPatient])
    if not np.allclose(orientation[:3], geometry.direction[:, 0], atol=1e-3) or not np.allclose(
        orientation[3:], geometry.direction[:, 1], atol=1e-3
    ):
        raise InvalidImageError(f"DICOM-SEG '{source.name}' is not in the image's orientation (resampling is not supported)")
    top = max(values.values(), default=1)
    labels = np.zeros(geometry.size, dtype=np.uint8 if top <= 255 else np.uint16, order="F")
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(group(frame, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        position = np.asarray([float(v) for v in group(frame, "PlanePositionSequence").ImagePositionPatient])
        at = geometry.world_to_index(position, "LPS")
        k = int(round(at[2]))
        spacing = np.asarray(geometry.spacing)
        if np.any(np.abs(at - [0, 0, k]) * spacing > _POSITION_TOLERANCE_MM) or not 0 <= k < geometry.size[2]:
            raise InvalidImageError(f"DICOM-SEG '{source.name}' has a frame off the image's slices (at index {at.round(2).tolist()})")
        plane = frames[index].T
        if plane.shape != tuple(geometry.size[:2]):
            raise InvalidImageError(f"DICOM-SEG '{source.name}' frames are {plane.shape}, the image slices {geometry.size[:2]}")
        labels[:, :, k][plane > 0] = values.get(number, number)
    return labels, [segments[n] for n in sorted(segments)]
