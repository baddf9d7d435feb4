"""Weights by name: downloads from a loopback HTTP server into a temporary $SAMMED_HOME.

No test reaches the network: the registry entries used here point at 127.0.0.1. The server can
send a file whole, cut it short (Content-Length promises more), send other bytes, or dribble it
slowly (to make two downloads overlap); it counts the GETs so tests can prove a cache hit.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sammed.cli import build_parser, main
from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.errors import CheckpointError
from sammed.models import REGISTRY, build_model, get_model_spec
from sammed.models.weights import (
    MANIFEST,
    OfflineError,
    WeightsError,
    cached_weights,
    download_weights,
    model_dir,
    resolve_weights,
)

NAME = "loopback-tiny"  # a temporary registry entry: sam-med3d-tiny's architecture, served locally
FILE = "loopback_tiny.pth"
POINT = ",".join(map(str, SAMPLE_CT_LIVER_VOXEL))


class Server:
    """Serves ``payload`` under /good, /short (truncated), /corrupt, /slow; 404 elsewhere."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.gets: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _headers(self, body: bytes, length: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()

            def do_HEAD(self) -> None:
                route = self.path.split("/")[1]
                if route not in ("good", "short", "corrupt", "slow"):
                    self.send_error(404)
                    return
                self._headers(outer.payload)

            def do_GET(self) -> None:
                outer.gets.append(self.path)
                route = self.path.split("/")[1]
                body = outer.payload
                if route == "good":
                    self._headers(body)
                    self.wfile.write(body)
                elif route == "short":  # the connection drops half-way
                    self._headers(body)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif route == "corrupt":
                    damaged = bytearray(body)
                    damaged[len(damaged) // 3] ^= 0xFF
                    self._headers(bytes(damaged))
                    self.wfile.write(bytes(damaged))
                elif route == "slow":
                    self._headers(body)
                    for start in range(0, len(body), len(body) // 10 + 1):
                        self.wfile.write(body[start : start + len(body) // 10 + 1])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.send_error(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{route}/{FILE}"

    def file_gets(self) -> int:
        return sum(path.endswith(FILE) for path in self.gets)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """sam-med3d-tiny weights in the official layout (seeded, so runs are comparable)."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / FILE
    torch.save({"model_state_dict": build_model("sam-med3d-tiny").state_dict(), "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def server(weights_file):
    served = Server(weights_file.read_bytes())
    served.thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """An empty $SAMMED_HOME with downloads allowed (the suite's conftest turns them off)."""
    monkeypatch.setenv("SAMMED_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SAMMED_OFFLINE", raising=False)
    return tmp_path / "home"


@pytest.fixture()
def entry(server, weights_file, monkeypatch):
    """Register ``loopback-tiny``: downloadable from the loopback server, sha256 published."""
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    spec = dataclasses.replace(
        get_model_spec("sam-med3d-tiny"), name=NAME, checkpoint_file=FILE, source_url=server.url("good"),
        download_url=server.url("good"), license="CC-BY-4.0 (test)", sha256=digest,
    )
    monkeypatch.setitem(REGISTRY, NAME, spec)
    server.gets.clear()
    return spec


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def leftovers(spec) -> list[str]:
    """Everything in the model's cache folder but the lock file."""
    folder = model_dir(spec)
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.is_dir() else []


def test_download_shows_progress_verifies_and_is_reused(capsys, home, entry, server, weights_file) -> None:
    code, out, err = run_cli(capsys, "models", "download", NAME)
    assert code == 0, err
    path, digest = out.split()
    assert Path(path) == home / "weights" / NAME / FILE and digest == entry.sha256
    assert Path(path).read_bytes() == weights_file.read_bytes()
    size_mb = f"{weights_file.stat().st_size / 1e6:.1f} MB"
    assert f"downloading {NAME}: {FILE} ({size_mb}, licence CC-BY-4.0 (test)) from {server.url('good')}" in err
    assert "100%" in err  # pooch's tqdm progress bar
    manifest = json.loads((home / "weights" / NAME / MANIFEST).read_text())
    assert manifest["sha256"] == entry.sha256 and manifest["verified"] is True
    assert manifest["size"] == weights_file.stat().st_size and manifest["url"] == server.url("good")
    assert leftovers(entry) == sorted([FILE, MANIFEST])

    code, out, err = run_cli(capsys, "models", "download", NAME)  # already cached: no transfer
    assert code == 0 and out.split() == [path, digest] and "downloading" not in err
    assert server.file_gets() == 1

    code, out, _ = run_cli(capsys, "models", "list")
    assert any(line.split()[:4] == [NAME, "3D", "sam-med3d", "cached"] for line in out.splitlines())
    assert any(line.split()[:4] == ["sammed-demo-3d", "3D", "sam-med3d", "bundled"] for line in out.splitlines())
    code, out, _ = run_cli(capsys, "models", "info", NAME)
    rows = {line[:12].strip(): line[12:].strip() for line in out.splitlines()}
    assert rows["local copy"] == path
    assert rows["size"].startswith(f"{weights_file.stat().st_size} bytes") and rows["sha256"] == digest


def test_unpublished_hash_is_recorded_and_printed(capsys, home, server, weights_file) -> None:
    """sam-med3d-tiny has no released file: --url caches one, and its digest is recorded."""
    code, out, err = run_cli(capsys, "models", "download", "sam-med3d-tiny", "--url", server.url("good"))
    assert code == 0, err
    path, digest = out.split()
    assert digest == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert Path(path).name == FILE  # the URL's file name when the registry has none
    assert f"no published sha256 for sam-med3d-tiny: recorded {digest}" in err
    manifest = json.loads((Path(path).parent / MANIFEST).read_text())
    assert manifest["sha256"] == digest and manifest["verified"] is False
    code, out, _ = run_cli(capsys, "models", "info", "sam-med3d-tiny")
    assert f"{digest} (recorded at download; no published hash)" in out


def test_corrupt_file_is_refused_and_nothing_is_kept(capsys, home, entry, server) -> None:
    code, _, err = run_cli(capsys, "models", "download", NAME, "--url", server.url("corrupt"))
    line = error_line(err)
    assert code == 2 and f"expected {entry.sha256}" in line and "nothing was kept" in line
    assert leftovers(entry) == [] and cached_weights(entry) is None
    # --sha256 protects a file the registry has no hash for, in the same way
    code, _, err = run_cli(capsys, "models", "download", "sam-med3d-tiny", "--url", server.url("good"),
                           "--sha256", "0" * 64)
    assert code == 2 and "refused, nothing was kept" in error_line(err)
    assert leftovers(get_model_spec("sam-med3d-tiny")) == []


def test_truncated_download_leaves_nothing_then_a_clean_retry(capsys, home, entry, server, weights_file) -> None:
    code, _, err = run_cli(capsys, "models", "download", NAME, "--url", server.url("short"))
    assert code == 2 and "cannot download" in error_line(err)
    assert leftovers(entry) == []
    code, out, err = run_cli(capsys, "models", "download", NAME)
    assert code == 0, err
    assert Path(out.split()[0]).read_bytes() == weights_file.read_bytes()


def test_interrupted_download_then_a_clean_retry(home, entry, server, weights_file, monkeypatch) -> None:
    import pooch

    real_call = pooch.HTTPDownloader.__call__

    def interrupted(self, url, output_file, pooch_instance):
        Path(output_file).write_bytes(weights_file.read_bytes()[:1000])
        raise KeyboardInterrupt  # Ctrl+C half-way

    with monkeypatch.context() as patch:
        patch.setattr(pooch.HTTPDownloader, "__call__", interrupted)
        with pytest.raises(KeyboardInterrupt):
            download_weights(entry, progress=False)
    assert leftovers(entry) == []
    # A process killed outright leaves its temporary file; the next download removes it.
    stale = model_dir(entry) / f"{FILE}.abc123.part"
    stale.write_bytes(b"killed")
    assert pooch.HTTPDownloader.__call__ is real_call
    cached = download_weights(entry, progress=False)
    assert cached.verified and cached.path.read_bytes() == weights_file.read_bytes()
    assert leftovers(entry) == sorted([FILE, MANIFEST])


def test_two_downloads_at_once_transfer_the_file_once(home, entry, server, weights_file, monkeypatch) -> None:
    monkeypatch.setitem(REGISTRY, NAME, dataclasses.replace(entry, download_url=server.url("slow")))
    spec = get_model_spec(NAME)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(download_weights(spec, progress=False)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and results[0].path == results[1].path
    assert results[0].path.read_bytes() == weights_file.read_bytes()
    assert server.file_gets() == 1  # the second waited for the lock and found the cached file


def test_offline_refusal_names_the_command_and_the_url(capsys, home, entry, server, tmp_path, monkeypatch) -> None:
    out = tmp_path / "mask.nii.gz"
    code, _, err = run_cli(capsys, "segment", SAMPLE_CT, "--point", POINT, "--out", out, "--model", NAME, "--offline")
    line = error_line(err)
    assert code == 2 and f"'sammed models download {NAME}'" in line and server.url("good") in line
    monkeypatch.setenv("SAMMED_OFFLINE", "1")
    code, _, err = run_cli(capsys, "segment", SAMPLE_CT, "--point", POINT, "--out", out, "--model", NAME)
    assert code == 2 and f"'sammed models download {NAME}'" in error_line(err)
    with pytest.raises(OfflineError):
        build_model(NAME, pretrained=True)
    assert server.file_gets() == 0 and not out.exists() and leftovers(entry) == []


def test_segment_downloads_on_first_use_then_uses_the_cache(capsys, home, entry, server, weights_file, tmp_path) -> None:
    first, second, explicit = (tmp_path / f"{n}.nii.gz" for n in ("first", "second", "explicit"))
    code, _, err = run_cli(capsys, "segment", SAMPLE_CT, "--point", POINT, "--out", first, "--model", NAME)
    assert code == 0, err
    assert f"downloading {NAME}: {FILE}" in err and "licence CC-BY-4.0 (test)" in err
    code, _, err = run_cli(capsys, "segment", SAMPLE_CT, "--point", POINT, "--out", second, "--model", NAME)
    assert code == 0 and "downloading" not in err and f"{NAME} weights: {home / 'weights' / NAME / FILE}" in err
    assert server.file_gets() == 1
    code, _, err = run_cli(capsys, "segment", SAMPLE_CT, "--point", POINT, "--out", explicit,
                           "--model", "sam-med3d-tiny", "--checkpoint", weights_file)
    assert code == 0, err
    masks = [np.asarray(nib.load(p).dataobj) for p in (first, second, explicit)]
    assert masks[2].any()
    np.testing.assert_array_equal(masks[0], masks[2])
    np.testing.assert_array_equal(masks[1], masks[2])
    # the Python API resolves the same cached file
    loaded = build_model(NAME, pretrained=True).state_dict()
    saved = torch.load(weights_file, weights_only=True)["model_state_dict"]
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


@pytest.fixture()
def cached_tiny(capsys, home, server) -> Path:
    """sam-med3d-tiny put into the cache with 'sammed models download --url'."""
    code, out, err = run_cli(capsys, "models", "download", "sam-med3d-tiny", "--url", server.url("good"))
    assert code == 0, err
    server.gets.clear()
    return Path(out.split()[0])


def test_serve_uses_the_cached_file_by_name(cached_tiny, weights_file) -> None:
    from fastapi.testclient import TestClient

    from sammed.cli.serve import config_from_args
    from sammed.server import create_app
    from sammed.server.app import load_model

    config = config_from_args(build_parser().parse_args(["serve", "--model", "sam-med3d-tiny"]))
    assert config.checkpoint == cached_tiny
    saved = torch.load(weights_file, weights_only=True)["model_state_dict"]
    loaded = load_model(config).state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
    assert info["random_weights"] is False


def test_eval_uses_the_cached_file_by_name(capsys, cached_tiny, tmp_path) -> None:
    pytest.importorskip("monai")
    image = nib.load(SAMPLE_CT)
    label = np.zeros(image.shape, dtype=np.uint8)
    i, j, k = SAMPLE_CT_LIVER_VOXEL
    label[i - 8 : i + 8, j - 8 : j + 8, k - 4 : k + 4] = 1
    label_path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(label, image.affine), label_path)
    out = tmp_path / "report"
    code, _, err = run_cli(capsys, "eval", "--model", "sam-med3d-tiny", "--dataset", SAMPLE_CT, "--label", label_path,
                           "--protocol", "clicks-1", "--out", out, "--no-progress")
    assert code == 0, err
    assert f"sam-med3d-tiny weights: {cached_tiny}" in err
    text = (out / "results.json").read_text()
    assert hashlib.sha256(cached_tiny.read_bytes()).hexdigest() in text and cached_tiny.name in text


def test_bundled_model_by_name_and_its_hash(capsys, monkeypatch, tmp_path) -> None:
    demo = get_model_spec("sammed-demo-3d")
    assert resolve_weights(demo) == demo.bundled_path  # offline (conftest) and no cache needed
    build_model("sammed-demo-3d")  # no checkpoint argument
    from sammed.cli.common import resolve_checkpoint

    args = argparse.Namespace(checkpoint="sammed-demo-3d", offline=True)  # train --checkpoint NAME
    assert resolve_checkpoint(args, "sam-med3d-tiny") == demo.bundled_path
    monkeypatch.setitem(REGISTRY, demo.name, dataclasses.replace(demo, sha256="1" * 64))
    with pytest.raises(CheckpointError, match="do not match their sha256"):
        build_model("sammed-demo-3d")
    code, _, err = run_cli(capsys, "segment", SAMPLE_CT, "--point", POINT, "--out", tmp_path / "m.nii.gz",
                           "--model", "sammed-demo-3d")
    assert code == 2 and "do not match their sha256" in error_line(err)


def test_no_direct_download_and_bad_hash_argument(capsys, home) -> None:
    code, _, err = run_cli(capsys, "models", "download", "sam-med2d")
    assert code == 2 and "sammed models download sam-med2d --url URL" in error_line(err)
    code, _, err = run_cli(capsys, "models", "download", "sam-med3d-turbo", "--sha256", "abc")
    assert code == 2 and "64 hexadecimal digits" in error_line(err)
    with pytest.raises(WeightsError, match="has no released weights"):
        build_model("sam-med3d-tiny", pretrained=True)
