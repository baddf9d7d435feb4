"""Atomic file writes: the one way sammed puts a file in place.

A writer fills a temporary file beside the target (same folder, so the final rename never
crosses file systems; same suffix, so writers that pick the format from the name, such as
SimpleITK, Matplotlib and NumPy, still do), the data is flushed to disk, and one
``os.replace`` makes it appear whole. An exception at any point removes the temporary file
and leaves an existing target untouched. The file gets the mode an ordinary ``open`` would
give (``mkstemp`` alone makes it 0600).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _process_umask() -> int:
    """The umask, read once at import: ``os.umask`` can only read it by setting it, and a
    file another thread (the server's) made in that moment would get mode 0666."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _process_umask()


def _full_suffix(name: str) -> str:
    for double in (".nii.gz", ".seg.nrrd", ".tar.gz"):
        if name.lower().endswith(double):
            return name[-len(double):]
    return Path(name).suffix


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` in one step.

    ``suffix`` defaults to the target's (``.nii.gz`` counted whole). The target's folder is
    created if needed. ``exclusive`` never replaces: the finished file is hard-linked to
    ``target``, which fails with ``FileExistsError`` if the name exists, even when another
    process made it after the caller checked (a rename would silently replace that file).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = _full_suffix(target.name) if suffix is None else suffix
    stem = target.name[: len(target.name) - len(suffix)] if target.name.endswith(suffix) else target.name
    fd, name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=target.parent)  # hidden, same format
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)
        _fsync(temporary)
        if exclusive:
            _link_new(temporary, target)
        else:
            os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _link_new(temporary: Path, target: Path) -> None:
    """Give ``temporary`` the name ``target`` only if no such name exists."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a small race remains)
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        os.rename(temporary, target)
        return
    temporary.unlink()


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return Path(target)
