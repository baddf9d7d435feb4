"""A MONAI Label datastore over ``--data-root``: images, their labels by tag, the next image to label.

Slicer's "Next Sample" and "Submit Label" buttons speak to a datastore: it lists images by id,
serves an image, stores a submitted label under a tag ('final' for finished work, 'original'
for a starting point) and picks an image that has no final label yet. Here the data root is
the datastore, read fresh on every request, and labels live beside their images:

* an image ``ct/case1.nii.gz`` has the id ``ct/case1`` (a DICOM series folder ``ct/s1`` the id
  ``ct/s1``); when two files would share an id, both keep their suffix in it;
* its label for tag ``final`` is ``ct/case1_seg.nii.gz`` (what ``/api`` save writes), for any other
  tag ``T`` ``ct/case1_seg.T.nii.gz``; a label keeps the format it was submitted in (``.nii.gz``,
  ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.mha``, a DICOM-SEG ``.dcm``);
* files named like labels are never listed as images, so a label cannot be opened, or
  written over, as an image.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sammed.io.atomic import atomic_path
from sammed.io.dicom_seg import looks_like_dicom_input
from sammed.server.errors import ForbiddenError, NotFoundError, ServerError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # self-contained volume files
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".dcm")  # longest match first
FINAL = "final"
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_DEPTH = 4  # folders below the root that are searched
MAX_ENTRIES = 20000  # directory entries looked at per scan (a huge root is listed in part)


@dataclass
class DataImage:
    """One image of the datastore and its labels (tag -> newest label file)."""

    id: str
    path: Path  # resolved, inside the root
    relative: str  # posix path relative to the root
    is_series: bool  # a DICOM series folder
    labels: dict[str, Path] = field(default_factory=dict)

    @property
    def ext(self) -> str:
        return "" if self.is_series else _suffix(self.path.name, IMAGE_SUFFIXES) or ""

    @property
    def stem(self) -> str:
        return self.path.name if self.is_series else self.path.name[: len(self.path.name) - len(self.ext)]

    @property
    def download_name(self) -> str:
        """The file name a client saves the image under (a series arrives as NIfTI)."""
        return f"{self.path.name}.nii.gz" if self.is_series else self.path.name

    def label_path(self, tag: str, ext: str) -> Path:
        return self.path.parent / f"{self.stem}_seg{'' if tag == FINAL else '.' + tag}{ext}"


def _suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    return next((s for s in suffixes if lower.endswith(s)), None)


def parse_label_name(name: str) -> tuple[str, str, str] | None:
    """'case1_seg.original.nii.gz' -> ('case1', 'original', '.nii.gz'); None unless a label name."""
    ext = _suffix(name, LABEL_SUFFIXES)
    if ext is None:
        return None
    rest = name[: len(name) - len(ext)]
    if "_seg" not in rest:
        return None
    stem, after = rest.rsplit("_seg", 1)
    if not stem:
        return None
    if after == "":
        return stem, FINAL, ext
    if after.startswith(".") and TAG.match(after[1:]):
        return stem, after[1:], ext
    return None


def check_tag(tag: str | None) -> str:
    tag = tag or FINAL
    if not TAG.match(tag):
        raise ServerError(f"tag '{tag}' is not a label tag: letters, digits, '_' and '-' (at most 64), e.g. 'final'")
    return tag


def check_id(image_id: str) -> None:
    """Refuse ids that try to leave the data root, before any lookup."""
    if not image_id or "\x00" in image_id:
        raise ServerError("give an image id (see GET /datastore/?output=all)")
    pure = PurePosixPath(image_id.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or "\\" in image_id or (len(image_id) > 1 and image_id[1] == ":"):
        raise ForbiddenError(f"'{image_id}' is not an image id of this datastore (absolute paths and '..' are refused)")


class Datastore:
    """The images and labels under one folder (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def scan(self) -> dict[str, DataImage]:
        """Every image by id, with its labels; a fresh look at the folder each time."""
        images: list[tuple[str, Path, bool]] = []
        labels: list[tuple[Path, str, str, str]] = []  # (folder, stem, tag, path)
        budget = [MAX_ENTRIES]
        self._walk(self.root, 0, images, labels, budget)
        by_id: dict[str, list[tuple[str, Path, bool]]] = {}
        for relative, path, series in images:
            ext = "" if series else _suffix(path.name, IMAGE_SUFFIXES) or ""
            by_id.setdefault(relative[: len(relative) - len(ext)] if ext else relative, []).append((relative, path, series))
        found: dict[str, DataImage] = {}
        for image_id, group in by_id.items():
            for relative, path, series in group:
                key = image_id if len(group) == 1 else relative
                found[key] = DataImage(key, path, relative, series)
        index = {(image.path.parent, image.stem): image for image in found.values()}
        for folder, stem, tag, path in sorted(labels, key=lambda item: _mtime(Path(item[3]))):
            image = index.get((folder, stem))
            if image is not None:
                image.labels[tag] = Path(path)  # newest last: it wins
        return dict(sorted(found.items()))

    def _walk(self, folder: Path, depth: int, images: list, labels: list, budget: list[int]) -> None:
        try:
            children = sorted(folder.iterdir())
        except OSError:
            return
        for child in children:
            budget[0] -= 1
            if budget[0] < 0:
                return
            if child.name.startswith("."):
                continue
            try:
                real = child.resolve(strict=True)
                is_dir = real.is_dir()
            except (OSError, RuntimeError):
                continue
            if not real.is_relative_to(self.root):
                continue  # a link out of the root is neither listed nor opened
            relative = child.relative_to(self.root).as_posix()
            if is_dir:
                if looks_like_dicom_input(real):
                    images.append((relative, real, True))
                elif depth < MAX_DEPTH:
                    self._walk(child, depth + 1, images, labels, budget)
                continue
            parsed = parse_label_name(child.name)
            if parsed is not None:
                stem, tag, _ = parsed
                labels.append((real.parent, stem, tag, str(real)))
            elif _suffix(child.name, (".seg.nrrd",)) is None and _suffix(child.name, IMAGE_SUFFIXES):
                images.append((relative, real, False))

    def image(self, image_id: str) -> DataImage:
        """The image with this id (or this path relative to the root): 404 when there is none."""
        check_id(image_id)
        images = self.scan()
        if image_id in images:
            return images[image_id]
        for image in images.values():
            if image.relative == image_id:
                return image
        raise NotFoundError(f"Image NOT Found: no image '{image_id}' in the datastore")

    def status(self, images: dict[str, DataImage] | None = None) -> dict:
        images = self.scan() if images is None else images
        tags: dict[str, int] = {}
        for image in images.values():
            for tag in image.labels:
                tags[tag] = tags.get(tag, 0) + 1
        return {
            "total": len(images),
            "completed": sum(1 for image in images.values() if FINAL in image.labels),
            "label_tags": tags,
        }

    def describe(self) -> dict:
        """MONAI Label's datastore JSON (``GET /datastore/?output=all``), paths left out."""
        objects = {}
        for image_id, image in self.scan().items():
            objects[image_id] = {
                "image": {"ext": image.ext, "info": {"name": image.download_name, "ts": int(_mtime(image.path))}},
                "labels": {
                    tag: {"ext": _suffix(path.name, LABEL_SUFFIXES) or "", "info": {"name": path.name, "ts": int(_mtime(path))}}
                    for tag, path in sorted(image.labels.items())
                },
            }
        return {"name": "sammed data root", "description": "images and labels under --data-root", "images_dir": "", "labels_dir": "", "objects": objects}

    def unlabeled(self) -> list[DataImage]:
        return [image for image in self.scan().values() if FINAL not in image.labels]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def place_file(staged: Path, target: Path) -> Path:
    """Copy ``staged`` to ``target`` atomically (temp name in the target folder, fsync, rename)."""
    try:
        with atomic_path(target) as tmp:
            shutil.copyfile(staged, tmp)
    except OSError as exc:
        raise ServerError(f"cannot write the label: {exc.strerror or exc}") from None
    return target
