"""Where outputs may go: never onto an input, and a failed run leaves no new folder behind.

A mask written over the scan it came from destroys the user's data irrecoverably. Paths
are compared after resolving links, and by inode, so ``./ct.nii.gz``, a symlink to it and
a hard link to it are all the same file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sammed.errors import ImageWriteError, SammedError
from sammed.io.file_checks import detached_data_files


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inputs_expanded(inputs: Iterable[str | os.PathLike | None]) -> list[Path]:
    """The given inputs plus the data files their headers name (MetaImage, NRRD)."""
    paths: list[Path] = []
    for item in inputs:
        if item is None:
            continue
        path = Path(item).expanduser()
        paths.append(path)
        if path.is_file():
            paths.extend(detached_data_files(path))
    return paths


def refuse_output_on_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise ``ImageWriteError`` when ``output`` is, or lies inside, one of ``inputs``.

    Called before any work, so a refused command has read nothing heavy and written nothing.
    A folder input (a DICOM series) also refuses outputs inside it: a file added there
    becomes part of what the next run reads.
    """
    out = Path(output).expanduser()
    out_resolved = out.resolve()
    for path in _inputs_expanded(inputs):
        resolved = path.resolve()
        if path.is_dir():
            if out_resolved == resolved or resolved in out_resolved.parents:
                raise ImageWriteError(f"refusing to write '{out}': it is inside the input folder '{path}'")
        elif out_resolved == resolved or _same_file(out, path):
            raise ImageWriteError(f"refusing to write '{out}': it is the input file '{path}' (choose another --out)")


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield ``path`` as a folder; if this call created it and the body fails, remove it.

    A folder that already existed (a resumed run) is left as it was: its earlier content is
    the user's. A path that names a file is refused before anything happens.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SammedError(f"--out {folder} exists and is not a folder")
    created = _first_missing(folder)  # the topmost folder this call creates, if any
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".sammed-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise SammedError(f"cannot write into folder '{folder}': {exc.strerror or exc}") from None
    try:
        yield folder
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _first_missing(folder: Path) -> Path | None:
    missing = None
    for candidate in (folder, *folder.absolute().parents):
        if candidate.exists():
            break
        missing = candidate
    return missing
