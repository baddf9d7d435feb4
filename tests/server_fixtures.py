"""Shared helpers of the server tests: a tiny SAM-Med3D checkpoint and a running server."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def tiny_checkpoint(path: Path) -> Path:
    """sam-med3d-tiny with the parity fixtures' synthetic weights (seed 4321), saved as a .pth file.

    Without the shared folder the weights are random (torch's init) but still a real checkpoint.
    """
    manifest = FIXTURES / "sam_med3d" / "manifest_tiny.tsv"
    if manifest.is_file():
        spec = importlib.util.spec_from_file_location("synth_weights", FIXTURES / "synth_weights.py")
        synth = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(synth)
        state = synth.make_state_dict(manifest, 4321)
    else:
        from sammed.models import build_model

        torch.manual_seed(4321)
        state = build_model("sam-med3d-tiny").state_dict()
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint file for the module's servers (import this fixture into a test module)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """uvicorn serving an app in a background thread, on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
