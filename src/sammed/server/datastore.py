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
  written over, as an image;
* an image a client uploads (Slicer's "Submit Label" for a volume loaded in Slicer) lands at the
  top of the root as ``<id>.<ext>``; an id that is not a plain file name gets a cleaned name plus a
  short hash of the id (``upload_stem``), and is found under the client's id as well;
* the params a label was submitted with (``label_info``: the segment names) are kept beside it as
  ``<label file>.json`` and reported while that label file is the one they were written with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
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
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
INFO_SUFFIX = ".json"  # label params beside the label: ct_seg.nrrd -> ct_seg.nrrd.json
MAX_INFO_BYTES = 1 << 16
_PLACING = threading.Lock()  # one upload placed at a time within this server


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
    drive = len(image_id) > 1 and image_id[0].isalpha() and image_id[1] == ":"  # "3: CT" is a Slicer node name
    if pure.is_absolute() or ".." in pure.parts or "\\" in image_id or drive:
        raise ForbiddenError(f"'{image_id}' is not an image id of this datastore (absolute paths and '..' are refused)")


def upload_stem(image_id: str) -> str:
    """The file stem an uploaded image with this id gets at the top of the root.

    A plain name keeps itself, so the datastore lists the image under the client's own id;
    anything else (spaces, ':', '/', a name that would read as a label) is cleaned and given
    8 hex digits of the id's SHA-256, so two different ids never share a file.
    """
    check_id(image_id)
    if PLAIN_NAME.match(image_id) and parse_label_name(image_id + ".nii.gz") is None:
        return image_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._-")[:80] or "image"
    return f"{cleaned}-{hashlib.sha256(image_id.encode()).hexdigest()[:8]}"


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
        uploaded = upload_stem(image_id)
        if uploaded in images and images[uploaded].path.parent == self.root:
            return images[uploaded]  # an id that was cleaned on upload
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
                    tag: {"ext": _suffix(path.name, LABEL_SUFFIXES) or "", "info": {**read_label_info(path), "name": path.name, "ts": int(_mtime(path))}}
                    for tag, path in sorted(image.labels.items())
                },
            }
        return {"name": "sammed data root", "description": "images and labels under --data-root", "images_dir": "", "labels_dir": "", "objects": objects}

    def unlabeled(self) -> list[DataImage]:
        return [image for image in self.scan().values() if FINAL not in image.labels]

    def upload_clashes(self, image_id: str, stem: str) -> list[Path]:
        """What an upload under ``image_id`` would meet: the image with that id, any ``<stem>.*`` at the top."""
        found = [self.root / (stem + suffix) for suffix in IMAGE_SUFFIXES] + [self.root / stem]
        clashes = [path for path in found if os.path.lexists(path)]
        with contextlib.suppress(NotFoundError):
            known = self.image(image_id).path
            if all(known != Path(os.path.realpath(path)) for path in clashes):
                clashes.append(known)
        return clashes


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def place_new(staged: Path, target: Path) -> bool:
    """Copy ``staged`` to ``target`` atomically, never over an existing file: False when one is there.

    ``atomic_path(exclusive=True)`` fills and fsyncs a hidden temporary name (scans skip it),
    then hard-links it to ``target``, which fails when the name exists, even one made by another
    process. The lock serialises this server's uploads for file systems without hard links.
    """
    with _PLACING:
        try:
            with atomic_path(target, exclusive=True) as temporary:
                shutil.copyfile(staged, temporary)
        except FileExistsError:
            return False
        except OSError as exc:
            raise ServerError(f"cannot write the image: {exc.strerror or exc}") from None
        return True


def _info_path(label: Path) -> Path:
    return label.with_name(label.name + INFO_SUFFIX)


def write_label_info(label: Path, params: dict) -> None:
    """Keep a label's submitted params beside it, tied to the label file's size and mtime."""
    stat = label.stat()
    record = {"params": params, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    text = json.dumps(record)
    if len(text) > MAX_INFO_BYTES:
        raise ServerError(f"params are {len(text)} bytes as JSON, over the {MAX_INFO_BYTES} kept with a label")
    try:
        with atomic_path(_info_path(label)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ServerError(f"the label was saved but its params were not: {exc.strerror or exc}") from None


def read_label_info(label: Path) -> dict:
    """The params a label was submitted with, or {} when none were kept or the file changed since."""
    try:
        record = json.loads(_info_path(label).read_text(encoding="utf-8")[: MAX_INFO_BYTES + 1])
        stat = label.stat()
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or (record.get("size"), record.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        return {}  # written over since (e.g. by the web viewer's Save): the names may no longer hold
    params = record.get("params")
    return params if isinstance(params, dict) else {}


def place_file(staged: Path, target: Path) -> Path:
    """Copy ``staged`` to ``target`` atomically (temp name in the target folder, fsync, rename)."""
    try:
        with atomic_path(target) as tmp:
            shutil.copyfile(staged, tmp)
    except OSError as exc:
        raise ServerError(f"cannot write the label: {exc.strerror or exc}") from None
    return target
