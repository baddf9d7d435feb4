"""The session API and the MONAI Label subset, through FastAPI's in-process client."""

from __future__ import annotations

import json
import shutil
import tempfile
from email import message_from_bytes
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.io import read_image, write_mask
from sammed.io.slicer_seg import write_slicer_seg
from sammed.server import ServerConfig, create_app
from server_fixtures import checkpoint  # noqa: F401  (fixture)

LIVER = list(SAMPLE_CT_LIVER_VOXEL)


@pytest.fixture()
def root(tmp_path) -> Path:
    folder = tmp_path / "data"
    (folder / "case1").mkdir(parents=True)
    shutil.copy(SAMPLE_CT, folder / "case1" / "ct.nii.gz")
    return folder


@pytest.fixture()
def client(checkpoint, root):
    app = create_app(ServerConfig(model="sam-med3d-tiny", checkpoint=checkpoint, data_root=root))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def open_session(client, path="case1/ct.nii.gz"):
    reply = client.post("/api/sessions", data={"path": path})
    assert reply.status_code == 201, reply.text
    body = reply.json()
    return body, {"X-Session-Key": body["session_key"]}, f"/api/sessions/{body['session_id']}"


def test_clicks_undo_redo_and_changed_region(client):
    body, key, url = open_session(client)
    assert body["shape"] == [122, 101, 30] and body["from_data_root"] == "case1/ct.nii.gz"
    first = client.post(f"{url}/points", json={"position": LIVER}, headers=key).json()
    assert first["applied"] and first["object_voxels"] > 0 and first["can_undo"]
    region = first["changed"]
    # The whole label map equals the changed region pasted at its offset (nothing outside changed).
    whole = client.get(f"{url}/labels", headers=key)
    labels = np.frombuffer(whole.content, dtype=whole.headers["X-Dtype"]).reshape(body["shape"], order="F")
    part = client.get(f"{url}/labels", params={"offset": ",".join(map(str, region["offset"])), "shape": ",".join(map(str, region["shape"]))}, headers=key)
    sub = np.frombuffer(part.content, dtype=part.headers["X-Dtype"]).reshape(region["shape"], order="F")
    window = tuple(slice(o, o + s) for o, s in zip(region["offset"], region["shape"]))
    np.testing.assert_array_equal(labels[window], sub)
    assert int((labels > 0).sum()) == first["object_voxels"] == int((sub > 0).sum())

    negative = client.post(f"{url}/points", json={"position": [70, 58, 20], "positive": False}, headers=key).json()
    state = client.get(url, headers=key).json()
    assert [c["positive"] for c in state["objects"][0]["clicks"]] == [True, False]
    undone = client.post(f"{url}/undo", headers=key).json()
    assert undone["applied"] and undone["object_voxels"] == first["object_voxels"] and undone["can_redo"]
    redone = client.post(f"{url}/redo", headers=key).json()
    assert redone["object_voxels"] == negative["object_voxels"]
    assert client.post(f"{url}/redo", headers=key).json()["applied"] is False


def test_world_points_boxes_and_objects(client):
    body, key, url = open_session(client)
    image = read_image(SAMPLE_CT)
    ras = image.index_to_world(LIVER, "RAS").tolist()
    client.post(f"{url}/points", json={"position": ras, "space": "world", "convention": "RAS"}, headers=key)
    (obj,) = client.get(url, headers=key).json()["objects"]
    np.testing.assert_allclose(obj["clicks"][0]["voxel"], LIVER, atol=1e-6)
    second = client.post(f"{url}/objects", headers=key).json()["object_id"]
    assert second == 2
    boxed = client.post(f"{url}/boxes", json={"corner_a": [40, 40, 10], "corner_b": [60, 60, 20]}, headers=key).json()
    assert boxed["object_id"] == 2
    state = client.get(url, headers=key).json()
    assert sorted(o["object_id"] for o in state["objects"]) == [1, 2] and state["objects"][1]["has_box"]
    labels = np.frombuffer(client.get(f"{url}/labels", headers=key).content, dtype=np.uint8)
    assert {1, 2} <= set(np.unique(labels).tolist())
    reset = client.post(f"{url}/reset", json={"object_id": 2}, headers=key).json()
    assert reset["object_voxels"] == 0 and reset["changed"] is not None
    outside = client.post(f"{url}/points", json={"position": [500, 0, 0]}, headers=key)
    assert outside.status_code == 400 and "outside the image" in outside.json()["detail"]


def label_map(body, key, url, client) -> np.ndarray:
    reply = client.get(f"{url}/labels", headers=key)
    return np.frombuffer(reply.content, dtype=reply.headers["X-Dtype"]).reshape(body["shape"], order="F")


def test_initial_mask_scribble_lasso_then_undo_all(client, root):
    body, key, url = open_session(client)
    image = read_image(SAMPLE_CT)
    seg = np.zeros(image.shape, dtype=np.uint8)
    seg[75:95, 50:66, 15:25] = 5  # around the liver click
    seg[30:40, 30:40, 5:10] = 2
    write_mask(seg, image, root / "case1" / "seg.nii.gz")

    seeded = client.post(f"{url}/initial-mask", data={"path": "case1/seg.nii.gz", "label": "5"}, headers=key)
    assert seeded.status_code == 200, seeded.text
    reply = seeded.json()
    assert reply["object_id"] == 1 and reply["object_voxels"] == int((seg == 5).sum()) and reply["can_undo"]
    np.testing.assert_array_equal(label_map(body, key, url, client), (seg == 5).astype(np.uint8))
    changed = reply["changed"]
    low, high = np.array(changed["offset"]), np.array(changed["offset"]) + changed["shape"]
    assert np.all(low <= [75, 50, 15]) and np.all(high >= [95, 66, 25])  # the viewer repaints this region

    cut = client.post(
        f"{url}/lassos",
        json={"polygon": [[78, 52], [90, 52], [90, 62], [78, 62]], "axis": "k", "index": 20, "positive": False},
        headers=key,
    )
    assert cut.status_code == 200, cut.text
    assert not label_map(body, key, url, client)[79:90, 53:62, 20].any()  # the filled polygon is cut out

    scribble = client.post(
        f"{url}/scribbles", json={"voxels": [[35, 35, 7], [38, 36, 7], [39, 39, 8]], "positive": True, "object_id": 2}, headers=key
    )
    assert scribble.status_code == 200, scribble.text
    assert scribble.json()["object_id"] == 2 and scribble.json()["active_object"] == 2
    state = client.get(url, headers=key).json()
    second = next(o for o in state["objects"] if o["object_id"] == 2)
    assert len(second["clicks"]) == 8 and all(c["positive"] for c in second["clicks"])  # 8 clicks along the stroke
    renamed = client.put(f"{url}/objects/2", json={"name": " kidney "}, headers=key)
    assert renamed.json() == {"object_id": 2, "name": "kidney"}
    assert [o["name"] for o in client.get(url, headers=key).json()["objects"]] == ["object 1", "kidney"]

    added = client.post(
        f"{url}/lassos", json={"polygon": [[10, 10], [20, 10], [15, 20]], "axis": "j", "index": 50, "positive": True}, headers=key
    )
    assert added.status_code == 200 and label_map(body, key, url, client)[15, 50, 14] == 2

    for _ in range(4):
        assert client.post(f"{url}/undo", headers=key).json()["applied"]
    state = client.get(url, headers=key).json()
    assert not state["can_undo"] and not label_map(body, key, url, client).any()


def test_initial_mask_upload_as_seg_nrrd_with_label(client):
    body, key, url = open_session(client)
    image = read_image(SAMPLE_CT)
    seg = np.zeros(image.shape, dtype=np.uint8)
    seg[40:50, 40:60, 10:14] = 3
    seg[60:70, 40:60, 10:14] = 4
    with tempfile.TemporaryDirectory() as tmp:
        path = write_slicer_seg(seg, image, Path(tmp) / "labels.seg.nrrd", names={3: "kidney", 4: "spleen"})
        content = path.read_bytes()
    reply = client.post(
        f"{url}/initial-mask", files={"file": ("labels.seg.nrrd", content)}, data={"label": "4", "object_id": "1"}, headers=key
    )
    assert reply.status_code == 200, reply.text
    np.testing.assert_array_equal(label_map(body, key, url, client), (seg == 4).astype(np.uint8))
    missing = client.post(f"{url}/initial-mask", files={"file": ("labels.seg.nrrd", content)}, data={"label": "9"}, headers=key)
    assert missing.status_code == 400 and "labels present: [3, 4]" in missing.json()["detail"]


def test_mask_download_and_save_next_to_image(client, root):
    body, key, url = open_session(client)
    client.post(f"{url}/points", json={"position": LIVER}, headers=key)
    download = client.get(f"{url}/mask", headers=key)
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    (root / "dl.nii.gz").write_bytes(download.content)
    mask = nib.load(root / "dl.nii.gz")
    np.testing.assert_allclose(mask.affine, nib.load(SAMPLE_CT).affine, atol=1e-4)
    saved = client.post(f"{url}/save", json={}, headers=key).json()
    assert saved == {"path": "case1/ct_seg.nii.gz", "voxels": int(np.asarray(mask.dataobj).astype(bool).sum())}
    np.testing.assert_array_equal(np.asarray(nib.load(root / saved["path"]).dataobj), np.asarray(mask.dataobj))
    again = client.post(f"{url}/save", json={}, headers=key)
    assert again.status_code == 409
    assert client.post(f"{url}/save", json={"overwrite": True}, headers=key).status_code == 200
    assert client.post(f"{url}/save", json={"filename": "ct.nii.gz", "overwrite": True}, headers=key).status_code == 409
    assert client.post(f"{url}/save", json={"filename": "../x.nii.gz"}, headers=key).status_code == 403
    assert client.post(f"{url}/save", json={"filename": "x.png"}, headers=key).status_code == 400
    image = client.get(f"{url}/image", headers=key)
    (root / "img.nii.gz").write_bytes(image.content)
    np.testing.assert_array_equal(np.asarray(nib.load(root / "img.nii.gz").dataobj), np.asarray(nib.load(SAMPLE_CT).dataobj))


def test_upload_session_and_close(client):
    with open(SAMPLE_CT, "rb") as fh:
        reply = client.post("/api/sessions", files={"file": ("../../evil name.nii.gz", fh, "application/gzip")})
    assert reply.status_code == 201
    body = reply.json()
    key, url = {"X-Session-Key": body["session_key"]}, f"/api/sessions/{body['session_id']}"
    assert body["from_data_root"] is None
    assert client.post(f"{url}/save", json={}, headers=key).status_code == 409  # no folder: download instead
    assert client.delete(url, headers=key).status_code == 204
    assert client.get(url, headers=key).status_code == 404
    bad = client.post("/api/sessions", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert bad.status_code == 400 and "notes.txt" in bad.json()["detail"] and "/tmp" not in bad.json()["detail"]
    both = client.post("/api/sessions", data={"path": "case1/ct.nii.gz"}, files={"file": ("a.nii.gz", b"x")})
    assert both.status_code == 400


def test_file_listing(client):
    assert client.get("/api/files").json() == {"folder": "", "entries": [{"path": "case1", "kind": "folder"}]}
    listing = client.get("/api/files", params={"folder": "case1"}).json()
    assert listing["entries"] == [{"path": "case1/ct.nii.gz", "kind": "image"}]


def test_monai_label_subset(client):
    info = client.get("/info/").json()
    assert info["models"]["sam-med3d-tiny"]["type"] == "deepgrow" and info["models"]["sam-med3d-tiny"]["dimension"] == 3
    with open(SAMPLE_CT, "rb") as fh:
        put = client.put("/session/", files=[("files", ("ct.nii.gz", fh, "application/octet-stream"))], data={"expiry": "600"})
    assert put.status_code == 200
    session_id = put.json()["session_id"]
    assert client.get(f"/session/{session_id}").json()["session_id"] == session_id
    params = json.dumps({"foreground": [LIVER], "background": [[60, 40, 20]], "label": "liver"})
    by_session = client.post("/infer/sam-med3d-tiny", params={"session_id": session_id, "output": "image"}, data={"params": params})
    assert by_session.status_code == 200 and by_session.headers["content-type"] == "application/gzip"
    by_path = client.post("/infer/sam-med3d-tiny", params={"image": "case1/ct.nii.gz", "output": "image"}, data={"params": params})
    assert by_path.content[:2] == b"\x1f\x8b"
    # The same clicks through the session API give the same mask.
    _, key, url = open_session(client)
    client.post(f"{url}/points", json={"position": LIVER}, headers=key)
    client.post(f"{url}/points", json={"position": [60, 40, 20], "positive": False}, headers=key)
    expected = np.frombuffer(client.get(f"{url}/labels", headers=key).content, dtype=np.uint8)
    for reply in (by_session, by_path):
        got = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(reply.content))
        np.testing.assert_array_equal(np.asarray(got.dataobj).ravel(order="F"), expected)
    as_json = client.post("/infer/sam-med3d-tiny", params={"session_id": session_id, "output": "json"}, data={"params": params})
    assert as_json.json()["voxels"] == int(expected.sum())
    everything = client.post("/infer/sam-med3d-tiny", params={"session_id": session_id, "output": "all"}, data={"params": params})
    message = message_from_bytes(b"Content-Type: " + everything.headers["content-type"].encode() + b"\r\n\r\n" + everything.content)
    parts = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) for part in message.get_payload()}
    assert json.loads(parts["params"])["voxels"] == int(expected.sum()) and parts["image"][:2] == b"\x1f\x8b"
    assert client.post("/infer/other-model", params={"session_id": session_id}, data={"params": params}).status_code == 404
    assert client.post("/infer/sam-med3d-tiny", params={"session_id": session_id}, data={"params": "{}"}).status_code == 400
    assert client.delete(f"/session/{session_id}").status_code == 200
    assert client.get(f"/session/{session_id}").status_code == 404


def test_session_limit_and_expiry(checkpoint, root):
    import time

    config = ServerConfig(model="sam-med3d-tiny", checkpoint=checkpoint, data_root=root, max_sessions=2, session_timeout_s=0.5)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        _, key, url = open_session(client)
        open_session(client)
        full = client.post("/api/sessions", data={"path": "case1/ct.nii.gz"})
        assert full.status_code == 503
        time.sleep(0.7)
        assert client.get(url, headers=key).status_code == 404  # idle past its expiry
        open_session(client)


def test_failing_model_call_does_not_take_the_server_down(client):
    _, key, url = open_session(client)
    model = client.app.state.sammed.worker.model
    original = model.decode

    def broken(*args, **kwargs):
        raise RuntimeError("simulated model failure")

    model.decode = broken
    try:
        quiet = TestClient(client.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
        failed = quiet.post(f"{url}/points", json={"position": LIVER}, headers=key)
        assert failed.status_code == 500 and "keeps running" in failed.json()["detail"]
    finally:
        model.decode = original
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.post(f"{url}/points", json={"position": LIVER}, headers=key).json()["object_voxels"] > 0
