"""`sammed segment` with 2D models: every 2D model name on the shared demo pictures, slices of
shared volumes written back on the volume's grid, 2D DICOM, and every bad-input path (one line,
exit 2, nothing written).

Weights: SAM-Med2D (both entries, from one official-layout file), SAM-UNet R34/R50 and SAM ViT-B
use the parity fixtures' deterministic weights at their real size, saved in the official file
layouts. ViT-L and ViT-H have no fixtures and their real sizes (1.2 / 2.5 GB, a 1024 encoder of
24 / 32 blocks) would take minutes per run on two cores, so their CLI runs use the registry entry
with a shrunken encoder (2 blocks, width 64; same family pipeline, prompt encoder and decoder)
and random weights; their full architectures are checked in test_sam2d_parity.
"""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from sammed.cli import main
from sammed.inference.predictor2d import Predictor2D
from sammed.io import read_image
from sammed.io.image2d import read_image_2d
from sammed.models import REGISTRY, build_model
from support import FIXTURES_DIR, synth_weights

DEMO_IMAGE = "s0114_111"  # 258 x 181: not square, so a swapped axis shows
DEMO_MASK = "s0114_111_aorta_000"
SHRUNKEN = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,))
MODEL_NAMES = [
    "sam-med2d",
    "sam-med2d-no-adapter",
    "sam-unet-r34",
    "sam-unet-r50",
    pytest.param("sam-vit-b", marks=pytest.mark.slow),
    "sam-vit-l",
    "sam-vit-h",
]


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def box_of(mask_path) -> str:
    rows, cols = np.nonzero(np.asarray(PILImage.open(mask_path)))
    return f"{cols.min()},{rows.min()},{cols.max()},{rows.max()}"


# --- weights ------------------------------------------------------------------------------------


def _state_dict(name: str) -> dict[str, torch.Tensor]:
    if name in ("sam-med2d", "sam-med2d-no-adapter"):
        from test_sam2d_parity import recorded_model  # cached: the parity tests build it too

        return recorded_model("sam-med2d").state_dict()
    if name in ("sam-unet-r34", "sam-unet-r50"):
        from test_sam_unet_parity import UNET, VARIANTS, fixture_state_dict

        return fixture_state_dict(UNET / VARIANTS[name[-3:]].manifest)
    if name == "sam-vit-b":
        return synth_weights().make_state_dict(FIXTURES_DIR / "sam_vit_b" / "manifest.tsv", 1301)
    torch.manual_seed(0)
    return build_model(name).state_dict()  # ViT-L/H: the shrunken entry, random weights


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """name -> a weights file in the official layout (SAM: bare state dict; others: {'model': sd})."""
    folder = tmp_path_factory.mktemp("weights2d")
    written: dict = {}

    def get(name: str):
        key = "sam-med2d" if name == "sam-med2d-no-adapter" else name
        if key not in written:
            state = _state_dict(key)
            written[key] = folder / f"{key}.pth"
            torch.save(state if key.startswith("sam-vit") else {"model": state}, written[key])
        return written[key]

    return get


@pytest.fixture
def shrunken_vit(monkeypatch):
    """ViT-L/H registry entries with a 2-block, 64-wide encoder (see the module docstring)."""
    for name in ("sam-vit-l", "sam-vit-h"):
        spec = REGISTRY[name]
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(spec, config=spec.config.with_overrides(**SHRUNKEN)))


# --- done-when: every 2D model, pictures and slices ---------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_2d_model_writes_a_png_of_the_picture_size(
    name, capsys, tmp_path, data_dir, checkpoint, shrunken_vit
) -> None:
    demo = data_dir / "sammed2d_demo_2d"
    source = demo / "images" / f"{DEMO_IMAGE}.png"
    out = tmp_path / "mask.png"
    box = box_of(demo / "masks" / f"{DEMO_MASK}.png")
    code, err = run_cli(capsys, "segment", source, "--model", name, "--box", box, "--out", out,
                        "--checkpoint", checkpoint(name))
    assert code == 0, err
    written = np.asarray(PILImage.open(out))
    assert written.shape == (181, 258) and written.dtype == np.uint8
    assert set(np.unique(written)) <= {0, 255}
    assert f"wrote {out} ({int((written == 255).sum())} pixels)" in err


def test_cli_mask_is_the_predictor_mask(capsys, tmp_path, data_dir, checkpoint) -> None:
    """Points and a box through the CLI give Predictor2D's mask (SAM-Med2D sees BGR, as trained)."""
    from test_sam2d_parity import recorded_model

    source = data_dir / "sammed2d_demo_2d" / "images" / "amos_0006_90.png"
    out = tmp_path / "liver.png"
    code, err = run_cli(capsys, "segment", source, "-m", "sam-med2d", "-c", checkpoint("sam-med2d"),
                        "--box", "300,150,470,380", "--point", "380,260", "--point", "320,170:-", "-o", out)
    assert code == 0, err
    predictor = Predictor2D(recorded_model("sam-med2d"))
    predictor.set_image(np.asarray(PILImage.open(source).convert("RGB")), image_format="BGR")
    masks, _, _ = predictor.predict(
        point_coords=np.array([[380, 260], [320, 170]]), point_labels=np.array([1, 0]),
        box=np.array([300, 150, 470, 380]), multimask_output=False,
    )
    assert np.array_equal(np.asarray(PILImage.open(out)) == 255, masks[0])


def test_slice_of_a_volume_writes_the_volume_grid(capsys, tmp_path, data_dir, checkpoint) -> None:
    from test_sam2d_parity import recorded_model

    ct = data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    out = tmp_path / "slice_mask.nii.gz"
    code, err = run_cli(capsys, "segment", ct, "--slice", "12", "--axis", "j", "--box", "20,5,90,25",
                        "-m", "sam-med2d", "-c", checkpoint("sam-med2d"), "-o", out)
    assert code == 0, err
    source, written = nib.load(ct), nib.load(out)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    assert read_image(out).geometry.same_grid(read_image(ct).geometry)
    data = np.asarray(written.dataobj)
    assert not np.delete(data, 12, axis=1).any()  # only the chosen slice is filled
    # The filled slice is the predictor's mask of the windowed slice (x = i, y = k for --axis j).
    image = read_image_2d(ct, 12, "j")
    predictor = Predictor2D(recorded_model("sam-med2d"))
    predictor.set_image(image.pixels, image_format="BGR")
    expected = predictor.predict(box=np.array([20, 5, 90, 25]), multimask_output=False)[0][0]
    assert np.array_equal(data[:, 12, :].T == 1, expected)


def test_2d_dicom_and_dicom_series_slice(capsys, tmp_path, data_dir, checkpoint) -> None:
    folder = data_dir / "dcmqi_ct3slice" / "ct-3slice"
    out = tmp_path / "dicom.png"
    common = ["-m", "sam-med2d-no-adapter", "-c", checkpoint("sam-med2d-no-adapter"), "--box", "250,200,400,330"]
    code, err = run_cli(capsys, "segment", folder / "01.dcm", *common, "-o", out)
    assert code == 0, err
    assert np.asarray(PILImage.open(out)).shape == (512, 512)
    series_out = tmp_path / "series.nrrd"
    code, err = run_cli(capsys, "segment", folder, "--slice", "1", *common, "-o", series_out)
    assert code == 0, err
    assert read_image(series_out).geometry.same_grid(read_image(folder).geometry)


# --- bad input: one line, exit 2, nothing written -------------------------------------------------


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)).save(path)
    return path


def segment_2d(capsys, image, out, *extra, model="sam-med2d"):
    """A 2D run that must fail before loading the (non-existent) weights."""
    return run_cli(capsys, "segment", image, "-m", model, "-c", out.parent / "never-read.pth", "-o", out, *extra)


@pytest.mark.parametrize(
    "mode, fragment",
    [("LA", "2 channels"), ("CMYK", "CMYK")],
)
def test_unusable_channel_counts_are_refused(capsys, tmp_path, mode, fragment) -> None:
    source = tmp_path / ("image.tif" if mode == "CMYK" else "image.png")
    PILImage.new(mode, (30, 20)).save(source)
    out = tmp_path / "mask.png"
    assert_user_error(*segment_2d(capsys, source, out, "--box", "1,1,10,10"), fragment)
    assert not out.exists()


def test_rgba_keeps_the_colour_and_drops_alpha(tmp_path) -> None:
    rgba = np.random.default_rng(1).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    PILImage.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image_2d(tmp_path / "rgba.png")
    assert np.array_equal(image.pixels, rgba[:, :, :3]) and image.volume_slice is None


def test_volume_without_slice_and_slice_out_of_range(capsys, tmp_path, data_dir) -> None:
    ct = data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    out = tmp_path / "mask.nii.gz"
    assert_user_error(*segment_2d(capsys, ct, out, "--box", "1,1,10,10"), "3D volume", "--slice")
    assert_user_error(*segment_2d(capsys, ct, out, "--slice", "30", "--box", "1,1,10,10"), "slice 30", "0 to 29")
    assert_user_error(*segment_2d(capsys, ct, out, "--slice", "-1", "--box", "1,1,10,10"), "--slice", "-1")
    assert_user_error(*segment_2d(capsys, ct, tmp_path / "m.png", "--slice", "3", "--box", "1,1,10,10"), ".nii.gz")
    assert not out.exists() and not (tmp_path / "m.png").exists()


@pytest.mark.parametrize(
    "prompt, fragment",
    [
        (["--box", "10,5,70,30"], "outside the image of 60 x 40"),
        (["--box=-3,5,20,30"], "box corner at x=-3"),
        (["--point", "5,40"], "point at x=5, y=40"),
        (["--point", "5,4,3"], "two pixel coordinates"),
        (["--box", "1,2,3"], "four pixel coordinates"),
        (["--point", "5,4:x"], "must be + or -"),
        (["--point", "a,4"], "x,y"),
        ([], "at least one --point or a --box"),
        (["--box", "1,1,5,5", "--world"], "--world is for 3D models"),
        (["--box", "1,1,5,5", "--slice", "0"], "2D picture"),
        (["--box", "1,1,5,5", "--precision", "bf16"], "float32"),
    ],
)
def test_bad_prompts_and_flags(capsys, tmp_path, picture, prompt, fragment) -> None:
    out = tmp_path / "mask.png"
    out.write_bytes(b"an earlier result")
    assert_user_error(*segment_2d(capsys, picture, out, *prompt), fragment)
    assert out.read_bytes() == b"an earlier result"  # not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "picture.png"]  # no temp files


def test_wrong_output_format_and_missing_checkpoint(capsys, tmp_path, picture) -> None:
    assert_user_error(*segment_2d(capsys, picture, tmp_path / "mask.nii.gz", "--box", "1,1,5,5"), ".png")
    code, err = run_cli(capsys, "segment", picture, "-m", "sam-med2d", "--box", "1,1,5,5", "-o", tmp_path / "m.png")
    assert_user_error(code, err, "--checkpoint is required", "sam-med2d_b.pth")
    assert not (tmp_path / "mask.nii.gz").exists() and not (tmp_path / "m.png").exists()


def test_unreadable_pictures(capsys, tmp_path, picture) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(picture.read_bytes()[:100])
    out = tmp_path / "mask.png"
    assert_user_error(*segment_2d(capsys, truncated, out, "--box", "1,1,5,5"), "cannot read image")
    pages = tmp_path / "pages.tif"
    PILImage.new("L", (8, 8)).save(pages, save_all=True, append_images=[PILImage.new("L", (8, 8))])
    assert_user_error(*segment_2d(capsys, pages, out, "--box", "1,1,5,5"), "2 pages")
    assert not out.exists()


def test_2d_image_to_a_3d_model(capsys, tmp_path, picture, tiny_checkpoint) -> None:
    out = tmp_path / "mask.nii.gz"
    code, err = run_cli(capsys, "segment", picture, "--point", "3,4,0", "-o", out, "-m", "sam-med3d-tiny",
                        "-c", tiny_checkpoint)
    assert_user_error(code, err, "is a 2D image", "2D model")
    code, err = run_cli(capsys, "segment", picture, "--point", "3,4,0", "-o", out, "-c", tiny_checkpoint)
    assert_user_error(code, err, "is a 2D image", "sam-med3d-turbo")
    assert not out.exists()


def test_slice_flag_with_a_3d_model(capsys, tmp_path, data_dir, tiny_checkpoint) -> None:
    ct = data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    out = tmp_path / "mask.nii.gz"
    code, err = run_cli(capsys, "segment", ct, "--slice", "3", "--point", "84,58,20", "-o", out,
                        "-m", "sam-med3d-tiny", "-c", tiny_checkpoint)
    assert_user_error(code, err, "--slice/--axis are for 2D models")
    assert not out.exists()


def test_checkpoint_of_the_wrong_2d_entry_names_the_right_one(capsys, tmp_path, picture, checkpoint) -> None:
    """A SAM-Med2D file given for SAM ViT-B, and a lean SAM-Med2D* file for SAM-Med2D."""
    out = tmp_path / "mask.png"
    code, err = run_cli(capsys, "segment", picture, "-m", "sam-vit-b", "-c", checkpoint("sam-med2d"), "--box",
                        "1,1,5,5", "-o", out)
    assert_user_error(code, err, "use model 'sam-med2d' or 'sam-med2d-no-adapter'")
    lean = tmp_path / "lean.pth"
    from sammed.models.sam2d import drop_adapter_weights

    torch.save({"model": drop_adapter_weights(torch.load(checkpoint("sam-med2d"), weights_only=True)["model"])}, lean)
    code, err = run_cli(capsys, "segment", picture, "-m", "sam-med2d", "-c", lean, "--box", "1,1,5,5", "-o", out)
    assert_user_error(code, err, "use model 'sam-med2d-no-adapter'")
    assert not out.exists()
