"""Checkpoint loading: official layouts, prefixes, safety, and clear mismatch errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from sammed.errors import CheckpointError, UnknownModelError
from sammed.models import build_model, get_model_spec, list_models


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("sam-med3d-tiny").state_dict()


def _same_weights(model, state) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_official_layout_with_namespace_metadata(tmp_path, tiny_state) -> None:
    path = tmp_path / "official.pth"
    args = argparse.Namespace(model_type="vit_b_ori", lr=8e-5)
    torch.save({"model_state_dict": tiny_state, "epoch": 3, "args": args, "best_dice": 0.9}, path)
    model = build_model("sam-med3d-tiny", checkpoint=path)
    assert _same_weights(model, tiny_state)


def test_bare_and_ddp_prefixed_state_dicts(tmp_path, tiny_state) -> None:
    bare = tmp_path / "bare.pth"
    torch.save(tiny_state, bare)
    assert _same_weights(build_model("sam-med3d-tiny", checkpoint=bare), tiny_state)

    ddp = tmp_path / "ddp.pth"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, ddp)
    assert _same_weights(build_model("sam-med3d-tiny", checkpoint=ddp), tiny_state)


class Exploit:
    """Unpickling this would run os.system: the loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_code_is_refused_unless_trusted(tmp_path, tiny_state) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": tiny_state, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError) as info:
        build_model("sam-med3d-tiny", checkpoint=path)
    message = str(info.value)
    assert "arbitrary code" in message and "--trust-checkpoint" in message
    assert "\n" not in message


class RunInfo:
    """A harmless custom class: still not loadable without trusting the file."""

    def __init__(self) -> None:
        self.note = "trained on site A"


def test_trusted_file_with_custom_class_loads(tmp_path, tiny_state) -> None:
    path = tmp_path / "custom.pth"
    torch.save({"model_state_dict": tiny_state, "extra": RunInfo()}, path)
    with pytest.raises(CheckpointError):
        build_model("sam-med3d-tiny", checkpoint=path)
    model = build_model("sam-med3d-tiny", checkpoint=path, trust_checkpoint=True)
    assert _same_weights(model, tiny_state)


def test_mismatched_keys_are_listed(tmp_path, tiny_state) -> None:
    broken = dict(tiny_state)
    broken.pop("mask_decoder.iou_token.weight")
    broken["image_encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as info:
        build_model("sam-med3d-tiny", checkpoint=path)
    message = str(info.value)
    assert "missing 1 key(s): mask_decoder.iou_token.weight" in message
    assert "unexpected 1 key(s): image_encoder.extra.weight" in message


def test_wrong_architecture_reports_shapes(tmp_path, tiny_state) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(tiny_state, path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        build_model("sam-med3d-turbo", checkpoint=path, encoder_depth=4, encoder_global_attn_indexes=(1, 3))


def test_box_variant_has_its_own_entry_and_hint(tmp_path, tiny_state) -> None:
    box_state = dict(tiny_state)
    box_state["prompt_encoder.point_embeddings.2.weight"] = torch.randn(1, 384)
    box_state["prompt_encoder.point_embeddings.3.weight"] = torch.randn(1, 384)
    path = tmp_path / "bbox.pth"
    torch.save({"model_state_dict": box_state}, path)
    with pytest.raises(CheckpointError, match="sam-med3d-turbo-bbox"):
        build_model("sam-med3d-tiny", checkpoint=path)
    overrides = dict(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3))
    model = build_model("sam-med3d-turbo-bbox", checkpoint=path, **overrides)
    assert model.prompt_encoder.supports_boxes
    with torch.no_grad():
        sparse, _ = model.prompt_encoder(points=None, boxes=torch.tensor([[10.0, 10, 10, 60, 70, 80]]), masks=None)
    assert sparse.shape == (1, 2, 384)


def test_turbo_has_no_box_embedding() -> None:
    model = build_model("sam-med3d-tiny")
    with pytest.raises(ValueError, match="no box embedding"):
        model.prompt_encoder(points=None, boxes=torch.zeros(1, 6), masks=None)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        build_model("sam-med3d-tiny", checkpoint=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_model("sam-med3d-tiny", checkpoint=junk)
    text = tmp_path / "list.pth"
    torch.save([1, 2, 3], text)
    with pytest.raises(CheckpointError, match="not a state dict"):
        build_model("sam-med3d-tiny", checkpoint=text)


def test_registry_entries() -> None:
    assert {"sam-med3d-turbo", "sam-med3d-turbo-bbox", "sam-med3d-tiny"} <= set(list_models())
    turbo = get_model_spec("sam-med3d-turbo")
    assert turbo.checkpoint_file == "sam_med3d_turbo.pth"
    assert turbo.license == "Apache-2.0" and turbo.source_url.startswith("https://")
    assert get_model_spec("vit_b_ori") is turbo
    with pytest.raises(UnknownModelError, match="available"):
        get_model_spec("sam-med4d")


def test_builder_overrides() -> None:
    model = build_model("sam-med3d-turbo", encoder_embed_dim=48, encoder_depth=2, encoder_num_heads=2,
                        encoder_global_attn_indexes=[1])
    assert len(model.image_encoder.blocks) == 2
    assert model.image_encoder.blocks[0].window_size == 14 and model.image_encoder.blocks[1].window_size == 0
    with pytest.raises(TypeError, match="unknown SAM-Med3D config"):
        build_model("sam-med3d-turbo", widht=3)


def test_weights_are_mapped_not_copied_and_keep_the_model_dtypes(tmp_path, tiny_state) -> None:
    """build_model maps a zip file and takes its tensors; legacy and half-precision files still load."""
    from sammed.models.checkpoint import read_checkpoint

    path = tmp_path / "zip.pth"
    torch.save({"model_state_dict": tiny_state}, path)
    state = read_checkpoint(path, mmap=True)["model_state_dict"]
    assert _same_weights(build_model("sam-med3d-tiny", checkpoint=path), tiny_state)
    assert not any(p.is_meta for p in build_model("sam-med3d-tiny", checkpoint=path).parameters())
    assert all(p.requires_grad for p in build_model("sam-med3d-tiny", checkpoint=path).parameters())
    if Path("/proc/self/maps").exists():  # the tensor lies in a mapping of the file
        pointer = state["image_encoder.pos_embed"].data_ptr()
        spans = [line.split()[0].split("-") for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(str(path))]
        assert any(int(lo, 16) <= pointer < int(hi, 16) for lo, hi in spans)

    legacy = tmp_path / "legacy.pth"
    torch.save({"model_state_dict": tiny_state}, legacy, _use_new_zipfile_serialization=False)
    assert _same_weights(build_model("sam-med3d-tiny", checkpoint=legacy), tiny_state)

    half = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in tiny_state.items()}, half)
    model = build_model("sam-med3d-tiny", checkpoint=half)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_non_finite_weights_are_refused_even_when_sums_overflow(tmp_path, tiny_state) -> None:
    huge = dict(tiny_state)
    huge["image_encoder.pos_embed"] = torch.full_like(tiny_state["image_encoder.pos_embed"], 3e38)  # sums to inf
    path = tmp_path / "huge.pth"
    torch.save(huge, path)
    assert _same_weights(build_model("sam-med3d-tiny", checkpoint=path), huge)
    for bad in (float("nan"), float("inf")):
        broken = dict(tiny_state)
        broken["mask_decoder.iou_token.weight"] = tiny_state["mask_decoder.iou_token.weight"].clone()
        broken["mask_decoder.iou_token.weight"][0, 1] = bad
        torch.save(broken, path)
        with pytest.raises(CheckpointError, match="NaN or infinite values in 1 tensor"):
            build_model("sam-med3d-tiny", checkpoint=path)
