"""ONNX export of the 2D families and the onnxruntime backend behind Predictor2D.

Each family is exported once at a small synthetic size (same code paths as the released
models: SAM-Med2D's adapters, SAM's 1024-style windowing with padding, SAM-UNet's ResNet branch
and two-output encoder; random weights) and onnxruntime's outputs are compared with PyTorch's on
the same inputs, through the whole predictor: encoder, prompt tokens, mask prompts, multimask
selection, batched boxes and post-processing. Stated tolerance ``VS_TORCH`` (CPU float32;
measured here at most 2e-6 on these models).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from sammed.cli import main
from sammed.export.onnx import DECODER_FILE, ENCODER_FILE, OnnxExportError, read_onnx_metadata
from sammed.inference.onnx_backend import OnnxBackendError
from sammed.inference.predictor2d import Predictor2D
from sammed.models import build_model
from sammed.models.registry import get_model_spec, spec_of
from sammed.models.sam2d.model import build_sam2d

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from sammed.export.onnx2d import export_sam2d_onnx  # noqa: E402
from sammed.inference.onnx_backend2d import OnnxSam2D  # noqa: E402

VS_TORCH = dict(atol=1e-4, rtol=0)
SIZE = 64
SMALL_VIT = dict(img_size=SIZE, encoder_embed_dim=32, encoder_num_heads=2, window_size=3)
SMALL = {
    "sam-med2d": dict(SMALL_VIT, encoder_depth=2, encoder_global_attn_indexes=(1,)),
    "sam-vit-b": dict(SMALL_VIT, encoder_depth=2, encoder_global_attn_indexes=(1,)),
    "sam-unet-r34": dict(SMALL_VIT, encoder_depth=5, encoder_global_attn_indexes=(1, 2, 3, 4)),
}
FAMILIES = ["sam-med2d", "sam-unet-r34", pytest.param("sam-vit-b", marks=pytest.mark.slow)]


def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(7)
    model = build_model(name, **SMALL[name])
    for parameter in model.parameters():  # zero-initialised tables would hide position bugs
        if parameter.abs().sum() == 0:
            parameter.data.normal_(0, 0.02)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (PyTorch model, its export folder); each family is exported once."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            model = small_model(name)
            folder = tmp_path_factory.mktemp("onnx2d") / name
            export_sam2d_onnx(model, folder)
            cache[name] = model, folder
        return cache[name]

    return get


def predictors(model, folder) -> tuple[Predictor2D, Predictor2D]:
    """The PyTorch and onnxruntime predictors with the family's pipeline at the small size."""
    pipeline = dataclasses.replace(spec_of(model).preprocessing, model_size=SIZE)
    return Predictor2D(model, pipeline), Predictor2D(OnnxSam2D.from_dir(folder))


def picture(seed: int = 0) -> np.ndarray:
    """A 50 x 70 RGB picture with structure (a bright disc on noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:50, :70]
    disc = ((yy - 22) ** 2 + (xx - 30) ** 2 < 150) * 120
    return np.clip(rng.integers(0, 100, (50, 70, 3)) + disc[..., None], 0, 255).astype(np.uint8)


PROMPTS = {
    "one click": dict(point_coords=np.array([[30.0, 22.0]]), point_labels=np.array([1])),
    "clicks": dict(point_coords=np.array([[30.0, 22.0], [60.0, 5.0]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([12.0, 8.0, 48.0, 37.0])),
    "click and box": dict(
        point_coords=np.array([[30.0, 22.0]]), point_labels=np.array([1]), box=np.array([12, 8, 48, 37])
    ),
    "two boxes": dict(box=np.array([[12.0, 8.0, 48.0, 37.0], [0.0, 0.0, 20.0, 20.0]])),
}


def assert_same_outputs(torch_out, onnx_out, what: str) -> None:
    for name, a, b in zip(("masks/logits", "scores", "low-res logits"), torch_out, onnx_out):
        assert a.shape == b.shape, f"{what} {name}: {a.shape} vs {b.shape}"
        actual, expected = torch.from_numpy(b), torch.from_numpy(a)
        torch.testing.assert_close(actual, expected, equal_nan=True, **VS_TORCH, msg=f"{what} {name}")


@pytest.mark.parametrize("name", FAMILIES)
def test_onnxruntime_matches_pytorch_through_the_predictor(exported, name: str) -> None:
    model, folder = exported(name)
    torch_predictor, onnx_predictor = predictors(model, folder)
    image = picture()
    torch_predictor.set_image(image)
    onnx_predictor.set_image(image)
    features = [p.get_image_embedding() for p in (torch_predictor, onnx_predictor)]
    parts = [f if isinstance(f, tuple) else (f,) for f in features]  # SAM-UNet: embedding + fused map
    for expected, actual in zip(*parts):
        torch.testing.assert_close(actual, expected, **VS_TORCH)

    for what, prompt in PROMPTS.items():
        for multimask in (True, False):
            both = (torch_predictor, onnx_predictor)
            logits = [p.predict(**prompt, multimask_output=multimask, return_logits=True) for p in both]
            assert_same_outputs(*logits, f"{name} {what} multimask={multimask}")
            masks = [p.predict(**prompt, multimask_output=multimask)[0] for p in both]
            near_threshold = np.abs(logits[0][0]) < 1e-4  # SAM-Med2D's sigmoid > 0.5 is logit > 0 too
            assert np.array_equal(masks[0] | near_threshold, masks[1] | near_threshold), what
        # A mask prompt from the previous low-res output, shared by every prompt set.
        low_res = torch_predictor.predict(**prompt)[2]
        previous = torch_predictor.mask_prompt_from(low_res.reshape(-1, *low_res.shape[-2:])[:1])
        refined = [p.predict(**prompt, mask_input=previous, return_logits=True) for p in both]
        assert_same_outputs(*refined, f"{name} {what} with a mask prompt")


def test_exported_files_describe_themselves(exported) -> None:
    _, folder = exported("sam-med2d")
    encoder, decoder = read_onnx_metadata(folder / ENCODER_FILE), read_onnx_metadata(folder / DECODER_FILE)
    assert (encoder["role"], decoder["role"]) == ("image_encoder", "prompt_decoder")
    for meta in (encoder, decoder):
        assert meta["model"] == "sam-med2d" and meta["family"] == "sam-med2d" and meta["dims"] == "2"
        assert meta["img_size"] == str(SIZE) and meta["low_res_size"] == str(SIZE // 4)
    model = OnnxSam2D.from_dir(folder)
    assert model.spec.name == "sam-med2d" and model.spec.preprocessing.model_size == SIZE


def test_backend_refuses_mixed_or_missing_files(exported, tmp_path) -> None:
    _, med = exported("sam-med2d")
    _, unet = exported("sam-unet-r34")
    with pytest.raises(OnnxBackendError, match="different models"):
        OnnxSam2D(med / ENCODER_FILE, unet / DECODER_FILE)
    with pytest.raises(OnnxBackendError, match="is not a .*prompt decoder exported by sammed"):
        OnnxSam2D(med / ENCODER_FILE, med / ENCODER_FILE)
    with pytest.raises(OnnxBackendError, match="not found"):
        OnnxSam2D.from_dir(tmp_path / "nothing")


def test_export_needs_a_registry_built_2d_model() -> None:
    model = build_sam2d(get_model_spec("sam-med2d").config.with_overrides(**SMALL["sam-med2d"]))  # not via the registry
    with pytest.raises(OnnxExportError, match="build_model"):
        export_sam2d_onnx(model, "unused")


def test_cli_segments_with_the_onnx_backend(exported, tmp_path, capsys) -> None:
    """`sammed segment --backend onnx` on a 2D export: the dimensionality comes from the files."""
    model, folder = exported("sam-med2d")
    image = picture(1)
    source = tmp_path / "picture.png"
    PILImage.fromarray(image).save(source)
    out = tmp_path / "mask.png"
    code = main(["segment", str(source), "--box", "12,8,48,37", "--out", str(out), "--backend", "onnx",
                 "--onnx-dir", str(folder)])
    assert code == 0, capsys.readouterr().err
    written = np.asarray(PILImage.open(out))
    assert written.shape == image.shape[:2] and set(np.unique(written)) <= {0, 255}
    # The same prediction through the API: SAM-Med2D sees the picture in BGR order, one box.
    _, onnx_predictor = predictors(model, folder)
    onnx_predictor.set_image(image, image_format="BGR")
    expected = onnx_predictor.predict(box=np.array([12, 8, 48, 37]), multimask_output=False)[0][0]
    assert np.array_equal(written == 255, expected)

    code = main(["segment", str(source), "--box", "12,8,48,37", "--out", str(tmp_path / "other.png"),
                 "--backend", "onnx", "--onnx-dir", str(folder), "--model", "sam-unet-r34"])
    err = capsys.readouterr().err
    assert code == 2 and "holds sam-med2d, not sam-unet-r34" in err and "Traceback" not in err
    assert not (tmp_path / "other.png").exists()


def test_export_onnx_command_then_segment_with_a_2d_entry(monkeypatch, tmp_path, capsys) -> None:
    """`sammed export-onnx --model NAME` for a 2D entry (here ViT-H's entry shrunk to the small size:
    the real one is a 2.5 GB export), then `sammed segment --backend onnx` with the folder."""
    from sammed.models import REGISTRY

    spec = REGISTRY["sam-vit-h"]
    small = dict(SMALL["sam-vit-b"], encoder_num_heads=2)
    monkeypatch.setitem(REGISTRY, "sam-vit-h", dataclasses.replace(spec, config=spec.config.with_overrides(**small)))
    folder = tmp_path / "vit-h"
    code = main(["export-onnx", "--model", "sam-vit-h", "--allow-random-weights", "--out", str(folder)])
    assert code == 0, capsys.readouterr().err
    assert read_onnx_metadata(folder / DECODER_FILE)["model"] == "sam-vit-h"
    source, out = tmp_path / "picture.png", tmp_path / "mask.png"
    PILImage.fromarray(picture(2)).save(source)
    code = main(["segment", str(source), "--point", "30,22", "--out", str(out), "--backend", "onnx",
                 "--onnx-dir", str(folder)])
    assert code == 0, capsys.readouterr().err
    assert np.asarray(PILImage.open(out)).shape == (50, 70)
