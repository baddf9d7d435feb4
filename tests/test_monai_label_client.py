"""``sammed serve`` driven by MONAI Label's own client library, in the order 3D Slicer calls it.

``monailabel.client.MONAILabelClient`` is the client Slicer's MONAILabel extension ships; it
speaks HTTP (http.client and requests) to a real server on a loopback port. Two flows: a local
volume uploaded as a session (auth, info, train status, session, two infers, remove), the
datastore (next sample, image download, infer by image id, submit label, download label), and
Submit Label for a volume loaded in Slicer (upload_image into the datastore, then save_label).
Every returned label is checked against the image's grid and values.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.io import read_image
from sammed.io.slicer_seg import write_slicer_seg
from sammed.server import ServerConfig, create_app
from server_fixtures import RunningServer, checkpoint  # noqa: F401  (fixture)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the client imports cgi
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

MODEL = "sam-med3d-tiny"
LIVER = [int(v) for v in SAMPLE_CT_LIVER_VOXEL]
TOKEN = "t" * 24


@pytest.fixture()
def root(tmp_path) -> Path:
    folder = tmp_path / "data"
    (folder / "case1").mkdir(parents=True)
    (folder / "case2").mkdir()
    shutil.copy(SAMPLE_CT, folder / "case1" / "ct.nii.gz")
    shutil.copy(SAMPLE_CT, folder / "case2" / "ct.nii.gz")
    return folder


@pytest.fixture()
def server(checkpoint, root):
    app = create_app(ServerConfig(model=MODEL, checkpoint=checkpoint, data_root=root))
    with RunningServer(app) as running:
        running.app = app
        yield running


def status_of(exc: MONAILabelClientException) -> int | None:
    """The HTTP status of a client error (some client calls put it only in the message)."""
    if exc.status_code is not None:
        return exc.status_code
    return int(exc.msg.split(";")[0].split(":")[1]) if exc.msg.startswith("Status:") else None


def check_label(path: str, reference, label_values=(0, 1)) -> np.ndarray:
    """The label file lies on the image's grid and holds only the expected values."""
    label = sitk.ReadImage(path)
    assert label.GetSize() == tuple(reference.shape)
    np.testing.assert_allclose(label.GetSpacing(), reference.spacing, atol=1e-4)
    np.testing.assert_allclose(label.GetOrigin(), reference.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(np.reshape(label.GetDirection(), (3, 3)), reference.geometry.direction, atol=1e-5)
    array = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    assert set(np.unique(array).tolist()) <= set(label_values)
    return array


def test_local_volume_flow_as_slicer_calls_it(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="slicer-user")
    reference = read_image(SAMPLE_CT)
    assert client.auth_enabled() is False
    info = client.info()
    assert info["models"][MODEL]["type"] == "deepgrow" and info["models"][MODEL]["dimension"] == 3
    assert info["config"] == {} and info["labels"]
    assert client.train_status(check_if_running=True) is False
    with pytest.raises(MONAILabelClientException) as no_training:
        client.train_status()
    assert status_of(no_training.value) == 404

    session_id = client.create_session(str(SAMPLE_CT))["session_id"]
    assert client.get_session(session_id)["session_id"] == session_id
    # Slicer's logic.infer adds result_extension .nrrd and result_dtype uint8 to every call.
    first = {"label": "liver", "foreground": [LIVER], "background": [], "result_extension": ".nrrd", "result_dtype": "uint8"}
    result_file, params = client.infer(MODEL, "ct", dict(first), session_id=session_id)
    assert result_file.endswith(".nrrd") and params["label_names"] == {"liver": 1}
    one_click = check_label(result_file, reference)
    assert one_click.sum() == params["voxels"] > 0

    live = server.app.state.sammed.store.get(session_id, None)
    model = live.session.model
    decoded = []
    original_decode = model.decode
    model.decode = lambda *a, **k: decoded.append(1) or original_decode(*a, **k)
    try:
        second = dict(first, background=[[LIVER[0] - 12, LIVER[1], LIVER[2]]])
        result_file, params = client.infer(MODEL, "ct", dict(second), session_id=session_id)
    finally:
        del model.decode
    two_clicks = check_label(result_file, reference)
    # Refined, not redone: one decoder pass on the cached embedding, both clicks on one object.
    assert len(decoded) == 1 and live.session.timings.encoder_calls == 0
    assert [label for _, label in live.session.state(1).clicks] == [1, 0]
    assert live.session.object_name(1) == "liver"
    # The same two clicks in a fresh session give the same mask.
    fresh = client.create_session(str(SAMPLE_CT))["session_id"]
    again, _ = client.infer(MODEL, "ct", dict(second), session_id=fresh)
    np.testing.assert_array_equal(check_label(again, reference), two_clicks)
    # reset_state starts the label over from the points given.
    reset_file, _ = client.infer(MODEL, "ct", dict(first, reset_state=True), session_id=session_id)
    np.testing.assert_array_equal(check_label(reset_file, reference), one_click)

    assert client.remove_session(session_id)["session_id"] == session_id
    with pytest.raises(MONAILabelClientException) as gone:
        client.get_session(session_id)
    assert status_of(gone.value) == 404


def test_datastore_flow_as_slicer_calls_it(server, root, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="slicer-user")
    reference = read_image(SAMPLE_CT)
    store = client.datastore()
    assert sorted(store["objects"]) == ["case1/ct", "case2/ct"]
    sample = client.next_sample("first", {})
    assert sample["id"] == "case1/ct" and sample["name"] == "ct.nii.gz"
    # Slicer downloads the sample from /datastore/image?image=ID.
    image = requests.get(f"{server.url}/datastore/image", params={"image": sample["id"]}, timeout=30)
    assert image.status_code == 200 and image.content == (root / "case1" / "ct.nii.gz").read_bytes()

    params = {"label": "liver", "foreground": [LIVER], "background": [], "result_extension": ".nrrd", "result_dtype": "uint8"}
    result_file, out = client.infer(MODEL, sample["id"], dict(params))
    label = check_label(result_file, reference)
    assert label.sum() == out["voxels"] > 0
    saved = client.save_label(sample["id"], result_file, params={"label_info": [{"name": "liver", "idx": 1}], "model": MODEL})
    assert saved["image"] == saved["label"] == "case1/ct"
    assert (root / "case1" / "ct_seg.nrrd").is_file() and (root / "case1" / "ct.nii.gz").read_bytes() == image.content
    client.save_label(sample["id"], result_file, tag="original")
    assert (root / "case1" / "ct_seg.original.nrrd").is_file()

    store = client.datastore()
    assert set(store["objects"]["case1/ct"]["labels"]) == {"final", "original"}
    assert client.info()["datastore"]["completed"] == 1
    downloaded = client.download_label(sample["id"], "final")
    np.testing.assert_array_equal(check_label(downloaded, reference), label)
    # The labelled image is done: the next sample is the other one, then none is left.
    assert client.next_sample("first", {})["id"] == "case2/ct"
    assert client.next_sample("random", {})["id"] == "case2/ct"
    client.save_label("case2/ct", result_file)
    assert client.next_sample("random", {}) == {}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_requests_get_monai_label_errors_and_write_nothing(server, root, tmp_path):
    before = _files(root)
    url = server.url
    fg = json.dumps({"foreground": [LIVER]})

    def infer(query: str, params: str) -> requests.Response:
        return requests.post(f"{url}/infer/{query}", data={"params": params}, timeout=60)

    cases = [
        (infer(f"{MODEL}?image=case1/ct", "{not json"), 400, "not valid JSON"),
        (infer(f"{MODEL}?image=case1/ct", json.dumps({"foreground": [[500, 5, 5]]})), 400, "outside the image"),
        (infer(f"{MODEL}?image=case1/ct", json.dumps({"foreground": [LIVER], "background": [[-3, 0, 0]]})), 400, "outside the image"),
        (infer(f"{MODEL}?image=case1/ct", json.dumps({"foreground": [LIVER], "roi": [1, 2]})), 400, "roi"),
        (infer(f"{MODEL}?image=case1/ct", json.dumps({"foreground": [LIVER], "result_extension": ".exe"})), 400, "result_extension"),
        (infer(f"{MODEL}?image=case1/ct&output=dicom_seg", fg), 400, "DICOM"),
        (infer("other-model?image=case1/ct", fg), 404, "unknown model"),
        (infer(f"{MODEL}?image=nope", fg), 404, "does not exist"),
        (infer(f"{MODEL}?image=../outside", fg), 403, "'..'"),
        (requests.get(f"{url}/datastore/image", params={"image": "missing"}, timeout=30), 404, "Image NOT Found"),
        (requests.get(f"{url}/datastore/image", params={"image": "../../etc/passwd"}, timeout=30), 403, "'..'"),
        (requests.get(f"{url}/datastore/image", params={"image": "/etc/passwd"}, timeout=30), 403, "absolute"),
        (requests.get(f"{url}/datastore/label", params={"label": "case1/ct", "tag": "final"}, timeout=30), 404, "Label NOT Found"),
        (requests.post(f"{url}/activelearning/smartest", json={}, timeout=30), 404, "unknown strategy"),
    ]
    small = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkUInt8), str(small))
    with open(small, "rb") as fh:
        wrong_size = requests.put(
            f"{url}/datastore/label", params={"image": "case1/ct"}, files={"label": ("l.nii.gz", fh)}, data={"params": "{}"}, timeout=30
        )
    cases.append((wrong_size, 400, "does not match the image size"))
    with open(SAMPLE_CT, "rb") as fh:
        bad_params = requests.put(
            f"{url}/datastore/label", params={"image": "case1/ct"}, files={"label": ("l.nii.gz", fh)}, data={"params": "{x"}, timeout=30
        )
        fh.seek(0)
        bad_tag = requests.put(
            f"{url}/datastore/label", params={"image": "case1/ct", "tag": "../x"}, files={"label": ("l.nii.gz", fh)}, timeout=30
        )
        fh.seek(0)
        trick = requests.put(
            f"{url}/datastore/label", params={"image": "../case1/ct"}, files={"label": ("l.nii.gz", fh)}, timeout=30
        )
        fh.seek(0)
        not_label = requests.put(
            f"{url}/datastore/label", params={"image": "case1/ct"}, files={"label": ("l.txt", fh)}, timeout=30
        )
    cases += [(bad_params, 400, "not valid JSON"), (bad_tag, 400, "tag"), (trick, 403, "'..'"), (not_label, 400, "not a label file")]
    for reply, status, words in cases:
        assert reply.status_code == status, (reply.request.method, reply.request.url, reply.text)
        detail = reply.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
    assert _files(root) == before


def test_token_server_login_as_slicer_does(checkpoint, root, tmp_path):
    app = create_app(ServerConfig(model=MODEL, checkpoint=checkpoint, data_root=root, token=TOKEN))
    with RunningServer(app) as running:
        client = MONAILabelClient(running.url, tmpdir=str(tmp_path))
        assert client.auth_enabled() is True
        with pytest.raises(MONAILabelClientException) as refused:
            client.info()
        assert status_of(refused.value) == 401
        with pytest.raises(MONAILabelClientException):
            client.auth_token("anyone", "wrong password")
        client.update_auth(client.auth_token("anyone", TOKEN))
        assert client.auth_valid_token() is True
        assert client.info()["models"][MODEL]["type"] == "deepgrow"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_submit_label_for_a_local_volume_as_slicer_calls_it(server, root, tmp_path):
    """Slicer's onSaveLabel for a volume it loaded itself: upload_image(file, node name), then save_label."""
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="slicer-user")
    reference = read_image(SAMPLE_CT)
    local = tmp_path / "tmp4f2a.nrrd"  # Slicer saves the node to a temporary file with its file extension
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE_CT)), str(local), useCompression=True)
    session_id = client.create_session(str(local))["session_id"]
    params = {"label": "liver", "foreground": [LIVER], "background": [], "result_extension": ".nrrd", "result_dtype": "uint8"}
    result_file, _ = client.infer(MODEL, "CT-abdomen", dict(params), session_id=session_id)
    label = check_label(result_file, reference)

    # GET /session/{id}?image=true gives the session's image back (as NIfTI).
    image = requests.get(f"{server.url}/session/{session_id}", params={"image": "true"}, timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "application/gzip"
    (tmp_path / "back.nii.gz").write_bytes(image.content)
    np.testing.assert_array_equal(read_image(tmp_path / "back.nii.gz").array, reference.array)

    assert client.upload_image(str(local), "CT-abdomen") == {"image": "CT-abdomen"}
    assert (root / "CT-abdomen.nrrd").read_bytes() == local.read_bytes()
    before = _files(root)
    # Submitting again uploads the volume again: the same image is kept, nothing is written.
    assert client.upload_image(str(local), "CT-abdomen") == {"image": "CT-abdomen"}
    # ... also when it arrives in another format (other bytes, same grid and voxels).
    assert client.upload_image(str(SAMPLE_CT), "CT-abdomen") == {"image": "CT-abdomen"}
    assert _files(root) == before
    info = {"label_info": [{"name": "liver", "idx": 1}], "model": MODEL}
    saved = client.save_label("CT-abdomen", result_file, params=info)
    assert saved["image"] == saved["label"] == "CT-abdomen" and saved["file"] == "CT-abdomen_seg.nrrd"
    np.testing.assert_array_equal(check_label(str(root / "CT-abdomen_seg.nrrd"), reference), label)

    # With Slicer's file extension set to .seg.nrrd (overlapping segments), volumes arrive under that name.
    as_seg_name = tmp_path / "tmp77c1.seg.nrrd"
    shutil.copy(local, as_seg_name)
    assert client.upload_image(str(as_seg_name), "CT-copy") == {"image": "CT-copy"}
    assert (root / "CT-copy.nrrd").read_bytes() == local.read_bytes()
    # A DICOM volume's node name ("2: CT 5mm") is cleaned into a file name and still found by it.
    cleaned = client.upload_image(str(local), "2: CT 5mm")["image"]
    assert cleaned.startswith("2_CT_5mm-") and (root / f"{cleaned}.nrrd").is_file()
    client.save_label("2: CT 5mm", result_file, params={"label_info": [{"name": "tumour", "idx": 1}]})

    store = client.datastore()
    assert sorted(store["objects"]) == sorted(["case1/ct", "case2/ct", "CT-abdomen", "CT-copy", cleaned])
    final = store["objects"]["CT-abdomen"]["labels"]["final"]
    assert final["ext"] == ".nrrd" and final["info"]["name"] == "CT-abdomen_seg.nrrd"
    assert final["info"]["label_info"] == info["label_info"] and final["info"]["model"] == MODEL
    assert final["info"]["client_id"] == "slicer-user"
    assert store["objects"][cleaned]["labels"]["final"]["info"]["label_info"] == [{"name": "tumour", "idx": 1}]
    assert client.info()["datastore"]["completed"] == 2
    np.testing.assert_array_equal(check_label(client.download_label("CT-abdomen", "final"), reference), label)

    # HEAD checks, as MONAI Label answers them.
    head = lambda path, **query: requests.head(f"{server.url}/datastore/{path}", params=query, timeout=30).status_code  # noqa: E731
    assert head("image", image="CT-abdomen") == 200
    assert head("image", image="CT-abdomen", check_sum=f"SHA256:{_sha256(local)}") == 200
    assert head("image", image="CT-abdomen", check_sum="SHA256:" + "0" * 64) == 404
    assert head("image", image="nope") == 404
    assert head("label", image="CT-abdomen", tag="final") == 200
    assert head("label", image="CT-abdomen", tag="original") == 404

    # A label written over by another writer (the web viewer's Save) no longer claims the old names.
    shutil.copy(root / f"{cleaned}_seg.nrrd", root / "CT-abdomen_seg.nrrd")
    assert "label_info" not in client.datastore()["objects"]["CT-abdomen"]["labels"]["final"]["info"]


def test_bad_uploads_are_refused_and_leave_the_data_root_as_it_was(server, root, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path), client_id="slicer-user")
    (root / "taken.nii.gz").write_bytes((root / "case1" / "ct.nii.gz").read_bytes())
    before = _files(root)
    other = tmp_path / "other.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(8 * 10 * 12, dtype=np.int16).reshape(8, 10, 12)), str(other))
    huge = tmp_path / "huge.nrrd"  # a 300-byte header that would decode to 8 GB
    huge.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2000 2000 2000\nencoding: raw\n\n" + bytes(64))
    detached = tmp_path / "detached.nrrd"
    detached.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: /etc/hostname\n\n")
    segmentation = tmp_path / "liver.seg.nrrd"
    write_slicer_seg(np.ones((12, 10, 8), np.uint8), read_image(other), segmentation, names={1: "liver"})
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image\n")

    def upload(path: Path, image_id: str, name: str | None = None, params: str = "{}") -> requests.Response:
        with open(path, "rb") as fh:
            return requests.put(
                f"{server.url}/datastore/", params={"image": image_id}, files={"file": (name or path.name, fh)},
                data={"params": params}, timeout=60,
            )

    cases = [
        (upload(other, "../outside"), 403, "'..'"),
        (upload(other, "/tmp/outside"), 403, "absolute"),
        (upload(other, "case1/../../outside"), 403, "'..'"),
        (upload(other, "..\\outside"), 403, "not an image id"),
        (upload(other, "C:evil"), 403, "not an image id"),
        (upload(huge, "huge"), 413, "per-image limit"),
        (upload(detached, "detached"), 400, "separate data file"),
        (upload(detached, "detached", "detached.nhdr"), 400, "another file"),
        (upload(text, "notes"), 400, "cannot read image"),
        (upload(other, "other", "other.txt"), 400, "not an image file"),
        (upload(segmentation, "liver"), 400, "segmentation"),
        (upload(other, "other", "other.nrrd"), 400, "cannot read image"),  # NIfTI bytes under an NRRD name
        (upload(other, "other", params="{x"), 400, "not valid JSON"),
        (upload(other, "taken"), 409, "different image"),
        (upload(other, "case1/ct"), 409, "different image"),
        (requests.get(f"{server.url}/session/nope", params={"image": "true"}, timeout=30), 404, "no session"),
        (requests.get(f"{server.url}/datastore/label", params={"label": "other", "tag": "final"}, timeout=30), 404, "Image NOT Found"),
    ]
    for reply, status, words in cases:
        assert reply.status_code == status, (reply.request.method, reply.request.url, reply.text)
        detail = reply.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
    with pytest.raises(MONAILabelClientException) as refused:
        client.upload_image(str(other), "taken")
    assert status_of(refused.value) == 409
    assert _files(root) == before
