"""Hostile and careless requests to the server: each gets a 4xx with a one-line reason, and none
changes anything (the open session, the session count, the memory charged, the data root).

One table of requests runs against one server holding one session with a mask; after every
request the session must look exactly as before and still answer its label, mask and save
requests. Separate tests cover what a table row cannot: the memory budget filling up, a
non-ASCII upload name in the download header, and ``sammed serve`` option parsing.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field
from urllib.parse import unquote

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from sammed.cli import main
from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.io import read_image, write_mask
from sammed.server import ServerConfig, create_app
from sammed.server.config import session_charge
from server_fixtures import tiny_checkpoint

LIVER = list(SAMPLE_CT_LIVER_VOXEL)
SECRET = b"server-private-bytes-" * 64
MAX_IMAGE = 8 * 2**20  # decoded bytes per image in these tests (the sample CT is ~0.7 MiB)
CT_BYTES = SAMPLE_CT.read_bytes()
SMALL_MASK = nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.uint8), np.eye(4)).to_bytes()  # not the CT's size


def metaimage_header(data_file: str, dims: str = "4 4 4") -> bytes:
    return (
        f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\nElementDataFile = {data_file}\n"
    ).encode()


def nrrd_header(data_file: str) -> bytes:
    return f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: {data_file}\n\n".encode()


def bomb() -> bytes:
    """A .nii.gz of a few KB that decodes to 27 MB of uint8: over MAX_IMAGE, under the upload limit."""
    array = np.zeros((300, 300, 300), dtype=np.uint8)
    array[0, 0, 0] = 1
    header = nib.Nifti1Image(array, np.eye(4)).header
    raw = header.binaryblock + b"\0" * 4 + array.tobytes(order="F")
    return gzip.compress(raw, compresslevel=9)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root with traps: links out, symlink loops, detached headers naming outside files."""
    base = tmp_path_factory.mktemp("bad")
    secret = base / "secret.raw"
    secret.write_bytes(SECRET)
    root = base / "data"
    (root / "case1").mkdir(parents=True)
    shutil.copy(SAMPLE_CT, root / "case1" / "ct.nii.gz")
    (root / "escape.mhd").write_bytes(metaimage_header("../secret.raw"))
    (root / "absolute.mhd").write_bytes(metaimage_header(str(secret)))
    (root / "escape.nhdr").write_bytes(nrrd_header("../secret.raw"))
    (root / "inline_escape.mha").write_bytes(metaimage_header(str(secret)))
    (root / "not_an_image.nii.gz").write_bytes(b"just text")
    os.symlink(secret, root / "link_out.nii.gz")
    os.symlink(base, root / "dir_out")
    os.symlink(root / "loop_a", root / "loop_b")
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink("self.nii.gz", root / "self.nii.gz")
    os.symlink(root / "case1" / "nothing", root / "dangling.nii.gz")
    (root / "case1" / "up").symlink_to(root)  # a loop through folders: must not be walked forever
    ct = read_image(SAMPLE_CT)
    (root / "masks").mkdir()
    liver = np.zeros(ct.shape, dtype=np.uint8)
    liver[75:95, 50:66, 15:25] = 5
    write_mask(liver, ct, root / "masks" / "liver.nii.gz")
    write_mask(np.zeros(ct.shape, dtype=np.uint8), ct, root / "masks" / "empty.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), dtype=np.uint8), np.eye(4)), root / "masks" / "small.nii.gz")
    config = ServerConfig(
        model="sam-med3d-tiny",
        checkpoint=tiny_checkpoint(base / "tiny.pth"),
        data_root=root,
        max_image_bytes=MAX_IMAGE,
        memory_budget_bytes=64 * 2**20,
    )
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        opened = client.post("/api/sessions", data={"path": "case1/ct.nii.gz"})
        assert opened.status_code == 201, opened.text
        body = opened.json()
        key = {"X-Session-Key": body["session_key"]}
        url = f"/api/sessions/{body['session_id']}"
        assert client.post(f"{url}/points", json={"position": LIVER}, headers=key).status_code == 200
        monai = client.put("/session/", files=[("files", ("ct.nii.gz", CT_BYTES, "application/octet-stream"))])
        assert monai.status_code == 200, monai.text
        yield {"client": client, "root": root, "key": key, "url": url, "monai": monai.json()["session_id"]}


def observable_state(world) -> dict:
    """Everything a request could have changed: the session, the server's counts, the data root."""
    client, url, key = world["client"], world["url"], world["key"]
    session = client.get(url, headers=key).json()
    session.pop("expires_in_s")
    info = client.get("/api/info").json()
    files = sorted(p.relative_to(world["root"]).as_posix() for p in world["root"].rglob("*") if not p.is_symlink())
    return {"session": session, "sessions": info["sessions"], "charged": info["memory_charged_bytes"], "files": files}


@dataclass
class Bad:
    """One bad request: ``{url}`` / ``{monai}`` in ``path`` stand for the open sessions."""

    name: str
    method: str
    path: str
    status: int
    says: str  # a fragment the one-line reason must contain (case-insensitive)
    kwargs: dict = field(default_factory=dict)
    with_key: bool = True


def upload(name: str, content: bytes) -> dict:
    return {"files": {"file": (name, content, "application/octet-stream")}}


def raw_json(text: str) -> dict:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


CASES = [
    # --- opening images: what the server may read
    Bad("no body", "POST", "/api/sessions", 400, "exactly one of"),
    Bad("file and path", "POST", "/api/sessions", 400, "exactly one of", {"data": {"path": "case1/ct.nii.gz"}, **upload("a.nii.gz", CT_BYTES)}),
    Bad("unknown field", "POST", "/api/sessions", 400, "nothing else", {"data": {"path": "case1/ct.nii.gz", "x": "1"}}),
    Bad("file as text field", "POST", "/api/sessions", 400, "uploaded file", {"files": {"file": (None, "ct.nii.gz")}}),
    Bad("absolute path", "POST", "/api/sessions", 403, "absolute", {"data": {"path": "/etc/passwd"}}),
    Bad("dot-dot path", "POST", "/api/sessions", 403, "'..'", {"data": {"path": "case1/../../secret.raw"}}),
    Bad("missing file", "POST", "/api/sessions", 404, "does not exist", {"data": {"path": "case1/none.nii.gz"}}),
    Bad("link out of root", "POST", "/api/sessions", 403, "outside the data root", {"data": {"path": "link_out.nii.gz"}}),
    Bad("folder link out of root", "POST", "/api/sessions", 403, "outside the data root", {"data": {"path": "dir_out/secret.raw"}}),
    Bad("symlink loop", "POST", "/api/sessions", 404, "loop", {"data": {"path": "loop_a"}}),
    Bad("self link", "POST", "/api/sessions", 404, "", {"data": {"path": "self.nii.gz"}}),
    Bad("dangling link", "POST", "/api/sessions", 404, "does not exist", {"data": {"path": "dangling.nii.gz"}}),
    Bad("very long path", "POST", "/api/sessions", 404, "", {"data": {"path": "a" * 5000}}),
    Bad("data-root mhd escaping", "POST", "/api/sessions", 400, "data file", {"data": {"path": "escape.mhd"}}),
    Bad("data-root mhd absolute", "POST", "/api/sessions", 400, "data file", {"data": {"path": "absolute.mhd"}}),
    Bad("data-root nhdr escaping", "POST", "/api/sessions", 400, "data file", {"data": {"path": "escape.nhdr"}}),
    Bad("data-root mha naming a file", "POST", "/api/sessions", 400, "data file", {"data": {"path": "inline_escape.mha"}}),
    Bad("data-root text as nii.gz", "POST", "/api/sessions", 400, "not_an_image.nii.gz", {"data": {"path": "not_an_image.nii.gz"}}),
    Bad("upload mhd", "POST", "/api/sessions", 400, "another file", upload("scan.mhd", metaimage_header("/etc/hostname"))),
    Bad("upload nhdr", "POST", "/api/sessions", 400, "another file", upload("scan.nhdr", nrrd_header("/etc/hostname"))),
    Bad("upload mha naming a file", "POST", "/api/sessions", 400, "data file", upload("scan.mha", metaimage_header("/etc/hostname"))),
    Bad("upload nrrd naming a file", "POST", "/api/sessions", 400, "data file", upload("scan.nrrd", nrrd_header("/etc/hostname"))),
    Bad("nrrd header named .dcm", "POST", "/api/sessions", 400, "", upload("scan.dcm", nrrd_header("/etc/hostname"))),
    Bad("mhd header with no suffix", "POST", "/api/sessions", 400, "", upload("scan", metaimage_header("/etc/hostname"))),
    Bad("decompression bomb", "POST", "/api/sessions", 413, "--max-image-mb", upload("bomb.nii.gz", bomb())),
    Bad("empty upload", "POST", "/api/sessions", 400, "", upload("empty.nii.gz", b"")),
    Bad("garbage upload", "POST", "/api/sessions", 400, "garbage.nii.gz", upload("garbage.nii.gz", os.urandom(2048))),
    Bad("truncated upload", "POST", "/api/sessions", 400, "", upload("cut.nii.gz", CT_BYTES[: len(CT_BYTES) // 2])),
    # --- clicks and boxes: values
    Bad("NaN position", "POST", "{url}/points", 422, "position", raw_json('{"position": [NaN, 50, 10]}')),
    Bad("infinite position", "POST", "{url}/points", 422, "position", raw_json('{"position": [Infinity, 50, 10]}')),
    Bad("null position", "POST", "{url}/points", 422, "position", {"json": {"position": [None, 50, 10]}}),
    Bad("text position", "POST", "{url}/points", 422, "position", {"json": {"position": ["a", "b", "c"]}}),
    Bad("two coordinates", "POST", "{url}/points", 422, "position", {"json": {"position": [50, 10]}}),
    Bad("no position", "POST", "{url}/points", 422, "position", {"json": {}}),
    Bad("huge position", "POST", "{url}/points", 400, "outside the image", {"json": {"position": [1e308, 1e308, 1e308]}}),
    Bad("huge world position", "POST", "{url}/points", 400, "outside", {"json": {"position": [1e308, -1e308, 1e308], "space": "world"}}),
    Bad("outside position", "POST", "{url}/points", 400, "outside the image", {"json": {"position": [500, 0, 0]}}),
    Bad("object 70000", "POST", "{url}/points", 422, "object_id", {"json": {"position": LIVER, "object_id": 70000}}),
    Bad("object 0", "POST", "{url}/points", 422, "object_id", {"json": {"position": LIVER, "object_id": 0}}),
    Bad("object not next", "POST", "{url}/points", 404, "not an object", {"json": {"position": LIVER, "object_id": 7}}),
    Bad("object as text", "POST", "{url}/points", 422, "object_id", {"json": {"position": LIVER, "object_id": "one"}}),
    Bad("unknown space", "POST", "{url}/points", 422, "space", {"json": {"position": LIVER, "space": "pixels"}}),
    Bad("extra field", "POST", "{url}/points", 422, "extra", {"json": {"position": LIVER, "colour": "red"}}),
    Bad("not JSON", "POST", "{url}/points", 422, "", raw_json("{position: 1")),
    Bad("box NaN corner", "POST", "{url}/boxes", 422, "corner_a", raw_json('{"corner_a": [NaN, 1, 1], "corner_b": [5, 5, 5]}')),
    Bad("box one corner", "POST", "{url}/boxes", 422, "corner_b", {"json": {"corner_a": [1, 1, 1]}}),
    Bad("box object 70000", "POST", "{url}/boxes", 422, "object_id", {"json": {"corner_a": [40, 40, 10], "corner_b": [60, 60, 20], "object_id": 70000}}),
    Bad("box outside", "POST", "{url}/boxes", 400, "outside", {"json": {"corner_a": [-900, 1, 1], "corner_b": [5, 5, 5]}}),
    Bad("rename unknown object", "PUT", "{url}/objects/9", 404, "not an object", {"json": {"name": "liver"}}),
    Bad("rename object 70000", "PUT", "{url}/objects/70000", 422, "object_id", {"json": {"name": "liver"}}),
    Bad("rename empty name", "PUT", "{url}/objects/1", 422, "name", {"json": {"name": ""}}),
    Bad("rename two lines", "PUT", "{url}/objects/1", 400, "one non-empty line", {"json": {"name": "a\nb"}}),
    Bad("rename blank name", "PUT", "{url}/objects/1", 400, "one non-empty line", {"json": {"name": "   "}}),
    Bad("reset object 70000", "POST", "{url}/reset", 422, "object_id", {"json": {"object_id": 70000}}),
    Bad("reset unknown object", "POST", "{url}/reset", 404, "not an object", {"json": {"object_id": 9}}),
    # --- scribbles, lassos, initial masks
    Bad("scribble no voxels", "POST", "{url}/scribbles", 422, "voxels", {"json": {"voxels": [], "positive": True}}),
    Bad("scribble NaN voxel", "POST", "{url}/scribbles", 422, "voxels", raw_json('{"voxels": [[NaN, 1, 1]], "positive": true}')),
    Bad("scribble two coordinates", "POST", "{url}/scribbles", 422, "voxels", {"json": {"voxels": [[60, 50]], "positive": True}}),
    Bad("scribble no sign", "POST", "{url}/scribbles", 422, "positive", {"json": {"voxels": [LIVER]}}),
    Bad("scribble outside", "POST", "{url}/scribbles", 400, "leaves the image", {"json": {"voxels": [LIVER, [500, 50, 10]], "positive": True}}),
    Bad("scribble object not next", "POST", "{url}/scribbles", 404, "not an object", {"json": {"voxels": [LIVER], "positive": True, "object_id": 7}}),
    Bad("scribble object 70000", "POST", "{url}/scribbles", 422, "object_id", {"json": {"voxels": [LIVER], "positive": True, "object_id": 70000}}),
    Bad("lasso two vertices", "POST", "{url}/lassos", 422, "polygon", {"json": {"polygon": [[1, 1], [5, 5]], "axis": "k", "index": 5, "positive": True}}),
    Bad("lasso off the slice", "POST", "{url}/lassos", 400, "leaves slice", {"json": {"polygon": [[1, 1], [500, 5], [5, 9]], "axis": "k", "index": 5, "positive": True}}),
    Bad("lasso slice outside", "POST", "{url}/lassos", 400, "outside the image", {"json": {"polygon": [[1, 1], [9, 1], [5, 9]], "axis": "k", "index": 30, "positive": True}}),
    Bad("lasso encloses nothing", "POST", "{url}/lassos", 400, "encloses no voxel", {"json": {"polygon": [[1.1, 1.1], [1.3, 1.1], [1.2, 1.3]], "axis": "i", "index": 5, "positive": False}}),
    Bad("lasso unknown axis", "POST", "{url}/lassos", 422, "axis", {"json": {"polygon": [[1, 1], [9, 1], [5, 9]], "axis": "x", "index": 5, "positive": True}}),
    Bad("lasso no index", "POST", "{url}/lassos", 422, "index", {"json": {"polygon": [[1, 1], [9, 1], [5, 9]], "axis": "k", "positive": True}}),
    Bad("lasso infinite vertex", "POST", "{url}/lassos", 422, "polygon", raw_json('{"polygon": [[1, 1], [Infinity, 1], [5, 9]], "axis": "k", "index": 5, "positive": true}')),
    Bad("lasso object not next", "POST", "{url}/lassos", 404, "not an object", {"json": {"polygon": [[1, 1], [9, 1], [5, 9]], "axis": "k", "index": 5, "positive": True, "object_id": 7}}),
    Bad("initial mask no source", "POST", "{url}/initial-mask", 400, "exactly one of", {"data": {"label": "5"}}),
    Bad("initial mask file and path", "POST", "{url}/initial-mask", 400, "exactly one of", {"data": {"path": "masks/liver.nii.gz"}, **upload("m.nii.gz", CT_BYTES)}),
    Bad("initial mask unknown field", "POST", "{url}/initial-mask", 400, "exactly one of", {"data": {"path": "masks/liver.nii.gz", "colour": "red"}}),
    Bad("initial mask wrong size", "POST", "{url}/initial-mask", 400, "does not match the image size", {"data": {"path": "masks/small.nii.gz"}}),
    Bad("initial mask wrong size upload", "POST", "{url}/initial-mask", 400, "'small.nii': mask size", upload("small.nii", SMALL_MASK)),
    Bad("initial mask empty", "POST", "{url}/initial-mask", 400, "empty", {"data": {"path": "masks/empty.nii.gz"}}),
    Bad("initial mask missing label", "POST", "{url}/initial-mask", 400, "no voxel of label 9", {"data": {"path": "masks/liver.nii.gz", "label": "9"}}),
    Bad("initial mask label zero", "POST", "{url}/initial-mask", 422, "label", {"data": {"path": "masks/liver.nii.gz", "label": "0"}}),
    Bad("initial mask label text", "POST", "{url}/initial-mask", 422, "label", {"data": {"path": "masks/liver.nii.gz", "label": "liver"}}),
    Bad("initial mask object 70000", "POST", "{url}/initial-mask", 422, "object_id", {"data": {"path": "masks/liver.nii.gz", "object_id": "70000"}}),
    Bad("initial mask object not next", "POST", "{url}/initial-mask", 404, "not an object", {"data": {"path": "masks/liver.nii.gz", "object_id": "7"}}),
    Bad("initial mask path escaping", "POST", "{url}/initial-mask", 403, "'..'", {"data": {"path": "../secret.raw"}}),
    Bad("initial mask link out of root", "POST", "{url}/initial-mask", 403, "outside the data root", {"data": {"path": "link_out.nii.gz"}}),
    Bad("initial mask missing file", "POST", "{url}/initial-mask", 404, "does not exist", {"data": {"path": "masks/none.nii.gz"}}),
    Bad("initial mask a folder", "POST", "{url}/initial-mask", 400, "is a folder", {"data": {"path": "masks"}}),
    Bad("initial mask detached header", "POST", "{url}/initial-mask", 400, "data file", {"data": {"path": "escape.mhd"}}),
    Bad("initial mask upload nrrd naming a file", "POST", "{url}/initial-mask", 400, "data file", upload("m.nrrd", nrrd_header("/etc/hostname"))),
    Bad("initial mask upload mhd", "POST", "{url}/initial-mask", 400, "another file", upload("m.mhd", metaimage_header("/etc/hostname"))),
    Bad("initial mask decompression bomb", "POST", "{url}/initial-mask", 413, "--max-image-mb", upload("bomb.nii.gz", bomb())),
    Bad("initial mask garbage upload", "POST", "{url}/initial-mask", 400, "garbage.seg.nrrd", upload("garbage.seg.nrrd", os.urandom(2048))),
    Bad("initial mask file as text field", "POST", "{url}/initial-mask", 400, "uploaded file", {"files": {"file": (None, "m.nii.gz")}}),
    Bad("initial mask image not labels", "POST", "{url}/initial-mask", 400, "negative values", upload("ct.nii.gz", CT_BYTES)),
    # --- reading results
    Bad("mask object 70000", "GET", "{url}/mask", 422, "object_id", {"params": {"object_id": 70000}}),
    Bad("mask unknown object", "GET", "{url}/mask", 404, "not an object", {"params": {"object_id": 9}}),
    Bad("labels text offset", "GET", "{url}/labels", 400, "three integers", {"params": {"offset": "a,b,c", "shape": "1,1,1"}}),
    Bad("labels negative shape", "GET", "{url}/labels", 400, "positive", {"params": {"offset": "0,0,0", "shape": "-1,1,1"}}),
    Bad("labels beyond image", "GET", "{url}/labels", 400, "exceeds", {"params": {"offset": "0,0,0", "shape": "999,1,1"}}),
    Bad("labels huge offset", "GET", "{url}/labels", 400, "exceeds", {"params": {"offset": "99999999999999999999,0,0", "shape": "1,1,1"}}),
    Bad("save unknown object", "POST", "{url}/save", 404, "not an object", {"json": {"object_id": 9}}),
    Bad("save outside folder", "POST", "{url}/save", 403, "plain file name", {"json": {"filename": "../x.nii.gz"}}),
    Bad("save long name", "POST", "{url}/save", 422, "filename", {"json": {"filename": "x" * 300 + ".nii.gz"}}),
    Bad("save as png", "POST", "{url}/save", 400, "cannot write", {"json": {"filename": "x.png"}}),
    Bad("save over image", "POST", "{url}/save", 409, "over the image", {"json": {"filename": "ct.nii.gz", "overwrite": True}}),
    # --- sessions and keys
    Bad("no session key", "GET", "{url}", 403, "X-Session-Key", with_key=False),
    Bad("wrong session key", "POST", "{url}/undo", 403, "X-Session-Key", {"headers": {"X-Session-Key": "guess"}}, with_key=False),
    Bad("unknown session", "GET", "/api/sessions/nope", 404, "no session"),
    Bad("delete without key", "DELETE", "{url}", 403, "X-Session-Key", with_key=False),
    # --- listing the data root
    Bad("list outside", "GET", "/api/files", 403, "'..'", {"params": {"folder": "../"}}),
    Bad("list a file", "GET", "/api/files", 400, "not a folder", {"params": {"folder": "case1/ct.nii.gz"}}),
    Bad("list a loop", "GET", "/api/files", 404, "", {"params": {"folder": "loop_a"}}),
    Bad("list via link out", "GET", "/api/files", 403, "outside", {"params": {"folder": "dir_out"}}),
    # --- MONAI Label subset
    Bad("infer unknown model", "POST", "/infer/other?session_id={monai}", 404, "unknown model", {"data": {"params": '{"foreground": [[1, 2, 3]]}'}}),
    Bad("infer params not JSON", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "not valid JSON", {"data": {"params": "{"}}),
    Bad("infer params a list", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "JSON object", {"data": {"params": "[1]"}}),
    Bad("infer no clicks", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "at least one", {"data": {"params": "{}"}}),
    Bad("infer null click", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "finite numbers", {"data": {"params": '{"foreground": [null]}'}}),
    Bad("infer null coordinate", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "finite numbers", {"data": {"params": '{"foreground": [[null, 1, 2]]}'}}),
    Bad("infer NaN coordinate", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "finite numbers", {"data": {"params": '{"foreground": [[NaN, 1, 2]]}'}}),
    Bad("infer text coordinate", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "finite numbers", {"data": {"params": '{"foreground": [["1", "2", "3"]]}'}}),
    Bad("infer bool coordinate", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "finite numbers", {"data": {"params": '{"foreground": [[true, 2, 3]]}'}}),
    Bad("infer background not list", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "background", {"data": {"params": '{"foreground": [[60, 50, 10]], "background": 5}'}}),
    Bad("infer click outside", "POST", "/infer/sam-med3d-tiny?session_id={monai}", 400, "outside", {"data": {"params": '{"foreground": [[1e9, 2, 3]]}'}}),
    Bad("infer unknown session", "POST", "/infer/sam-med3d-tiny?session_id=nope", 404, "no session", {"data": {"params": '{"foreground": [[1, 2, 3]]}'}}),
    Bad("infer no image", "POST", "/infer/sam-med3d-tiny", 400, "give image=", {"data": {"params": '{"foreground": [[1, 2, 3]]}'}}),
    Bad("infer image outside root", "POST", "/infer/sam-med3d-tiny?image=../secret.raw", 403, "'..'", {"data": {"params": '{"foreground": [[1, 2, 3]]}'}}),
    Bad("infer detached header", "POST", "/infer/sam-med3d-tiny?image=escape.mhd", 400, "data file", {"data": {"params": '{"foreground": [[1, 2, 3]]}'}}),
    Bad("infer bomb upload", "POST", "/infer/sam-med3d-tiny", 413, "--max-image-mb", {"data": {"params": '{"foreground": [[1, 2, 3]]}'}, **upload("b.nii.gz", bomb())}),
    Bad("monai put uncompress", "PUT", "/session/", 400, "uncompress", {"data": {"uncompress": "true"}, "files": [("files", ("ct.nii.gz", CT_BYTES))]}),
    Bad("monai put zero expiry", "PUT", "/session/", 422, "expiry", {"data": {"expiry": "0"}, "files": [("files", ("ct.nii.gz", CT_BYTES))]}),
    Bad("monai put mhd", "PUT", "/session/", 400, "another file", {"files": [("files", ("x.mhd", metaimage_header("/etc/hostname")))]}),
    Bad("monai get unknown", "GET", "/session/nope", 404, "no session"),
]


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_cleanly(world, case: Bad):
    client = world["client"]
    before = observable_state(world)
    kwargs = dict(case.kwargs)
    if case.with_key:
        kwargs["headers"] = {**world["key"], **kwargs.get("headers", {})}
    path = case.path.format(url=world["url"], monai=world["monai"])
    reply = client.request(case.method, path, **kwargs)
    assert reply.status_code == case.status, f"{case.name}: {reply.status_code} {reply.text[:300]}"
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and case.says.lower() in detail.lower()
    assert str(world["root"].parent) not in detail and "sammed-upload-" not in detail and ".tmp-" not in detail  # no server or temporary paths leak
    assert observable_state(world) == before
    # The session still answers everything it answered before.
    for follow_up in ("/labels", "/mask", ""):
        assert client.get(world["url"] + follow_up, headers=world["key"]).status_code == 200


def test_file_listing_skips_loops_and_links_out(world):
    listing = world["client"].get("/api/files")
    assert listing.status_code == 200
    assert {entry["path"] for entry in listing.json()["entries"]} == {
        "case1",
        "masks",
        "escape.mhd",
        "absolute.mhd",
        "escape.nhdr",
        "inline_escape.mha",
        "not_an_image.nii.gz",
    }
    inner = world["client"].get("/api/files", params={"folder": "case1/up/case1"})
    assert inner.status_code == 200 and inner.json()["folder"] == "case1"


def test_non_ascii_upload_name_downloads_with_rfc5987_header(world):
    client = world["client"]
    name = 'Ünïcödé "scan"\u202e.nii.gz'
    opened = client.post("/api/sessions", files={"file": (name, CT_BYTES, "application/gzip")})
    assert opened.status_code == 201, opened.text
    body = opened.json()
    key, url = {"X-Session-Key": body["session_key"]}, f"/api/sessions/{body['session_id']}"
    try:
        download = client.get(f"{url}/mask", headers=key)
        assert download.status_code == 200
        disposition = download.headers["content-disposition"]
        assert disposition.isascii() and 'filename="' in disposition
        encoded = disposition.split("filename*=UTF-8''", 1)[1]
        assert unquote(encoded) == body["name"].split(".")[0] + "_seg.nii.gz" and unquote(encoded).startswith("Ünïcödé ")
    finally:
        assert client.delete(url, headers=key).status_code == 204


def test_object_ids_stay_usable_after_a_refused_one(world):
    client, url, key = world["client"], world["url"], world["key"]
    assert client.post(f"{url}/points", json={"position": LIVER, "object_id": 70000}, headers=key).status_code == 422
    second = client.post(f"{url}/points", json={"position": LIVER, "object_id": 2}, headers=key)  # the next one: allowed
    assert second.status_code == 200 and second.json()["object_id"] == 2
    try:
        for follow_up in ("/labels", "/mask"):
            assert client.get(url + follow_up, headers=key).status_code == 200
    finally:
        assert client.post(f"{url}/undo", headers=key).status_code == 200


def test_info_reports_the_memory_budget(world):
    info = world["client"].get("/api/info").json()
    assert info["max_image_bytes"] == MAX_IMAGE and info["memory_budget_bytes"] == 64 * 2**20
    assert info["largest_session_bytes"] == session_charge(MAX_IMAGE, MAX_IMAGE)
    assert 0 < info["memory_charged_bytes"] <= info["memory_budget_bytes"]


def test_memory_budget_full_is_503_and_frees_on_close(tmp_path):
    image = nib.load(SAMPLE_CT)
    voxels = int(np.prod(image.shape))
    charge = session_charge(voxels, voxels * image.get_data_dtype().itemsize)
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(SAMPLE_CT, root / "ct.nii.gz")
    config = ServerConfig(
        model="sam-med3d-tiny",
        checkpoint=tiny_checkpoint(tmp_path / "tiny.pth"),
        data_root=root,
        max_image_bytes=2**20,
        memory_budget_bytes=2 * charge + charge // 2,  # two sessions of the sample CT fit, not three
    )
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        opened = [client.post("/api/sessions", data={"path": "ct.nii.gz"}) for _ in range(2)]
        assert [reply.status_code for reply in opened] == [201, 201]
        assert client.get("/api/info").json()["memory_charged_bytes"] == 2 * charge
        full = client.post("/api/sessions", data={"path": "ct.nii.gz"})
        assert full.status_code == 503 and "memory budget" in full.json()["detail"]
        first = opened[0].json()
        client.delete(f"/api/sessions/{first['session_id']}", headers={"X-Session-Key": first["session_key"]})
        assert client.post("/api/sessions", data={"path": "ct.nii.gz"}).status_code == 201


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--port", "70000"], "--port"),
        (["--port", "0"], "--port"),
        (["--port", "http"], "--port"),
        (["--max-upload-mb", "nan"], "--max-upload-mb"),
        (["--max-upload-mb", "-5"], "--max-upload-mb"),
        (["--max-upload-mb", "1e400"], "--max-upload-mb"),
        (["--max-image-mb", "inf"], "--max-image-mb"),
        (["--memory-budget-mb", "0"], "--memory-budget-mb"),
        (["--session-timeout", "-1"], "--session-timeout"),
        (["--session-timeout", "nan"], "--session-timeout"),
        (["--max-sessions", "0"], "--max-sessions"),
        (["--max-sessions", "2.5"], "--max-sessions"),
        (["--max-image-mb", "4096", "--memory-budget-mb", "1024"], "--memory-budget-mb"),
    ],
)
def test_serve_options_are_checked_when_parsed(capsys, argv, says):
    with pytest.raises(SystemExit) as stop:
        code = main(["serve", "--model", "sam-med3d-tiny", "--allow-random-weights", *argv])
        raise SystemExit(code)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err
