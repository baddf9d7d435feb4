"""The OpenAPI schema matches the server's behaviour.

A scenario calls every operation (successes and refusals); each reply is checked against the
schema that /openapi.json publishes: the path and method exist, the status code is declared,
the content type is declared, and JSON bodies validate against the declared JSON Schema. The
scenario must also cover every operation in the schema, so the schema lists nothing that is
not exercised here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient

from sammed.data import SAMPLE_CT
from sammed.io import read_image, write_mask
from sammed.server import ServerConfig, create_app
from server_fixtures import tiny_checkpoint


class RecordingClient(TestClient):
    """TestClient that keeps every (method, path, response) it sees."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = []

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        self.log.append((method.upper(), response.request.url.path, response))
        return response


def find_operation(schema: dict, method: str, path: str):
    for template, operations in schema["paths"].items():
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return template, operations[method.lower()]
    return None, None


def check_reply(schema: dict, method: str, path: str, response) -> tuple[str, str]:
    template, operation = find_operation(schema, method, path)
    assert operation is not None, f"{method} {path} is not in the schema"
    declared = operation["responses"]
    code = str(response.status_code)
    assert code in declared, f"{method} {template} answered {code}, schema declares {sorted(declared)}"
    content_type = response.headers.get("content-type", "").split(";")[0]
    content = declared[code].get("content", {})
    if response.status_code == 204:
        assert not response.content
    else:
        assert content_type in content, f"{method} {template} {code}: {content_type} not in {sorted(content)}"
    body_schema = content.get(content_type, {}).get("schema")
    if content_type == "application/json" and body_schema and method.upper() != "HEAD":  # HEAD replies carry no body
        jsonschema.validate(response.json(), {**body_schema, "components": schema["components"]})
    return template, method.lower()


@pytest.fixture()
def client(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(SAMPLE_CT, root / "ct.nii.gz")
    ct = read_image(SAMPLE_CT)
    seg = np.zeros(ct.shape, dtype=np.uint8)
    seg[75:95, 50:66, 15:25] = 3
    write_mask(seg, ct, root / "seg.nii.gz")
    config = ServerConfig(model="sam-med3d-tiny", checkpoint=tiny_checkpoint(tmp_path / "tiny.pth"), data_root=root)
    with RecordingClient(create_app(config), base_url="http://127.0.0.1") as c:
        c.root = root
        yield c


def test_every_reply_matches_the_published_schema(client):
    schema = client.get("/openapi.json").json()
    client.log.clear()
    root = client.root

    client.get("/healthz")
    client.get("/api/info")
    client.get("/api/files")
    client.get("/api/files", params={"folder": "../"})
    client.post("/api/sessions", data={"path": "nothing.nii.gz"})
    client.post("/api/sessions", data={"path": "../x"})
    body = client.post("/api/sessions", data={"path": "ct.nii.gz"}).json()
    key, url = {"X-Session-Key": body["session_key"]}, f"/api/sessions/{body['session_id']}"
    client.get(url, headers=key)
    client.get(url)
    client.get("/api/sessions/unknown", headers=key)
    client.get(f"{url}/image", headers=key)
    client.post(f"{url}/points", json={"position": [84, 58, 20]}, headers=key)
    client.post(f"{url}/points", json={"position": [84, 58]}, headers=key)
    client.post(f"{url}/points", json={"position": [999, 0, 0]}, headers=key)
    client.post(f"{url}/points", json={"position": [80, 58, 20], "positive": False, "extra": 1}, headers=key)
    client.post(f"{url}/boxes", json={"corner_a": [70, 50, 15], "corner_b": [90, 66, 25], "object_id": 2}, headers=key)
    client.post(f"{url}/scribbles", json={"voxels": [[80, 56, 20], [86, 58, 20]], "positive": True}, headers=key)
    client.post(f"{url}/scribbles", json={"voxels": [[800, 56, 20]], "positive": True}, headers=key)
    client.post(f"{url}/lassos", json={"polygon": [[80, 52], [90, 52], [85, 62]], "axis": "k", "index": 20, "positive": False}, headers=key)
    client.post(f"{url}/lassos", json={"polygon": [[80, 52], [90, 52]], "axis": "k", "index": 20, "positive": False}, headers=key)
    client.post(f"{url}/initial-mask", data={"path": "seg.nii.gz", "label": "3"}, headers=key)
    client.post(f"{url}/initial-mask", files={"file": ("seg.nii.gz", (root / "seg.nii.gz").read_bytes())}, data={"object_id": "1"}, headers=key)
    client.post(f"{url}/initial-mask", data={"path": "../seg.nii.gz"}, headers=key)
    client.post(f"{url}/objects", headers=key)
    client.put(f"{url}/objects/1", json={"name": "liver"}, headers=key)
    client.put(f"{url}/objects/9", json={"name": "liver"}, headers=key)
    client.post(f"{url}/undo", headers=key)
    client.post(f"{url}/redo", headers=key)
    client.post(f"{url}/redo", headers=key)
    client.post(f"{url}/reset", json={"object_id": 2}, headers=key)
    client.get(f"{url}/labels", headers=key)
    client.get(f"{url}/labels", params={"offset": "0,0,0", "shape": "5,5,5"}, headers=key)
    client.get(f"{url}/labels", params={"offset": "0,0,0", "shape": "500,5,5"}, headers=key)
    client.get(f"{url}/mask", headers=key)
    client.get(f"{url}/mask", params={"object_id": 1}, headers=key)
    client.post(f"{url}/save", json={}, headers=key)
    client.post(f"{url}/save", json={}, headers=key)
    client.post(f"{url}/save", json={"filename": "a/b.nii.gz"}, headers=key)
    client.delete(url, headers=key)
    client.delete(url, headers=key)

    client.get("/info/")
    with open(SAMPLE_CT, "rb") as fh:
        sid = client.put("/session/", files=[("files", ("ct.nii.gz", fh))]).json()["session_id"]
    client.put("/session/", files=[("files", ("x.txt", b"not an image"))])
    client.get(f"/session/{sid}")
    client.get(f"/session/{sid}", params={"image": "true"})
    params = {"params": json.dumps({"foreground": [[84, 58, 20]], "background": []})}
    for output in ("image", "json", "all"):
        client.post("/infer/sam-med3d-tiny", params={"session_id": sid, "output": output}, data=params)
    client.post("/infer/sam-med3d-tiny", params={"image": "ct.nii.gz"}, data=params)
    client.post("/infer/sam-med3d-tiny", params={"session_id": sid}, data={"params": "not json"})
    client.post("/infer/unknown", params={"session_id": sid}, data=params)
    client.delete(f"/session/{sid}")
    client.get(f"/session/{sid}")

    client.get("/auth/")
    client.post("/auth/token", data={"username": "u", "password": "p"})
    client.get("/auth/token/valid")
    client.get("/train/")
    client.get("/datastore/")
    client.get("/datastore/", params={"output": "all"})
    client.get("/datastore/", params={"output": "train"})
    client.get("/datastore/image", params={"image": "ct"})
    client.get("/datastore/image", params={"image": "../x"})
    client.get("/datastore/label", params={"label": "ct", "tag": "final"})
    with open(SAMPLE_CT, "rb") as fh:
        client.put("/datastore/label", params={"image": "ct"}, files={"label": ("l.nii.gz", fh)}, data={"params": "{}"})
    client.put("/datastore/label", params={"image": "ct"}, files={"label": ("l.txt", b"x")})
    client.get("/datastore/label", params={"label": "ct", "tag": "final"})
    client.head("/datastore/image", params={"image": "ct"})
    client.head("/datastore/label", params={"image": "ct", "tag": "original"})
    with open(SAMPLE_CT, "rb") as fh:
        client.put("/datastore/image", params={"image": "ct"}, files={"file": ("ct.nii.gz", fh)})  # the same image: kept
    client.put("/datastore/image", params={"image": "../x"}, files={"file": ("x.nii.gz", b"x")})
    client.put("/datastore/image", params={"image": "ct"}, files={"file": ("x.txt", b"x")})
    client.post("/activelearning/first", json={})
    client.post("/activelearning/random", json={})
    client.post("/activelearning/other", json={})
    client.post("/infer/sam-med3d-tiny", params={"image": "ct", "output": "dicom_seg"}, data=params)

    covered = {check_reply(schema, method, path, response) for method, path, response in client.log}
    published = {(path, method) for path, operations in schema["paths"].items() for method in operations}
    assert published - covered == set(), "operations in the schema that the scenario never called"
    statuses = {response.status_code for _, _, response in client.log}
    assert {200, 201, 204, 400, 403, 404, 409, 422} <= statuses


def test_session_endpoints_the_readme_names_exist(client):
    """The README's 'METHOD /api/sessions/{id}/...' lines name operations the server really has."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    stated = set(re.findall(r"(GET|POST|PUT|DELETE) (/api/sessions/\{id\}[\w/{}-]*)", readme))
    assert {("POST", "/api/sessions/{id}/scribbles"), ("POST", "/api/sessions/{id}/lassos")} <= stated
    schema = client.get("/openapi.json").json()
    for method, path in stated:
        template = path.replace("{id}", "{session_id}")
        assert method.lower() in schema["paths"].get(template, {}), f"README names {method} {path}, the server has no such operation"
