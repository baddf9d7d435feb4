"""The `sammed` command: successful runs keep the input geometry; user mistakes exit 2 in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sammed.cli import main
from sammed.io import read_image


@pytest.fixture(scope="module")
def sample_ct(data_dir):
    return data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz"


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_segment_writes_mask_with_input_geometry(capsys, tmp_path, sample_ct, tiny_checkpoint) -> None:
    out = tmp_path / "mask.nii.gz"
    code, err = run_cli(
        capsys, "segment", sample_ct, "--point", "84,58,20", "--point", "70,50,20:-",
        "--out", out, "--model", "sam-med3d-tiny", "--checkpoint", tiny_checkpoint,
    )
    assert code == 0, err
    assert f"wrote {out}" in err
    source, written = nib.load(sample_ct), nib.load(out)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    assert read_image(out).geometry.same_grid(read_image(sample_ct).geometry)
    assert written.get_fdata().any()


def test_world_prompt_matches_voxel_prompt(capsys, tmp_path, sample_ct, tiny_checkpoint) -> None:
    image = read_image(sample_ct)
    world = image.index_to_world((84, 58, 20), "RAS")
    by_voxel, by_world = tmp_path / "v.nrrd", tmp_path / "w.nrrd"
    common = ["--model", "sam-med3d-tiny", "--checkpoint", tiny_checkpoint]
    assert run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "-o", by_voxel, *common)[0] == 0
    point = ",".join(repr(float(v)) for v in world)
    assert run_cli(capsys, "segment", sample_ct, "--world", "-p", point, "-o", by_world, *common)[0] == 0
    voxel_mask, world_mask = read_image(by_voxel).array, read_image(by_world).array
    assert voxel_mask.any()
    # Float round-off in world->index may move the window by ~1e-12 mm: allow boundary ties only.
    assert np.mean(voxel_mask != world_mask) < 1e-4


@pytest.mark.slow
def test_official_layout_turbo_checkpoint_through_the_cli(tmp_path, data_dir, shared_dir) -> None:
    """Done-when: a {'model_state_dict'} file from synth_weights.py --save loads strictly via the CLI."""
    fixtures = shared_dir / "fixtures"
    checkpoint = tmp_path / "turbo.pth"
    subprocess.run(
        [sys.executable, fixtures / "synth_weights.py", fixtures / "sam_med3d" / "manifest_turbo.tsv", "1234",
         "--save", checkpoint],
        check=True, capture_output=True,
    )
    ct = data_dir / "totalsegmentator_examples" / "example_ct.nii.gz"
    out = tmp_path / "liver.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "sammed", "segment", ct, "--point", "84,58,90", "--out", out,
         "--checkpoint", checkpoint],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(ct))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)


def test_entry_point_exit_status_for_user_error(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sammed", "segment", tmp_path / "missing.nii.gz", "-p", "1,2,3", "-o",
         tmp_path / "out.nii.gz", "--checkpoint", tmp_path / "w.pth"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("sammed: error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def _write(array: np.ndarray, path, spacing=None) -> str:
    image = sitk.GetImageFromArray(array)
    if spacing:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture()
def bad_inputs(tmp_path, sample_ct) -> dict[str, tuple[str, str]]:
    """name -> (path, expected message fragment)."""
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(sample_ct.read_bytes()[:300])
    text = tmp_path / "notes.nii.gz"
    text.write_text("this is not an image")
    rng = np.random.default_rng(0)
    nan = rng.normal(size=(8, 8, 8)).astype(np.float32)
    nan[2, 3, 4] = np.nan
    return {
        "missing": (str(tmp_path / "nope.nii.gz"), "nope.nii.gz"),
        "truncated": (str(truncated), "truncated"),
        "not an image": (str(text), "notes.nii.gz"),
        "2d": (_write(rng.normal(size=(20, 20)).astype(np.float32), tmp_path / "slice.nii.gz"), "2D"),
        "4d": (_write(rng.normal(size=(2, 8, 8, 8)).astype(np.float32), tmp_path / "series.nii.gz"), "4D"),
        "nan": (_write(nan, tmp_path / "nan.nii.gz"), "NaN"),
        "constant": (_write(np.full((8, 8, 8), 7, np.int16), tmp_path / "flat.nii.gz"), "constant"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "not an image", "2d", "4d", "nan", "constant"])
def test_bad_images(capsys, tmp_path, bad_inputs, tiny_checkpoint, case) -> None:
    path, fragment = bad_inputs[case]
    out = tmp_path / "out.nii.gz"
    code, err = run_cli(capsys, "segment", path, "-p", "1,1,1", "-o", out, "-m", "sam-med3d-tiny",
                        "-c", tiny_checkpoint)
    assert_user_error(code, err, fragment)
    assert not out.exists()


@pytest.fixture()
def existing_output(tmp_path):
    out = tmp_path / "previous.nii.gz"
    out.write_bytes(b"previous result")
    return out


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["-p", "84,58,200"], "outside the image"),
        (["--world", "-p", "5000,0,0"], "outside the image"),
        (["-p", "84,58"], "three coordinates"),
        (["-p", "84,58,20:?"], "+ or -"),
        (["--box", "1,2,3"], "six coordinates"),
        ([], "at least one --point"),
    ],
)
def test_bad_prompts_leave_existing_output_untouched(capsys, sample_ct, tiny_checkpoint, existing_output,
                                                     extra, fragment) -> None:
    code, err = run_cli(capsys, "segment", sample_ct, *extra, "-o", existing_output, "-m", "sam-med3d-tiny",
                        "-c", tiny_checkpoint)
    assert_user_error(code, err, fragment)
    assert existing_output.read_bytes() == b"previous result"


def test_unknown_model(capsys, sample_ct, tmp_path) -> None:
    code, err = run_cli(capsys, "segment", sample_ct, "-p", "1,1,1", "-o", tmp_path / "o.nii.gz", "-m",
                        "sam-med9d", "-c", tmp_path / "w.pth")
    assert_user_error(code, err, "unknown model 'sam-med9d'")


def test_checkpoint_problems(capsys, sample_ct, tmp_path, existing_output) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"model_state_dict": {"image_encoder.foo": torch.zeros(1)}}, wrong)
    code, err = run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "-o", existing_output,
                        "-m", "sam-med3d-tiny", "-c", wrong)
    assert_user_error(code, err, "does not match", "missing", "unexpected 1 key(s): image_encoder.foo")
    assert existing_output.read_bytes() == b"previous result"

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model_state_dict": {}, "x": Payload()}, unsafe)
    code, err = run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "-o", existing_output,
                        "-m", "sam-med3d-tiny", "-c", unsafe)
    assert_user_error(code, err, "arbitrary code", "--trust-checkpoint")

    code, err = run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "-o", existing_output)  # offline, empty cache
    assert_user_error(code, err, "sammed models download sam-med3d-turbo", "sam_med3d_turbo.pth")


def test_bad_output_suffix(capsys, sample_ct, tmp_path, tiny_checkpoint) -> None:
    code, err = run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "-o", tmp_path / "mask.png",
                        "-m", "sam-med3d-tiny", "-c", tiny_checkpoint)
    assert_user_error(code, err, "mask.png")
    assert not (tmp_path / "mask.png").exists()


def test_models_list_and_info(capsys) -> None:
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "sam-med3d-turbo" in listing and "Apache-2.0" in listing
    assert main(["models", "info", "sam-med3d-turbo"]) == 0
    info = capsys.readouterr().out
    assert "sam_med3d_turbo.pth" in info and "huggingface.co" in info
    code = main(["models", "info", "nope"])
    assert code == 2 and "unknown model" in capsys.readouterr().err


def test_max_windows_flag(capsys, tmp_path, sample_ct, tiny_checkpoint) -> None:
    out = tmp_path / "grown.nii.gz"
    code, err = run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "--max-windows", "3", "-o", out,
                        "-m", "sam-med3d-tiny", "-c", tiny_checkpoint)
    assert code == 0, err
    assert read_image(out).geometry.same_grid(read_image(sample_ct).geometry)
    code, err = run_cli(capsys, "segment", sample_ct, "-p", "84,58,20", "--max-windows", "0", "-o",
                        tmp_path / "none.nii.gz", "-m", "sam-med3d-tiny", "-c", tiny_checkpoint)
    assert_user_error(code, err, "--max-windows")
    assert not (tmp_path / "none.nii.gz").exists()
