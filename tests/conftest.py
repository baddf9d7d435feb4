"""Shared fixtures. Real data lives in ../shared (next to the repository) and is read in place."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _no_weight_downloads(tmp_path_factory):
    """No test downloads weights by accident: an empty $SAMMED_HOME and SAMMED_OFFLINE=1.

    The download tests (test_weights_cache.py) undo this and serve files on 127.0.0.1.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMMED_HOME", str(tmp_path_factory.mktemp("sammed_home")))
        patch.setenv("SAMMED_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder beside the repository; tests needing it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    """shared/data: the real medical test images (see its README.md)."""
    path = shared_dir / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, shared_dir: Path) -> Path:
    """The tiny SAM-Med3D fixture weights saved in the official checkpoint layout."""
    from support import save_fixture_checkpoint

    return save_fixture_checkpoint("tiny", tmp_path_factory.mktemp("weights") / "tiny.pth")
