"""Atomic writes: whole files or none, the mode an ordinary open gives, and no umask juggling per write."""

from __future__ import annotations

import os
import stat

import pytest

from sammed.io import atomic
from sammed.io.atomic import atomic_path, write_bytes_atomic


def test_written_file_gets_the_ordinary_mode_without_touching_the_umask(tmp_path, monkeypatch):
    current = os.umask(0o022)
    os.umask(current)
    assert atomic._UMASK == current

    def refuse(_mask):
        raise AssertionError("os.umask called during a write: it briefly changes the mode of other threads' files")

    monkeypatch.setattr(os, "umask", refuse)
    target = write_bytes_atomic(tmp_path / "out.nii.gz", b"data")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~current
    assert target.read_bytes() == b"data"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "label.seg.nrrd"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            assert temporary.name.startswith(".label.tmp-") and temporary.name.endswith(".seg.nrrd")
            temporary.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["label.seg.nrrd"]
