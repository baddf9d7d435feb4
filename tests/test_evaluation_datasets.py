"""Dataset layouts: nnU-Net raw, SAM-Med3D training tree, SA-Med2D JSON lists, a single pair."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sammed.evaluation import DatasetError, load_dataset
from sammed.evaluation.datasets import mask_class_name


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def make_nnunet(root: Path, examples: Path, labels: dict | None = None) -> Path:
    """Two cases (CT and MR examples) in nnU-Net raw layout, as symlinks."""
    for case, image, label in (("ct01", "example_ct_sm", "example_seg"), ("mr01", "example_mr_sm", "example_seg_mr")):
        _link(examples / f"{image}.nii.gz", root / "imagesTr" / f"{case}_0000.nii.gz")
        _link(examples / f"{label}.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 2,
            "labels": labels or {"background": 0, "spleen": 1, "kidney_right": 2, "liver": 5}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def examples(data_dir) -> Path:
    return data_dir / "totalsegmentator_examples"


def test_nnunet_v2(tmp_path, examples):
    ds = load_dataset(make_nnunet(tmp_path / "Dataset001", examples))
    assert ds.layout == "nnunet" and ds.dims == 3 and len(ds) == 2
    assert [c.case_id for c in ds.cases] == ["ct01", "mr01"]
    assert ds.cases[0].image.name == "ct01_0000.nii.gz" and ds.cases[0].label.name == "ct01.nii.gz"
    assert dict(ds.label_names) == {1: "spleen", 2: "kidney_right", 5: "liver"}
    assert ds.cases[1].modality == "CT"


def test_nnunet_v1_labels_and_errors(tmp_path, examples):
    root = make_nnunet(tmp_path / "v1", examples, labels={"0": "background", "1": "spleen"})
    assert dict(load_dataset(root).label_names) == {1: "spleen"}
    regions = make_nnunet(tmp_path / "regions", examples, labels={"background": 0, "kidney": [2, 3]})
    with pytest.raises(DatasetError, match="region-based"):
        load_dataset(regions)
    (root / "imagesTr" / "mr01_0000.nii.gz").unlink()
    with pytest.raises(DatasetError, match="mr01.nii.gz has no image"):
        load_dataset(root)


def test_sammed3d_layout(tmp_path, examples):
    for organ, dataset, case in (("liver", "ct_demo", "a"), ("liver", "mr_demo", "b"), ("spleen", "ct_demo", "c")):
        base = tmp_path / organ / dataset
        _link(examples / "example_ct_sm.nii.gz", base / "imagesTr" / f"{case}.nii.gz")
        _link(examples / "example_seg.nii.gz", base / "labelsTr" / f"{case}.nii.gz")
    ds = load_dataset(tmp_path)
    assert ds.layout == "sam-med3d"
    assert [c.case_id for c in ds.cases] == ["liver/ct_demo/a", "liver/mr_demo/b", "spleen/ct_demo/c"]
    assert [c.modality for c in ds.cases] == ["CT", "", "CT"]
    assert [dict(c.label_names) for c in ds.cases] == [{1: "liver"}, {1: "liver"}, {1: "spleen"}]
    one = load_dataset(tmp_path / "spleen" / "ct_demo")
    assert [c.case_id for c in one.cases] == ["c"]


def test_sammed2d_lists(data_dir):
    folder = data_dir / "sammed2d_demo_2d"
    test_list = load_dataset(folder / "label2image_test.json")
    assert test_list.layout == "sa-med2d" and test_list.dims == 2
    raw = json.loads((folder / "label2image_test.json").read_text())
    assert sum(len(c.masks) for c in test_list.cases) == len(raw)
    assert len(test_list) == len(set(raw.values()))
    case = next(c for c in test_list.cases if c.case_id == "amos_0004_75")
    keys = [k for k, _ in case.masks]
    assert "liver_000" in keys and all(p.is_file() for _, p in case.masks)
    assert mask_class_name("liver_000") == "liver"
    assert mask_class_name("lung_lower_lobe_left_001") == "lung_lower_lobe_left"
    train = load_dataset(folder / "image2label_train.json")
    assert sum(len(c.masks) for c in train.cases) == sum(len(v) for v in json.loads(
        (folder / "image2label_train.json").read_text()).values())
    assert load_dataset(folder).cases == test_list.cases  # the folder: the test list first


def test_single_pair(examples, tmp_path):
    ds = load_dataset(examples / "example_mr_sm.nii.gz", label=examples / "example_seg_mr.nii.gz")
    assert ds.layout == "pair" and ds.dims == 3 and ds.cases[0].case_id == "example_mr_sm"
    with pytest.raises(DatasetError, match="label not found"):
        load_dataset(examples / "example_mr_sm.nii.gz", label=tmp_path / "nope.nii.gz")


def test_unknown_layouts(tmp_path):
    with pytest.raises(DatasetError, match="dataset not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_dataset(tmp_path / "empty")
    bad = tmp_path / "list.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(bad)
