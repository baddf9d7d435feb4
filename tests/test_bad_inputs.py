"""Every command refuses bad input the same way: one line, exit status 2, nothing written.

A table, not a list of hand-written tests: each row is a command line with placeholders for
the hostile files built once below, and the fragment its one error line must contain. For
every row the test also checks that the workspace is byte-for-byte what it was (no output,
no partial file, no changed input, no leftover folder).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sammed.cli import main


def _write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose()))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def _gz_edit(path: Path, edit) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    edit(raw)
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, data_dir, tiny_checkpoint) -> Path:
    """The hostile workspace: one real CT and every kind of bad file next to it."""
    import torch
    from PIL import Image as PILImage

    from sammed.data import SAMPLE_CT

    root = tmp_path_factory.mktemp("hostile")
    ct = root / "ct.nii.gz"
    shutil.copyfile(SAMPLE_CT, ct)
    os.link(ct, root / "hardlink.nii.gz")
    os.symlink(ct, root / "symlink.nii.gz")
    (root / "sub").mkdir()
    raw = ct.read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x10
    (root / "crc.nii.gz").write_bytes(bytes(flipped))
    (root / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (root / "empty.nii.gz").write_bytes(b"")
    (root / "nifti_named.nrrd").write_bytes(raw)
    (root / "nifti_named.mha").write_bytes(raw)
    (root / "gz_named.nii").write_bytes(raw)
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    _write_nifti(root / "sp0.nii.gz", volume)
    _gz_edit(root / "sp0.nii.gz", lambda b: struct.pack_into("<f", b, 80, 0.0))  # pixdim[1] = 0
    _write_nifti(root / "spnan.nii.gz", volume)
    _gz_edit(root / "spnan.nii.gz", lambda b: struct.pack_into("<f", b, 84, float("nan")))  # pixdim[2]
    with_nan = volume.copy()
    with_nan[3, 3, 3] = np.nan
    _write_nifti(root / "nan.nii.gz", with_nan)
    _write_nifti(root / "const.nii.gz", np.full((16, 16, 16), 7, np.int16))
    _write_nifti(root / "twod.nii.gz", volume[:, :, 0])
    _write_nifti(root / "label_nan.nii.gz", with_nan)
    frac = np.zeros((16, 16, 16), np.float32)
    frac[4:8, 4:8, 4:8] = 0.5
    _write_nifti(root / "label_frac.nii.gz", frac)
    _write_nifti(root / "volume.nii.gz", volume)
    (root / "secret.raw").write_bytes(bytes(range(256)) * 16)
    outside = root / "sub" / "outside.raw"
    outside.write_bytes(bytes(4096))
    mhd = "ObjectType = Image\nNDims = 3\nDimSize = 16 16 16\nElementType = MET_UCHAR\nElementDataFile = {}\n"
    (root / "abs.mhd").write_text(mhd.format(outside))
    (root / "rel.mhd").write_text(mhd.format("sub/outside.raw"))
    (root / "sub" / "up.mhd").write_text(mhd.format("../secret.raw"))
    (root / "list.mhd").write_text(mhd.format("LIST") + "sub/outside.raw\n")
    nhdr = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 16 16 16\nencoding: raw\ndata file: {}\n\n"
    (root / "abs.nhdr").write_text(nhdr.format(outside))
    (root / "missing.mhd").write_text(mhd.format("nowhere.raw"))
    (root / "text.nii.gz").write_text("hello")
    PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "picture.png")
    (root / "picture_named.nii.gz").write_bytes((root / "picture.png").read_bytes())
    PILImage.fromarray(np.full((32, 32), 9, np.uint8)).save(root / "const.png")
    nan_plane = rng.normal(size=(32, 32)).astype(np.float32)
    nan_plane[0, 0] = np.nan
    PILImage.fromarray(nan_plane, mode="F").save(root / "nan.tiff")
    state = torch.load(tiny_checkpoint, weights_only=False)
    weights = state["model_state_dict"]
    first_float = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first_float] = torch.full_like(weights[first_float], float("nan"))
    torch.save(state, root / "nan.pth")
    (root / "garbage.pth").write_bytes(os.urandom(2048))
    shutil.copyfile(tiny_checkpoint, root / "tiny.pth")
    (root / "afile.txt").write_text("not a folder")
    return root


# (id, command line with {ws} for the workspace, fragment of the one error line)
SEG = "segment {ws}/ct.nii.gz -m sam-med3d-tiny -c {ws}/tiny.pth -p 60,50,15"
SEG_IN = "segment {ws}/%s -m sam-med3d-tiny -c {ws}/tiny.pth -p 5,5,5 -o {ws}/sub/out.nii.gz"
EVAL = "eval -m sam-med3d-tiny -c {ws}/tiny.pth -d {ws}/volume.nii.gz -p clicks-N"
TRAIN = "train {ws}/sub --out {ws}/run -m sam-med3d-tiny"
SEG2D = "segment {ws}/%s -m sam-med2d -c {ws}/tiny.pth -p 5,5 -o {ws}/sub/mask.png"
CASES = [
    # outputs that alias inputs
    ("out-is-input", SEG + " -o {ws}/ct.nii.gz", "is the input file"),
    ("out-hard-link", SEG + " -o {ws}/hardlink.nii.gz", "is the input file"),
    ("out-symlink", SEG + " -o {ws}/symlink.nii.gz", "is the input file"),
    ("out-dotdot", SEG + " -o {ws}/sub/../ct.nii.gz", "is the input file"),
    ("out-is-checkpoint", "segment {ws}/ct.nii.gz -m sam-med3d-tiny -c {ws}/volume.nii.gz -p 60,50,15 -o {ws}/volume.nii.gz", "is the input file"),
    ("out-2d-is-input", "segment {ws}/picture.png -m sam-med2d -c {ws}/tiny.pth -p 5,5 -o {ws}/picture.png", "is the input file"),
    ("out-bad-suffix", SEG + " -o {ws}/sub/mask.txt", "use one of"),
    ("out-missing", SEG, "--out"),
    # files that are not what they claim, or are damaged
    ("png-as-nifti", SEG_IN % "picture_named.nii.gz", "not gzip-compressed"),
    ("text-as-nifti", SEG_IN % "text.nii.gz", "not gzip-compressed"),
    ("nifti-as-nrrd", SEG_IN % "nifti_named.nrrd", "not an NRRD file"),
    ("nifti-as-mha", SEG_IN % "nifti_named.mha", "not a MetaImage file"),
    ("gzip-as-nii", SEG_IN % "gz_named.nii", "gzip-compressed"),
    ("gzip-crc", SEG_IN % "crc.nii.gz", "corrupt gzip data"),
    ("truncated", SEG_IN % "truncated.nii.gz", "truncated"),
    ("empty", SEG_IN % "empty.nii.gz", "empty"),
    ("missing-file", SEG_IN % "nothing.nii.gz", "no such file"),
    ("zero-spacing", SEG_IN % "sp0.nii.gz", "voxel size"),
    ("nan-spacing", SEG_IN % "spnan.nii.gz", "voxel size"),
    ("nan-voxels", SEG_IN % "nan.nii.gz", "NaN"),
    ("constant", SEG_IN % "const.nii.gz", "constant"),
    ("2d-volume", SEG_IN % "twod.nii.gz", "expected a 3D volume"),
    ("picture-3d-model", SEG_IN % "picture.png", "2D image"),
    # headers that point at other files
    ("mhd-absolute", SEG_IN % "abs.mhd", "not a file in the header's own folder"),
    ("mhd-subfolder", SEG_IN % "rel.mhd", "not a file in the header's own folder"),
    ("mhd-parent", SEG_IN % "sub/up.mhd", "not a file in the header's own folder"),
    ("mhd-list", SEG_IN % "list.mhd", "not a file in the header's own folder"),
    ("mhd-missing-data", SEG_IN % "missing.mhd", "does not exist beside it"),
    ("nhdr-absolute", SEG_IN % "abs.nhdr", "not a file in the header's own folder"),
    # prompts and options
    ("point-two-values", SEG + " -p 1,2 -o {ws}/sub/m.nii.gz", "1,2"),
    ("point-nan", SEG + " -p nan,1,2 -o {ws}/sub/m.nii.gz", "nan"),
    ("point-outside", SEG + " -p 1000,1000,1000 -o {ws}/sub/m.nii.gz", "outside"),
    ("box-five-values", "segment {ws}/ct.nii.gz -m sam-med3d-tiny -c {ws}/tiny.pth -b 1,2,3,4,5 -o {ws}/sub/m.nii.gz", "box"),
    ("no-prompt", "segment {ws}/ct.nii.gz -m sam-med3d-tiny -c {ws}/tiny.pth -o {ws}/sub/m.nii.gz", "--point"),
    ("max-windows-zero", SEG + " --max-windows 0 -o {ws}/sub/m.nii.gz", "--max-windows"),
    ("max-windows-text", SEG + " --max-windows many -o {ws}/sub/m.nii.gz", "--max-windows"),
    ("bad-convention", SEG + " --world --convention XYZ -o {ws}/sub/m.nii.gz", "--convention"),
    ("bad-precision", SEG + " --precision fp8 -o {ws}/sub/m.nii.gz", "--precision"),
    ("onnx-dir-with-torch", SEG + " --onnx-dir {ws}/elsewhere -o {ws}/sub/m.nii.gz", "--onnx-dir"),
    ("unknown-model", "segment {ws}/ct.nii.gz -m sam-med9d -p 60,50,15 -o {ws}/sub/m.nii.gz", "unknown model"),
    # checkpoints
    ("nan-checkpoint", SEG + " -c {ws}/nan.pth -o {ws}/sub/m.nii.gz", "NaN or infinite"),
    ("garbage-checkpoint", SEG + " -c {ws}/garbage.pth -o {ws}/sub/m.nii.gz", "checkpoint"),
    ("image-as-checkpoint", SEG + " -c {ws}/volume.nii.gz -o {ws}/sub/m.nii.gz", "checkpoint"),
    ("missing-checkpoint", SEG + " -c {ws}/nothing.pth -o {ws}/sub/m.nii.gz", "nothing.pth"),
    # 2D models
    ("2d-constant-picture", SEG2D % "const.png", "constant"),
    ("2d-nan-tiff", SEG2D % "nan.tiff", "NaN"),
    ("2d-negative-slice", "segment {ws}/ct.nii.gz -m sam-med2d -c {ws}/tiny.pth --slice -1 -p 5,5 -o {ws}/sub/m.nii.gz", "--slice"),
    ("2d-world", "segment {ws}/picture.png -m sam-med2d -c {ws}/tiny.pth --world -p 5,5 -o {ws}/sub/m.png", "--world"),
    # eval
    ("eval-zero-clicks", EVAL + " --label {ws}/volume.nii.gz -n 0 -o {ws}/ev", "--clicks"),
    ("eval-nan-tolerance", EVAL + " --label {ws}/volume.nii.gz --nsd-tolerance nan -o {ws}/ev", "--nsd-tolerance"),
    ("eval-zero-threads", EVAL + " --label {ws}/volume.nii.gz --threads 0 -o {ws}/ev", "--threads"),
    ("eval-negative-max-cases", EVAL + " --label {ws}/volume.nii.gz --max-cases -1 -o {ws}/ev", "--max-cases"),
    ("eval-nan-label", EVAL + " --label {ws}/label_nan.nii.gz -o {ws}/ev", "label map contains NaN"),
    ("eval-fractional-label", EVAL + " --label {ws}/label_frac.nii.gz -o {ws}/ev", "non-integer"),
    ("eval-out-is-file", EVAL + " --label {ws}/label_frac.nii.gz -o {ws}/afile.txt", "not a folder"),
    ("eval-out-is-label", EVAL + " --label {ws}/label_frac.nii.gz -o {ws}/label_frac.nii.gz", "is the input file"),
    ("eval-unknown-protocol", "eval -m sam-med3d-tiny -c {ws}/tiny.pth -d {ws}/volume.nii.gz --label {ws}/volume.nii.gz -p nope -o {ws}/ev", "nope"),
    # train
    ("train-nan-lr", TRAIN + " --lr nan", "--lr"),
    ("train-negative-lr", TRAIN + " --lr -1", "--lr"),
    ("train-nan-decoder-lr-scale", TRAIN + " --decoder-lr-scale nan", "--decoder-lr-scale"),
    ("train-negative-workers", TRAIN + " --workers -1", "--workers"),
    ("train-slab-probability", TRAIN + " --slab-probability 5", "--slab-probability"),
    ("train-inverted-scale-range", TRAIN + " --scale-range 1.5,0.7", "--scale-range"),
    ("train-nan-scale-range", TRAIN + " --scale-range nan,1", "--scale-range"),
    ("train-pseudo-fraction", TRAIN + " --pseudo-fraction 1.5", "--pseudo-fraction"),
    ("train-size-exponent", TRAIN + " --size-exponent 3", "--size-exponent"),
    ("train-first-round-weight", TRAIN + " --first-round-weight 0", "--first-round-weight"),
    ("train-extra-target-size-exponent", TRAIN + " --extra-target-size-exponent -1", "--extra-target-size-exponent"),
    ("train-empty-exclude-pattern", TRAIN + " --exclude-cases a,,b", "--exclude-cases"),
    ("train-case-weight-without-weight", TRAIN + " --case-weights tsct", "--case-weights"),
    ("train-zero-case-weight", TRAIN + " --case-weights tsct=0", "--case-weights"),
    ("train-nan-case-weight", TRAIN + " --case-weights tsct=nan", "--case-weights"),
    ("train-negative-time-limit", TRAIN + " --time-limit -3", "--time-limit"),
    ("train-zero-batch", TRAIN + " --batch-size 0", "--batch-size"),
    ("train-bad-milestones", TRAIN + " --milestones a,b", "--milestones"),
    ("train-out-is-file", "train {ws}/sub --out {ws}/afile.txt -m sam-med3d-tiny", "not a folder"),
    ("train-no-dataset", TRAIN, "sub"),
    # export
    ("export-opset", "export-onnx -m sam-med3d-tiny --allow-random-weights --opset 99 -o {ws}/onnx", "--opset"),
    ("export-out-is-file", "export-onnx -m sam-med3d-tiny --allow-random-weights -o {ws}/afile.txt", "not a folder"),
    ("export-unwritable", "export-onnx -m sam-med3d-tiny --allow-random-weights -o {ws}/afile.txt/onnx", "onnx"),
    # serve (options are checked before anything starts)
    ("serve-port", "serve --port 70000", "--port"),
    ("serve-nan-upload", "serve --max-upload-mb nan", "--max-upload-mb"),
    # models
    ("models-info-unknown", "models info sam-med9d", "unknown model"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content digest (links as their target)."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = "link:" + os.readlink(path)
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[key] = "dir"
    return state


def test_table_has_enough_distinct_cases() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60


@pytest.mark.parametrize("command, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_refused(capsys, ws: Path, command: str, fragment: str) -> None:
    before = _snapshot(ws)
    code = main([part.replace("{ws}", str(ws)) for part in command.split()])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert _snapshot(ws) == before, "the workspace changed"
