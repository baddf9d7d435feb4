"""Evaluation datasets: the folder layouts researchers already have, read without copying.

* **nnU-Net raw** (``dataset.json``, ``imagesTr/<case>_0000<ending>``, ``labelsTr/<case><ending>``):
  label names from ``dataset.json`` (v1 ``{"1": "liver"}`` or v2 ``{"liver": 1}``); channel 0000
  only, since SAM models take one channel.
* **SAM-Med3D training layout** (``<root>/<class>/<modality_dataset>/{imagesTr,labelsTr}``, one
  binary label per file; the root may also be one ``<class>`` or ``<modality_dataset>`` folder).
  The case id is the path below the root; a ``ct_`` dataset folder means CT, as upstream reads it.
* **SA-Med2D JSON lists**: ``label2image_test.json`` (mask -> image) or ``image2label_train.json``
  (image -> masks). Paths are tried as written relative to the JSON's folder, then with leading
  folders dropped (the demo's ``data_demo/`` prefix). One case per image, one object per mask.
* **A single image/label pair** (``load_dataset(image, label=...)``; 2D when the files are PNG/JPEG).

Cases are sorted by id, so every process of a sharded run sees the same order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from sammed.errors import SammedError

__all__ = ["DatasetError", "EvalCase", "EvalDataset", "load_dataset", "IMAGE_2D_SUFFIXES"]

IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NNUNET_IMAGE_CHANNEL = "_0000"
SAMMED2D_LISTS = ("label2image_test.json", "image2label_train.json")
_INSTANCE_SUFFIX = re.compile(r"_\d+$")


class DatasetError(SammedError):
    """An evaluation dataset is missing, malformed or in an unknown layout."""


@dataclass(frozen=True)
class EvalCase:
    """One image with its ground truth: a label map, or (2D lists) one binary mask per object."""

    case_id: str
    image: Path
    label: Optional[Path] = None
    masks: tuple[tuple[str, Path], ...] = ()
    modality: str = ""
    label_names: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalDataset:
    root: Path
    layout: str  # "nnunet", "sam-med3d", "sa-med2d" or "pair"
    dims: int
    cases: tuple[EvalCase, ...]
    label_names: Mapping[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)


def load_dataset(path: str | Path, label: str | Path | None = None) -> EvalDataset:
    """Detect the layout of ``path`` and list its cases (``label`` given: a single pair)."""
    root = Path(path).expanduser()
    if label is not None:
        return _single_pair(root, Path(label).expanduser())
    if not root.exists():
        raise DatasetError(f"dataset not found: {root}")
    if root.is_file():
        if root.suffix.lower() == ".json":
            return _sammed2d(root)
        raise DatasetError(f"{root} is a file: give a dataset folder, a SA-Med2D JSON list, or --label for a pair")
    if (root / "dataset.json").is_file() and (root / "labelsTr").is_dir():
        return _nnunet(root)
    for name in SAMMED2D_LISTS:
        if (root / name).is_file():
            return _sammed2d(root / name)
    label_dirs = sorted(p for pattern in ("labelsTr", "*/labelsTr", "*/*/labelsTr") for p in root.glob(pattern))
    if label_dirs:
        return _sammed3d(root, label_dirs)
    raise DatasetError(
        f"{root}: unknown dataset layout (expected an nnU-Net folder with dataset.json, "
        "SAM-Med3D <class>/<dataset>/labelsTr folders, or a SA-Med2D JSON list)"
    )


def _is_2d(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_2D_SUFFIXES


def _file_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


def _single_pair(image: Path, label: Path) -> EvalDataset:
    for p, what in ((image, "image"), (label, "label")):
        if not p.is_file():
            raise DatasetError(f"{what} not found: {p}")
    case = EvalCase(_file_stem(image), image, label=label)
    return EvalDataset(image.parent, "pair", 2 if _is_2d(image) else 3, (case,))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def _nnunet_labels(raw: object, path: Path) -> dict[int, str]:
    """Label value -> name from ``dataset.json`` (both nnU-Net versions); regions are refused."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: 'labels' must be an object")
    names: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            raise DatasetError(f"{path}: region-based label {key!r} is not supported; give plain label values")
        try:
            number, name = (int(key), str(value)) if str(key).lstrip("-").isdigit() else (int(value), str(key))
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: cannot read label {key!r}: {value!r}") from None
        if number != 0:
            names[number] = name
    return names


def _nnunet(root: Path) -> EvalDataset:
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or "labels" not in meta:
        raise DatasetError(f"{meta_path}: no 'labels' entry")
    names = _nnunet_labels(meta["labels"], meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    channels = meta.get("channel_names") or meta.get("modality") or {}
    modality = str(channels.get("0", "")) if isinstance(channels, dict) else ""
    cases = []
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        case_id = label.name[: -len(ending)]
        image = root / "imagesTr" / f"{case_id}{NNUNET_IMAGE_CHANNEL}{ending}"
        if not image.is_file():
            raise DatasetError(f"{root}: label {label.name} has no image imagesTr/{image.name}")
        cases.append(EvalCase(case_id, image, label=label, modality=modality, label_names=names))
    if not cases:
        raise DatasetError(f"{root}/labelsTr holds no '*{ending}' label files")
    dims = 2 if _is_2d(cases[0].image) else 3
    return EvalDataset(root, "nnunet", dims, tuple(cases), names)


def _sammed3d(root: Path, label_dirs: list[Path]) -> EvalDataset:
    cases = []
    for label_dir in label_dirs:
        dataset_dir = label_dir.parent
        prefix = dataset_dir.relative_to(root).as_posix()
        # <class>/<modality_dataset>: the class is the folder above the dataset folder.
        class_name = dataset_dir.parent.name if dataset_dir != root else dataset_dir.name
        modality = "CT" if dataset_dir.name.lower().startswith("ct_") else ""
        for label in sorted(label_dir.glob("*.nii*")):
            image = dataset_dir / "imagesTr" / label.name
            if not image.is_file():
                raise DatasetError(f"{dataset_dir}: label {label.name} has no image imagesTr/{label.name}")
            stem = _file_stem(label)
            case_id = f"{prefix}/{stem}" if prefix != "." else stem
            cases.append(EvalCase(case_id, image, label=label, modality=modality, label_names={1: class_name}))
    if not cases:
        raise DatasetError(f"{root}: the labelsTr folders hold no NIfTI files")
    return EvalDataset(root, "sam-med3d", 3, tuple(sorted(cases, key=lambda c: c.case_id)))


def _resolve(base: Path, written: str) -> Path:
    """A path from a SA-Med2D list: as written, else with leading folders dropped, below ``base``."""
    parts = Path(written).parts
    for start in range(len(parts)):
        candidate = base.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{written!r} from the list is not found below {base}")


def _sammed2d(list_path: Path) -> EvalDataset:
    raw = _read_json(list_path)
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{list_path}: expected a non-empty JSON object")
    pairs: list[tuple[str, str]] = []  # (image, mask) as written
    for key, value in raw.items():
        if isinstance(value, str):
            pairs.append((value, key))  # label2image: mask -> image
        elif isinstance(value, list):
            pairs.extend((key, str(m)) for m in value)  # image2label: image -> masks
        else:
            raise DatasetError(f"{list_path}: entry {key!r} is neither a path nor a list of paths")
    base = list_path.parent
    by_image: dict[Path, list[tuple[str, Path]]] = {}
    for image_written, mask_written in pairs:
        image, mask = _resolve(base, image_written), _resolve(base, mask_written)
        key = _file_stem(mask)
        if key.startswith(_file_stem(image) + "_"):
            key = key[len(_file_stem(image)) + 1 :]
        by_image.setdefault(image, []).append((key, mask))
    cases = []
    for image, masks in by_image.items():
        keys = [k for k, _ in masks]
        if len(set(keys)) != len(keys):
            raise DatasetError(f"{list_path}: image {image.name} lists the same mask twice")
        cases.append(EvalCase(_file_stem(image), image, masks=tuple(sorted(masks))))
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{list_path}: two images share a file name; case ids must be unique")
    return EvalDataset(base, "sa-med2d", 2, tuple(sorted(cases, key=lambda c: c.case_id)))


def mask_class_name(key: str) -> str:
    """Structure name of a SA-Med2D mask key: ``liver_000`` -> ``liver``."""
    return _INSTANCE_SUFFIX.sub("", key)
