"""Slicer segmentation files (.seg.nrrd): names, colours and label values, read back with slicerio."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import slicerio
import torch
from fastapi.testclient import TestClient

from sammed.cli import main
from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.inference import Session
from sammed.io import read_image
from sammed.io.masks import read_mask, read_mask_segments
from sammed.io.segments import default_color
from sammed.models import build_model
from sammed.server import ServerConfig, create_app
from server_fixtures import checkpoint  # noqa: F401  (fixture)

LIVER = list(SAMPLE_CT_LIVER_VOXEL)


def segments_of(path) -> list[tuple[str, int, list[float]]]:
    return [(s["name"], s["labelValue"], [round(c, 4) for c in s["color"]]) for s in slicerio.read_segmentation(str(path))["segments"]]


def rounded(color) -> list[float]:
    return [round(c, 4) for c in color]


def test_cli_writes_one_named_object(tmp_path, tiny_checkpoint):
    out, nifti = tmp_path / "liver.seg.nrrd", tmp_path / "liver.nii.gz"
    common = [str(SAMPLE_CT), "-p", ",".join(map(str, LIVER)), "--model", "sam-med3d-tiny", "--checkpoint", str(tiny_checkpoint)]
    assert main(["segment", *common, "--out", str(out), "--label", "liver"]) == 0
    assert main(["segment", *common, "--out", str(nifti)]) == 0
    assert segments_of(out) == [("liver", 1, rounded(default_color(1)))]
    seg = slicerio.read_segmentation(str(out))
    np.testing.assert_array_equal(seg["voxels"], read_image(nifti).array)
    np.testing.assert_allclose(seg["ijkToLPS"], read_image(SAMPLE_CT).geometry.affine_lps, atol=1e-4)


@pytest.fixture()
def session_file(tmp_path):
    image = read_image(SAMPLE_CT)
    torch.manual_seed(0)
    session = Session(build_model("sam-med3d-tiny"), image)
    session.set_name(1, "liver")
    session.add_point(LIVER)
    spleen = session.new_object(name="spleen")
    session.add_point([30, 60, 15], object_id=spleen)
    return session, session.save(tmp_path / "objects.seg.nrrd"), image


def test_multi_object_label_map_reads_back_with_names_and_colours(session_file):
    session, path, image = session_file
    assert segments_of(path) == [("liver", 1, rounded(default_color(1))), ("spleen", 2, rounded(default_color(2)))]
    labels, segments = read_mask_segments(path, image)
    np.testing.assert_array_equal(labels, session.label_map())
    assert [(s.label, s.name) for s in segments] == [(1, "liver"), (2, "spleen")]


def test_server_saves_seg_nrrd_with_object_names(checkpoint, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(SAMPLE_CT, root / "ct.nii.gz")
    app = create_app(ServerConfig(model="sam-med3d-tiny", checkpoint=checkpoint, data_root=root))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        opened = client.post("/api/sessions", data={"path": "ct.nii.gz"}).json()
        key, url = {"X-Session-Key": opened["session_key"]}, f"/api/sessions/{opened['session_id']}"
        first = client.post(f"{url}/objects", json={"name": "liver"}, headers=key).json()
        assert first["name"] == "liver"
        client.post(f"{url}/points", json={"position": LIVER, "object_id": first["object_id"]}, headers=key)
        assert client.get(url, headers=key).json()["objects"][0]["name"] == "liver"
        saved = client.post(f"{url}/save", json={"filename": "ct_seg.seg.nrrd"}, headers=key)
        assert saved.status_code == 200, saved.text
        refused = client.post(f"{url}/save", json={"filename": "ct_seg.dcm"}, headers=key)
        assert refused.status_code == 400 and "DICOM" in refused.json()["detail"]
        labels = np.frombuffer(client.get(f"{url}/labels", headers=key).content, dtype=np.uint8)
    oid = first["object_id"]
    assert segments_of(root / "ct_seg.seg.nrrd") == [("liver", oid, rounded(default_color(oid)))]
    mask = read_mask(root / "ct_seg.seg.nrrd", read_image(root / "ct.nii.gz"))
    np.testing.assert_array_equal(mask.ravel(order="F"), labels)
    assert not (root / "ct_seg.dcm").exists()


def test_evaluation_reads_a_seg_nrrd_label(session_file):
    from sammed.evaluation.datasets import EvalCase
    from sammed.evaluation.protocols.base import read_case_volumes

    session, path, _ = session_file
    _, label = read_case_volumes(EvalCase("c", SAMPLE_CT, path))
    np.testing.assert_array_equal(label.array, session.label_map())
