"""Checks on an image file's bytes before and while a reader decodes it.

SimpleITK is a forgiving reader: it follows a header's pointer to any data file on the
machine, picks the format from the content whatever the suffix says, zero-fills a damaged
gzip stream, and turns a zero spacing into 1 mm. Each function here closes one of those
doors, and each raises ``ImageReadError`` with one line naming what it refused.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import types
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from sammed.errors import ImageReadError
from sammed.io.dicom import looks_like_dicom

_inflate: types.ModuleType
try:  # ISA-L's inflater (the ``isal`` dependency); zlib's, same interface, where no wheel exists
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - every supported platform has a wheel
    _inflate = zlib

ExternalDataPolicy = Literal["same-folder", "refuse"]
EXTERNAL_DATA_POLICIES: tuple[str, ...] = ("same-folder", "refuse")

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_PROBE_BYTES = 1 << 16  # text headers (NRRD, MetaImage) longer than this are refused
_METAIMAGE_KEY = re.compile(rb"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def _fail(path: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image '{path}': {reason}")


# --------------------------------------------------------------------------- content vs suffix


def _gunzip_head(raw: bytes, size: int) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(raw, size)
    except zlib.error:
        return b""


def _is_nifti_header(head: bytes) -> bool:
    """sizeof_hdr (348 or 540, either byte order) and the single-file magic ``n+1``/``n+2``."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            return head[344:348] == b"n+1\x00"
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            return head[4:8] == b"n+2\x00"
    return False


def check_content_matches_suffix(path: Path, suffix: str) -> None:
    """Refuse a file whose bytes are not the format its suffix names.

    Prevents a renamed file (a PNG called ``.nii.gz``, a NIfTI called ``.nrrd``) from being
    decoded by whichever ITK reader happens to recognise it, with a geometry nobody chose.
    """
    with open(path, "rb") as fh:
        raw = fh.read(_HEADER_PROBE_BYTES)
    if suffix == ".nii.gz":
        if not raw.startswith(_GZIP_MAGIC):
            raise _fail(path, "the file is not gzip-compressed although it is named .nii.gz")
        if not _is_nifti_header(_gunzip_head(raw, 540)):
            raise _fail(path, "the gzip stream does not hold a single-file NIfTI image (no n+1/n+2 header)")
    elif suffix == ".nii":
        if not _is_nifti_header(raw[:540]):
            reason = "it is gzip-compressed (name it .nii.gz)" if raw.startswith(_GZIP_MAGIC) else "no n+1/n+2 header"
            raise _fail(path, f"not a single-file NIfTI image: {reason}")
    elif suffix in (".nrrd", ".nhdr"):
        if not raw.startswith(b"NRRD000"):
            raise _fail(path, f"not an NRRD file (no 'NRRD000x' magic line) although it is named {suffix}")
    elif suffix in (".mha", ".mhd"):
        first = raw.split(b"\n", 1)[0]
        if not _METAIMAGE_KEY.match(first) or b"ElementDataFile" not in raw:
            raise _fail(path, f"not a MetaImage file (no 'Key = value' header with ElementDataFile) although it is named {suffix}")
        _check_metaimage_dimensions(path, raw)
    elif suffix == ".dcm" and not looks_like_dicom(path) and not _looks_like_raw_dicom(raw):
        raise _fail(path, "not a DICOM file (no 'DICM' preamble and no DICOM data elements)")


_MAX_DIMENSIONS = 4  # 3D + time/components; ITK's MetaIO reader crashes on absurd NDims


def _check_metaimage_dimensions(path: Path, raw: bytes) -> None:
    """NDims must be 1-4 and DimSize that many positive integers, checked before ITK parses them
    (MetaIO dereferences past its arrays, and the process dies, on a negative or huge NDims)."""
    fields: dict[bytes, bytes] = {}
    for line in raw.split(b"\n"):
        match = _METAIMAGE_KEY.match(line)
        if match:
            fields.setdefault(match.group(1), match.group(2))
        if match and match.group(1) == b"ElementDataFile":
            break
    try:
        ndims = int(fields.get(b"NDims", b""))
        sizes = [int(v) for v in fields.get(b"DimSize", b"").split()]
    except ValueError:
        raise _fail(path, "its MetaImage header has no valid NDims/DimSize integers") from None
    if not 1 <= ndims <= _MAX_DIMENSIONS or len(sizes) != ndims or min(sizes) < 1:
        raise _fail(path, f"its MetaImage header gives NDims {ndims} and DimSize {sizes}: not a valid image size")


def _looks_like_raw_dicom(raw: bytes) -> bool:
    """A preamble-less DICOM stream starts with a group 0002/0008 element (little endian)."""
    if len(raw) < 8:
        return False
    group = struct.unpack("<H", raw[:2])[0]
    return group in (0x0002, 0x0008)


# --------------------------------------------------------------------------- detached data files


def _metaimage_data_file(raw: bytes) -> str | None:
    """The ``ElementDataFile`` value of a MetaImage header (the header's last field)."""
    for line in raw.split(b"\n"):
        match = _METAIMAGE_KEY.match(line)
        if match and match.group(1) == b"ElementDataFile":
            return match.group(2).decode("utf-8", "replace")
    return None


def _nrrd_data_file(raw: bytes) -> str | None:
    """The ``data file`` (or ``datafile``) field of an NRRD header; None if the data follows inline."""
    for line in raw.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if not line:
            break  # the blank line ends the header
        if line.startswith(b"#"):
            continue
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() in (b"data file", b"datafile"):
            return value.strip().decode("utf-8", "replace")
    return None


def _check_sibling(path: Path, name: str) -> None:
    """``name`` must be a plain file name in the header's own folder (no folders, no ``..``)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise _fail(path, f"its header names the data file '{name}', which is not a file in the header's own folder")
    if not (path.parent / name).is_file():
        raise _fail(path, f"its header names the data file '{name}', which does not exist beside it")


def _named_data_files(path: Path, suffix: str) -> tuple[str, list[str]] | None:
    """(header value, listed names) of a detached header; None when the data is inline."""
    if suffix not in (".mha", ".mhd", ".nrrd", ".nhdr"):
        return None
    with open(path, "rb") as fh:
        raw = fh.read(_HEADER_PROBE_BYTES)
    if suffix in (".mha", ".mhd"):
        value = _metaimage_data_file(raw)
        if value is None or value.upper() == "LOCAL":
            return None
        listed = value.split() if value.upper() != "LIST" else _metaimage_list(raw)
    else:
        value = _nrrd_data_file(raw)
        if value is None:
            return None
        listed = value.split() if value.upper() != "LIST" else _nrrd_list(raw)
    if len(listed) > 1 and "%" in listed[0]:  # pattern form: "name%03d.raw first last step"
        listed = [listed[0]]
    return value, listed


def check_external_data(path: Path, suffix: str, policy: ExternalDataPolicy) -> None:
    """Refuse headers that send the reader to other files, or (CLI) to files outside their folder.

    MetaImage (``ElementDataFile``) and NRRD (``data file``) headers may name any path, a list
    of files or a file-name pattern. Followed blindly, an uploaded header reads a server's
    files and returns their bytes as voxels. With ``policy="refuse"`` (the server) only
    self-contained files are read; with ``"same-folder"`` (the command line) each named data
    file must be a plain name beside the header.
    """
    named = _named_data_files(path, suffix)
    if named is None:
        return
    value, listed = named
    if policy == "refuse":
        raise _fail(path, f"its header reads voxels from another file ('{value}'); only self-contained "
                    "files are accepted here (save it as .nrrd, .mha or .nii.gz)")
    if not listed:
        raise _fail(path, "its header names a data file list that is empty")
    for name in listed:
        if "%" in name:  # a numbered pattern: its folder part is what matters
            if "/" in name or "\\" in name or ".." in name:
                _check_sibling(path, name)
            continue
        _check_sibling(path, name)


def detached_data_files(path: Path) -> list[Path]:
    """The data files a detached header names that exist beside it (empty for inline data)."""
    from sammed.io.readers import image_suffix

    try:
        named = _named_data_files(path, image_suffix(path))
    except OSError:
        return []
    if named is None:
        return []
    return [path.parent / name for name in named[1] if "/" not in name and "\\" not in name and (path.parent / name).is_file()]


def _metaimage_list(raw: bytes) -> list[str]:
    lines = raw.split(b"\n")
    for number, line in enumerate(lines):
        if _METAIMAGE_KEY.match(line) and line.split(b"=", 1)[0].strip() == b"ElementDataFile":
            return [ln.strip().decode("utf-8", "replace") for ln in lines[number + 1 :] if ln.strip()]
    return []


def _nrrd_list(raw: bytes) -> list[str]:
    header = raw.split(b"\n\n", 1)[0].split(b"\n")
    for number, line in enumerate(header):
        key = line.partition(b":")[0].strip().lower()
        if key in (b"data file", b"datafile"):
            return [ln.strip().decode("utf-8", "replace") for ln in header[number + 1 :] if ln.strip()]
    return []


# --------------------------------------------------------------------------- NIfTI spacing


def check_nifti_spacing(path: Path, head: bytes) -> None:
    """Refuse a NIfTI header whose voxel size (pixdim 1-3) is zero or not finite.

    ITK's NIfTI reader replaces a zero pixdim by 1 mm with only a warning on stderr, so the
    mask of a broken header would be written with a spacing nobody measured.
    """
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            ndim = struct.unpack(endian + "h", head[40:42])[0]
            pixdim = struct.unpack(endian + "8f", head[76:108])
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
            if not (np.isfinite(vox_offset) and vox_offset >= 0):
                raise _fail(path, f"its header gives an invalid voxel data offset ({vox_offset:g})")
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            ndim = struct.unpack(endian + "q", head[16:24])[0]
            pixdim = struct.unpack(endian + "8d", head[104:168])
            break
    else:
        return
    spatial = pixdim[1 : 1 + max(0, min(int(ndim), 3))]
    if not all(np.isfinite(p) and p != 0 for p in spatial):
        shown = ", ".join(f"{p:g}" for p in spatial)
        raise _fail(path, f"its header gives a zero or non-finite voxel size (pixdim {shown})")


# --------------------------------------------------------------------------- gzip integrity


GZIP_WBITS = 31  # zlib's gzip wrapper: checks CRC-32 and length at each member's end
ZLIB_WBITS = 15  # zlib wrapper (MetaImage CompressedData): checks Adler-32


def verify_compressed_stream(path: Path, offset: int = 0, wbits: int = GZIP_WBITS) -> None:
    """Decompress ``path`` from ``offset`` to its end, discarding the output, so zlib checks
    every checksum and that the stream is complete.

    A bit flip inside a complete .nii.gz passes ITK's reader (it stops at the voxel count and
    never reads the trailer), giving half a volume of wrong voxels; a compressed NRRD cut in
    its trailer reads without a word. Output is bounded per call so a decompression bomb
    costs time, not memory.
    """
    for _ in _inflated(path, offset, wbits, zlib, lambda: 1 << 22):
        pass


def _inflated(
    path: Path, offset: int, wbits: int, lib: types.ModuleType, room: Callable[[], int], chunk: int = 1 << 20
) -> Iterator[bytes]:
    """Decompressed pieces of the stream at ``offset``, each at most ``room()`` bytes.

    Follows gzip members to the end of the file (trailing zero padding allowed); ``lib`` is
    zlib or ISA-L's ``isal_zlib`` (same interface). Raises ``ImageReadError`` on corrupt data
    or a stream cut short.
    """
    what = "gzip" if wbits == GZIP_WBITS else "zlib"
    inflater = lib.decompressobj(wbits=wbits)
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            while data := fh.read(chunk):
                while data:
                    yield inflater.decompress(data, room())
                    if inflater.eof:
                        data = inflater.unused_data
                        if wbits == GZIP_WBITS and data.strip(b"\x00"):  # another gzip member follows
                            inflater = lib.decompressobj(wbits=wbits)
                        else:
                            data = b""
                    else:
                        data = inflater.unconsumed_tail
    except lib.error as exc:
        raise _fail(path, f"corrupt {what} data ({exc})") from None
    if not inflater.eof:
        raise _fail(path, f"the {what} stream is truncated")


def inflate_gzip(path: Path, needed: int, chunk: int = 1 << 22) -> tuple[bytearray, int]:
    """The first ``needed`` decompressed bytes of a gzip file, its whole stream verified.

    One pass with ISA-L's inflater (python-isal; about twice zlib's speed) that checks every
    member's CRC-32 and length as it goes, so the voxels need no second decompression. Output
    past ``needed`` is decompressed in bounded pieces and discarded (a decompression bomb costs
    time, not memory). Returns (buffer, bytes filled); fewer than ``needed`` means the stream
    ended early. Raises ``ImageReadError`` on corrupt or truncated gzip data, with the words of
    :func:`verify_compressed_stream`.
    """
    buffer = bytearray(needed)
    filled = [0]  # read by the room callback: output stops at ``needed``, then pieces are discarded
    with memoryview(buffer) as view:
        for out in _inflated(path, 0, GZIP_WBITS, _inflate, lambda: needed - filled[0] or chunk, chunk):
            if filled[0] < needed:
                view[filled[0] : filled[0] + len(out)] = out
                filled[0] += len(out)
    return buffer, filled[0]


def compressed_payload(path: Path, suffix: str) -> tuple[int, int] | None:
    """(offset, wbits) of the compressed voxel stream inside a single-file image, if it has one.

    .nii.gz is gzip from byte 0; an NRRD with ``encoding: gzip`` holds a gzip stream after its
    header's blank line; a MetaImage with ``CompressedData = True`` a zlib stream after
    ``ElementDataFile = LOCAL``.
    """
    if suffix == ".nii.gz":
        return 0, GZIP_WBITS
    if suffix not in (".nrrd", ".mha"):
        return None
    with open(path, "rb") as fh:
        raw = fh.read(_HEADER_PROBE_BYTES)
    if suffix == ".nrrd":
        end = raw.find(b"\n\n")
        header = raw[: max(end, 0)].lower()
        if end < 0 or not re.search(rb"^encoding:\s*(gzip|gz)\s*$", header, re.M):
            return None
        return end + 2, GZIP_WBITS
    marker = re.search(rb"^ElementDataFile\s*=\s*LOCAL\s*?\r?\n", raw, re.M)
    if marker is None or not re.search(rb"^CompressedData\s*=\s*True\s*$", raw[: marker.start()], re.M | re.I):
        return None
    return marker.end(), ZLIB_WBITS


class StreamVerifier:
    """Runs :func:`verify_compressed_stream` in a thread beside the decoder (zlib and ITK both
    release the GIL, so on two cores the check adds almost nothing to the read time)."""

    def __init__(self, path: Path, offset: int, wbits: int) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(path, offset, wbits), daemon=True, name="sammed-stream-check"
        )
        self._thread.start()

    def _run(self, path: Path, offset: int, wbits: int) -> None:
        try:
            verify_compressed_stream(path, offset, wbits)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc

    def result(self) -> None:
        """Wait for the check; raise what it found."""
        self._thread.join()
        if self._error is not None:
            raise self._error


def path_is_inside(child: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``child`` resolves (symlinks followed) to a path under ``folder``."""
    try:
        Path(child).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True
