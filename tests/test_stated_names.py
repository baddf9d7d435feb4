"""Names other issues promised: import paths and packaging metadata that users and tools rely on."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_predictor2d_is_importable_from_the_inference_package() -> None:
    from sammed.inference import Predictor2D
    from sammed.inference.predictor2d import Predictor2D as Defined

    assert Predictor2D is Defined


def test_licence_is_an_spdx_string() -> None:
    """A table ({text = ...}) makes setuptools >= 77 print a deprecation warning on every install."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "tqdm" in " ".join(project["dependencies"])  # pooch's progress bar needs it
