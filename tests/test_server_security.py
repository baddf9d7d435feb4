"""Security of the server: token, host binding, data-root confinement, upload limit, session isolation, CORS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sammed.cli import main
from sammed.data import SAMPLE_CT
from sammed.server import ServerConfig, create_app
from sammed.server.config import ServerConfigError, is_loopback
from server_fixtures import checkpoint  # noqa: F401  (fixture)

TOKEN = "a-long-enough-test-token-123"


@pytest.fixture()
def root(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE_CT, data / "ct.nii.gz")
    outside = tmp_path / "secret"
    outside.mkdir()
    shutil.copy(SAMPLE_CT, outside / "private.nii.gz")
    os.symlink(outside / "private.nii.gz", data / "link_out.nii.gz")
    os.symlink(outside, data / "dir_out")
    os.symlink(data / "ct.nii.gz", data / "link_in.nii.gz")
    return data


def make_client(checkpoint, root, **overrides) -> TestClient:
    config = ServerConfig(model="sam-med3d-tiny", checkpoint=checkpoint, data_root=root, **overrides)
    return TestClient(create_app(config), base_url="http://127.0.0.1")


# ---------------------------------------------------------------------------- host binding and token


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "localhost", "::1"])
def test_loopback_hosts_need_no_token(host):
    assert is_loopback(host)
    ServerConfig(host=host, allow_random_weights=True).validated()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_other_hosts_require_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(ServerConfigError, match="--token"):
        ServerConfig(host=host, allow_random_weights=True).validated()
    ServerConfig(host=host, token=TOKEN, allow_random_weights=True).validated()


def test_cli_refuses_public_host_without_token_and_short_tokens(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--allow-random-weights"]) == 2
    assert "give --token" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--token", "short", "--allow-random-weights"]) == 2
    assert "at least 16" in capsys.readouterr().err
    assert main(["serve", "--model", "sam-med3d-tiny"]) == 2  # no checkpoint, no --allow-random-weights
    assert "--checkpoint is required" in capsys.readouterr().err


def test_every_request_needs_the_token(checkpoint, root):
    with make_client(checkpoint, root, host="0.0.0.0", token=TOKEN) as client:
        for path in ["/", "/static/viewer.js", "/api/info", "/info/", "/healthz", "/openapi.json", "/docs"]:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        assert client.post("/api/sessions", data={"path": "ct.nii.gz"}).status_code == 401
        assert client.put("/session/", files={"files": ("a.nii.gz", b"x")}).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/info", headers=good).status_code == 200
        assert client.post("/api/sessions", data={"path": "ct.nii.gz"}, headers=good).status_code == 201
        # The browser route: /?token= sets a strict HttpOnly cookie, then the cookie alone is enough.
        login = client.get("/", params={"token": TOKEN}, follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get("/api/info").status_code == 200  # TestClient kept the cookie
        client.cookies.clear()
        assert client.get("/", params={"token": "nope-nope-nope-nope"}, follow_redirects=False).status_code == 401


def test_loopback_server_rejects_foreign_host_headers(checkpoint, root):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not reach a token-less server."""
    with make_client(checkpoint, root) as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"Host": "evil.example"}).status_code == 400


# ---------------------------------------------------------------------------- data root


@pytest.mark.parametrize(
    "path",
    ["../secret/private.nii.gz", "/etc/passwd", "sub/../../secret/private.nii.gz", "link_out.nii.gz", "dir_out/private.nii.gz"],
)
def test_paths_cannot_leave_the_data_root(checkpoint, root, path):
    with make_client(checkpoint, root) as client:
        reply = client.post("/api/sessions", data={"path": path})
        assert reply.status_code == 403, reply.text
        infer = client.post("/infer/sam-med3d-tiny", params={"image": path}, data={"params": '{"foreground": [[1, 1, 1]]}'})
        assert infer.status_code == 403
        assert client.get("/api/files", params={"folder": path.rsplit("/", 1)[0] if "/" in path else path}).status_code in (
            400,
            403,
        )


def test_links_inside_the_root_work_and_escaping_links_are_hidden(checkpoint, root):
    with make_client(checkpoint, root) as client:
        assert client.post("/api/sessions", data={"path": "link_in.nii.gz"}).status_code == 201
        listed = {e["path"] for e in client.get("/api/files").json()["entries"]}
        assert listed == {"ct.nii.gz", "link_in.nii.gz"}
        assert client.post("/api/sessions", data={"path": "missing.nii.gz"}).status_code == 404


def test_no_data_root_means_no_file_access(checkpoint):
    config = ServerConfig(model="sam-med3d-tiny", checkpoint=checkpoint)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        assert client.post("/api/sessions", data={"path": "ct.nii.gz"}).status_code == 404
        assert client.get("/api/files").status_code == 404


def test_save_refuses_a_symlink_target(checkpoint, root, tmp_path):
    os.symlink(tmp_path / "secret" / "written.nii.gz", root / "trap_seg.nii.gz")
    with make_client(checkpoint, root) as client:
        body = client.post("/api/sessions", data={"path": "ct.nii.gz"}).json()
        key, url = {"X-Session-Key": body["session_key"]}, f"/api/sessions/{body['session_id']}"
        client.post(f"{url}/points", json={"position": [84, 58, 20]}, headers=key)
        reply = client.post(f"{url}/save", json={"filename": "trap_seg.nii.gz", "overwrite": True}, headers=key)
        assert reply.status_code == 403
        assert not (tmp_path / "secret" / "written.nii.gz").exists()


# ---------------------------------------------------------------------------- uploads


def test_uploads_are_placed_whole_and_never_over_an_existing_file(tmp_path):
    from sammed.server.datastore import place_new

    staged = tmp_path / "staged.nii.gz"
    staged.write_bytes(b"new image bytes")
    store = tmp_path / "store"
    store.mkdir()
    (store / "taken.nii.gz").write_bytes(b"someone else's image")
    os.symlink(tmp_path / "nowhere", store / "dangling.nii.gz")
    assert place_new(staged, store / "taken.nii.gz") is False
    assert place_new(staged, store / "dangling.nii.gz") is False  # a link's name is taken, even a dangling one
    assert not (tmp_path / "nowhere").exists()
    assert place_new(staged, store / "fresh.nii.gz") is True
    assert (store / "fresh.nii.gz").read_bytes() == b"new image bytes"
    assert (store / "taken.nii.gz").read_bytes() == b"someone else's image"
    assert sorted(p.name for p in store.iterdir()) == ["dangling.nii.gz", "fresh.nii.gz", "taken.nii.gz"]  # no temporaries
    assert staged.read_bytes() == b"new image bytes"


def test_oversize_uploads_are_refused(checkpoint, root):
    limit = 100_000
    assert SAMPLE_CT.stat().st_size > limit
    with make_client(checkpoint, root, max_upload_bytes=limit) as client:
        with open(SAMPLE_CT, "rb") as fh:
            reply = client.post("/api/sessions", files={"file": ("ct.nii.gz", fh)})
        assert reply.status_code == 413 and "upload limit" in reply.json()["detail"]

        body = (
            b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="ct.nii.gz"\r\n\r\n'
            + SAMPLE_CT.read_bytes()
            + b"\r\n--xyz--\r\n"
        )

        def chunks():  # no Content-Length: the limit must hold while streaming
            for start in range(0, len(body), 32_768):
                yield body[start : start + 32_768]

        streamed = client.put("/session/", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert streamed.status_code == 413
        assert client.get("/api/info").json()["sessions"] == 0
        assert client.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------- sessions


def test_sessions_are_isolated(checkpoint, root):
    with make_client(checkpoint, root) as client:
        a = client.post("/api/sessions", data={"path": "ct.nii.gz"}).json()
        b = client.post("/api/sessions", data={"path": "ct.nii.gz"}).json()
        a_key = {"X-Session-Key": a["session_key"]}
        b_url = f"/api/sessions/{b['session_id']}"
        for method, suffix in [("GET", ""), ("GET", "/image"), ("GET", "/labels"), ("GET", "/mask"), ("POST", "/undo")]:
            assert client.request(method, b_url + suffix, headers=a_key).status_code == 403, suffix
            assert client.request(method, b_url + suffix).status_code == 403, suffix
        assert client.post(f"{b_url}/points", json={"position": [84, 58, 20]}, headers=a_key).status_code == 403
        assert client.delete(b_url, headers=a_key).status_code == 403
        assert client.get(b_url, headers={"X-Session-Key": b["session_key"]}).status_code == 200
        assert client.get("/api/sessions/not-a-session", headers=a_key).status_code == 404
        assert a["session_id"] != b["session_id"] and len(a["session_id"]) >= 20


# ---------------------------------------------------------------------------- CORS


def test_cors_is_closed_by_default_and_opens_only_for_named_origins(checkpoint, root):
    origin = {"Origin": "http://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-Session-Key"}
    with make_client(checkpoint, root) as client:
        assert "access-control-allow-origin" not in client.get("/api/info", headers=origin).headers
        reply = client.options("/api/sessions", headers=preflight)
        assert reply.status_code >= 400 and "access-control-allow-origin" not in reply.headers
    with make_client(checkpoint, root, allowed_origins=("http://viewer.example",)) as client:
        assert "access-control-allow-origin" not in client.get("/api/info", headers=origin).headers
        ok = client.get("/api/info", headers={"Origin": "http://viewer.example"})
        assert ok.headers["access-control-allow-origin"] == "http://viewer.example"
