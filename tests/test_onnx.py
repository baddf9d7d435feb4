"""ONNX export of SAM-Med3D and the onnxruntime backend.

The tiny fixture model is exported once, through ``sammed export-onnx``, and the onnxruntime
outputs are compared with the recorded official outputs (the parity tests' strict tier) and
with this package's PyTorch model on the same inputs (stated tolerance ``VS_TORCH``); a Session
on a real CT must give the same masks with either backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sammed.cli import main
from sammed.export import (
    DECODER_FILE,
    ENCODER_FILE,
    EXPORTERS,
    PromptDecoderGraph,
    export_sam_med3d_onnx,
    layout_prompt_tokens,
    read_onnx_metadata,
)
from sammed.inference import Session
from sammed.inference.onnx_backend import OnnxBackendError, OnnxSamMed3D
from sammed.io import read_image
from sammed.models import build_model
from support import SAM3D_FIXTURES, fixture_weights
from test_sam3d_parity import assert_close

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(not SAM3D_FIXTURES.is_dir(), reason="shared parity fixtures not available")

# onnxruntime against this package's PyTorch model, CPU float32 (measured here: <= 1e-5).
VS_TORCH = dict(atol=1e-4, rtol=0)


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, tiny_checkpoint):
    """The tiny fixture weights exported by the command line (the one export of this module)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    assert main(["export-onnx", "--model", "sam-med3d-tiny", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def torch_model():
    model = build_model("sam-med3d-tiny")
    model.load_state_dict(fixture_weights("tiny"))
    return model


@pytest.fixture(scope="module")
def onnx_model(onnx_dir):
    return OnnxSamMed3D.from_dir(onnx_dir)


@pytest.fixture(scope="module")
def fixture_image() -> torch.Tensor:
    return torch.from_numpy(np.load(SAM3D_FIXTURES / "image.npz")["image"])


def test_export_writes_two_self_describing_files(onnx_dir) -> None:
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted([DECODER_FILE, ENCODER_FILE])
    encoder, decoder = read_onnx_metadata(onnx_dir / ENCODER_FILE), read_onnx_metadata(onnx_dir / DECODER_FILE)
    assert (encoder["role"], decoder["role"]) == ("image_encoder", "prompt_decoder")
    for meta in (encoder, decoder):
        assert meta["model"] == "sam-med3d-tiny" and meta["img_size"] == "128" and meta["low_res_size"] == "32"


def test_encoder_matches_official_and_pytorch(onnx_model, torch_model, fixture_image) -> None:
    embedding = onnx_model.encode(fixture_image)
    assert_close(embedding, np.load(SAM3D_FIXTURES / "tiny_encoder.npz")["image_embeddings"], "image_embeddings")
    with torch.no_grad():
        torch.testing.assert_close(embedding, torch_model.image_encoder(fixture_image), **VS_TORCH)


def test_dense_pe_built_into_the_decoder_is_the_official_one(onnx_model) -> None:
    expected = np.load(SAM3D_FIXTURES / "tiny_encoder.npz")["dense_pe"]
    assert_close(onnx_model.dense_pe, expected, "pe")


def assert_matches_recorded_cases(onnx_model, config: str, embedding: torch.Tensor, torch_model=None) -> None:
    """Every recorded decoder case of ``config``, as the parity tests check the PyTorch model."""
    names = sorted(p.stem for p in SAM3D_FIXTURES.glob(f"{config}_case_*.npz"))
    assert len(names) == {"tiny": 2, "turbo": 5}[config]
    for name in names:
        recorded = {k: torch.from_numpy(v) for k, v in np.load(SAM3D_FIXTURES / f"{name}.npz").items()}
        inputs = (embedding, recorded.get("point_coords"), recorded.get("point_labels"), recorded.get("mask_input"))
        low_res, iou = onnx_model.decode(*inputs)
        assert_close(low_res, recorded["low_res_masks"].numpy(), "low_res")
        assert_close(iou, recorded["iou_predictions"].numpy(), "iou")
        final = onnx_model.upscale(low_res)
        if "final_logits_128_f16" in recorded:
            assert_close(final, recorded["final_logits_128_f16"].float().numpy(), "final_f16")
        voxels = final.numel()
        expected_mask = np.unpackbits(recorded["final_mask_packbits"].numpy())[:voxels].reshape(final.shape)
        differ = (final > 0).numpy() != expected_mask.astype(bool)
        assert differ.mean() <= 1e-5 and np.all(np.abs(final.numpy()[differ]) < 1e-3), name  # as the parity tests
        if torch_model is not None:
            with torch.no_grad():
                expected_low_res, expected_iou = torch_model.predict_low_res(*inputs)
            torch.testing.assert_close(low_res, expected_low_res, **VS_TORCH)
            torch.testing.assert_close(iou, expected_iou, **VS_TORCH)


def test_decoder_matches_every_recorded_case(onnx_model, torch_model, fixture_image) -> None:
    """End to end in onnxruntime: its own image embedding feeds its decoder."""
    assert_matches_recorded_cases(onnx_model, "tiny", onnx_model.encode(fixture_image), torch_model)


@pytest.mark.slow
def test_turbo_export_matches_the_official_outputs(tmp_path, fixture_image) -> None:
    model = build_model("sam-med3d-turbo")
    model.load_state_dict(fixture_weights("turbo"))
    onnx_model = OnnxSamMed3D(*export_sam_med3d_onnx(model, tmp_path))
    del model
    embedding = onnx_model.encode(fixture_image)
    recorded = np.load(SAM3D_FIXTURES / "turbo_encoder.npz")
    assert_close(embedding, recorded["image_embeddings"], "image_embeddings")
    assert_close(onnx_model.dense_pe, recorded["dense_pe"], "pe")
    assert_matches_recorded_cases(onnx_model, "turbo", embedding)


def test_decoder_dynamic_prompts_and_no_mask_match_pytorch(onnx_model, torch_model) -> None:
    generator = torch.Generator().manual_seed(7)
    embedding = torch.randn(1, 384, 8, 8, 8, generator=generator)
    for batch, clicks, with_mask in [(1, 1, False), (1, 7, True), (3, 2, True)]:
        coords = torch.randint(0, 128, (batch, clicks, 3), generator=generator).float()
        labels = torch.randint(0, 2, (batch, clicks), generator=generator).float()
        mask = torch.randn(batch, 1, 32, 32, 32, generator=generator) if with_mask else None
        low_res, iou = onnx_model.decode(embedding, coords, labels, mask)
        with torch.no_grad():
            expected_low_res, expected_iou = torch_model.predict_low_res(embedding, coords, labels, mask)
        assert low_res.shape == (batch, 1, 32, 32, 32)
        torch.testing.assert_close(low_res, expected_low_res, **VS_TORCH)
        torch.testing.assert_close(iou, expected_iou, **VS_TORCH)


def test_prompt_graph_equals_the_prompt_encoder_for_points_and_boxes() -> None:
    """The export-friendly token formulation gives the PyTorch prompt encoder's numbers, boxes included."""
    torch.manual_seed(0)
    model = build_model("sam-med3d-tiny", num_point_embeddings=4)  # the box-capable layout
    graph = PromptDecoderGraph(model.prompt_encoder, model.mask_decoder).eval()
    embedding = torch.randn(1, 384, 8, 8, 8)
    clicks = torch.tensor([[[30.0, 40.0, 50.0], [60.0, 61.0, 62.0]]])
    click_labels = torch.tensor([[1.0, 0.0]])
    box = torch.tensor([[20.0, 25.0, 30.0, 90.0, 95.0, 100.0]])
    mask = torch.randn(1, 1, 32, 32, 32)
    prompts = [(clicks, click_labels, None, mask), (clicks, click_labels, box, None), (None, None, box, mask)]
    for coords, labels, boxes, mask_input in prompts:
        tokens, token_labels = layout_prompt_tokens(
            None if coords is None else coords.numpy(), None if labels is None else labels.numpy(),
            None if boxes is None else boxes.numpy(), dims=3,
        )
        has_mask = torch.tensor([0.0 if mask_input is None else 1.0])
        mask_or_zeros = torch.zeros(1, 1, 32, 32, 32) if mask_input is None else mask_input
        with torch.no_grad():
            actual = graph(embedding, torch.from_numpy(tokens), torch.from_numpy(token_labels), mask_or_zeros, has_mask)
            expected = model.predict_low_res(embedding, coords, labels, mask_input, boxes=boxes)
        for a, e in zip(actual, expected):  # bit-identical on the development machine
            torch.testing.assert_close(a, e, atol=1e-6, rtol=0)


def test_session_masks_agree_with_pytorch_on_a_real_ct(onnx_model, torch_model, data_dir) -> None:
    image = read_image(data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz")
    sessions = [Session(torch_model, image), Session(onnx_model, image)]
    assert sessions[1].device.type == "cpu"
    steps = [
        lambda s: s.add_point((84, 58, 20)),
        lambda s: s.add_point((70, 50, 20), positive=False),
        lambda s: (s.new_object(), s.add_box((20, 20, 5), (40, 45, 15)))[1],
    ]
    for step in steps:
        expected, actual = (step(s) for s in sessions)
        assert 0 < expected.sum() < expected.size, "a degenerate mask would make the comparison empty"
        dice = 2 * np.logical_and(expected, actual).sum() / (expected.sum() + actual.sum())
        assert dice >= 0.999, dice
    assert sessions[1].state().iou == pytest.approx(sessions[0].state().iou, abs=1e-4)


def test_segment_with_the_onnx_backend(capsys, tmp_path, onnx_dir, tiny_checkpoint, data_dir) -> None:
    ct = data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    by_torch, by_onnx = tmp_path / "torch.nii.gz", tmp_path / "onnx.nii.gz"
    prompts = ["-p", "84,58,20", "-p", "70,50,20:-"]
    code, err = run_cli(capsys, "segment", ct, *prompts, "-o", by_torch, "-m", "sam-med3d-tiny", "-c", tiny_checkpoint)
    assert code == 0, err
    code, err = run_cli(capsys, "segment", ct, *prompts, "-o", by_onnx, "--backend", "onnx", "--onnx-dir", onnx_dir)
    assert code == 0, err
    expected, actual = read_image(by_torch), read_image(by_onnx)
    assert actual.geometry.same_grid(expected.geometry)
    assert expected.array.any()
    assert np.mean(expected.array != actual.array) < 1e-4


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--backend", "onnx"], "needs --onnx-dir"),
        (["--backend", "onnx", "--onnx-dir", "{missing}"], "not found"),
        (["--backend", "onnx", "--onnx-dir", "{onnx}", "-c", "w.pth"], "--checkpoint is not used"),
        (["--backend", "onnx", "--onnx-dir", "{onnx}", "--precision", "bf16"], "--precision is for the PyTorch"),
        (["--backend", "onnx", "--onnx-dir", "{onnx}", "-m", "sam-med3d-turbo"], "holds sam-med3d-tiny"),
        (["--onnx-dir", "{onnx}", "-c", "w.pth"], "only used with --backend onnx"),
    ],
)
def test_onnx_segment_mistakes_are_one_line_errors(capsys, tmp_path, onnx_dir, data_dir, extra, fragment) -> None:
    out = tmp_path / "previous.nii.gz"
    out.write_bytes(b"previous result")
    ct = data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    args = [a.format(missing=tmp_path / "nowhere", onnx=onnx_dir) for a in extra]
    code, err = run_cli(capsys, "segment", ct, "-p", "84,58,20", "-o", out, *args)
    assert code == 2 and fragment in one_error_line(err)
    assert out.read_bytes() == b"previous result"


def test_unreadable_or_foreign_onnx_files_are_refused(tmp_path, onnx_dir) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ENCODER_FILE).write_bytes(b"not a protobuf")
    (broken / DECODER_FILE).write_bytes((onnx_dir / DECODER_FILE).read_bytes())
    with pytest.raises(OnnxBackendError, match="cannot load"):
        OnnxSamMed3D.from_dir(broken)
    with pytest.raises(OnnxBackendError, match="not a sam-med3d image encoder"):
        OnnxSamMed3D(onnx_dir / DECODER_FILE, onnx_dir / DECODER_FILE)


def test_export_command_mistakes(capsys, monkeypatch, tmp_path) -> None:
    code, err = run_cli(capsys, "export-onnx", "--model", "sam-med3d-tiny", "--out", tmp_path / "x")
    assert code == 2 and "--checkpoint is required" in one_error_line(err)
    with monkeypatch.context() as patch:  # a family without an exporter
        patch.delitem(EXPORTERS, "sam-med3d")
        code, err = run_cli(capsys, "export-onnx", "-m", "sam-med3d-tiny", "--allow-random-weights", "--out", tmp_path / "x")
    assert code == 2 and "not available for sam-med3d-tiny" in one_error_line(err)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, err = run_cli(capsys, "export-onnx", "-m", "sam-med3d-tiny", "--allow-random-weights", "--out", not_a_folder)
    assert code == 2 and "not a folder" in one_error_line(err)
    code, err = run_cli(capsys, "export-onnx", "-m", "sam-med3d-tiny", "--allow-random-weights", "--opset", "12",
                        "--out", tmp_path / "x")
    assert code == 2 and "between 18 and 23" in one_error_line(err)
    assert not (tmp_path / "x").exists()
