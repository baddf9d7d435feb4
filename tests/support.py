"""Helpers for tests: the shared parity-fixture weight generator and its recorded configs."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES_DIR = SHARED_DIR / "fixtures"
SAM3D_FIXTURES = FIXTURES_DIR / "sam_med3d"

# config -> (registry name, manifest, seed) as recorded in ../shared/fixtures/sam_med3d
SAM3D_FIXTURE_CONFIGS = {
    "tiny": ("sam-med3d-tiny", SAM3D_FIXTURES / "manifest_tiny.tsv", 4321),
    "turbo": ("sam-med3d-turbo", SAM3D_FIXTURES / "manifest_turbo.tsv", 1234),
}


@functools.lru_cache(maxsize=1)
def synth_weights():
    """Import ../shared/fixtures/synth_weights.py (the fixtures' weight-generation contract)."""
    spec = importlib.util.spec_from_file_location("synth_weights", FIXTURES_DIR / "synth_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixture_weights(config: str) -> dict[str, torch.Tensor]:
    """The deterministic SAM-Med3D weights the official outputs were recorded with."""
    _, manifest, seed = SAM3D_FIXTURE_CONFIGS[config]
    return synth_weights().make_state_dict(manifest, seed)


def save_fixture_checkpoint(config: str, path: Path) -> Path:
    """Write the fixture weights in the official file layout {'model_state_dict': ...}."""
    torch.save({"model_state_dict": fixture_weights(config)}, path)
    return path
