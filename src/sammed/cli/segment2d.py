"""``sammed segment`` with a 2D model (SAM, SAM-Med2D, SAM-UNet): pictures, 2D DICOM, volume slices.

``segment.py`` hands over here when the model is 2D (``get_model_spec(name).dims == 2``, or the
ONNX folder says so). Prompts are pixels of the picture: ``--point x,y[:+|-]`` and
``--box x0,y0,x1,y1`` with x = column and y = row, from the top-left pixel (0, 0). For a slice
of a volume, x and y are the two remaining voxel indices in order (``--axis k``: x = i, y = j).
All prompts go into one prediction, the way SAM's predictor takes them; a single click alone
asks for the three ambiguity-aware masks and keeps the one with the highest predicted IoU.
"""

from __future__ import annotations

import argparse

import numpy as np

from sammed.cli.common import console, resolve_checkpoint, step
from sammed.cli.segment_backend import check_onnx_arguments
from sammed.errors import PromptError, SammedError

EPILOG_2D = """\
2D models (sam-med2d, sam-med2d-no-adapter, sam-unet-r34/r50, sam-vit-b/l/h):
  # a box on a picture (x = column, y = row, pixels); the mask is a PNG of the picture's size
  sammed segment slice.png --model sam-med2d --box 60,40,180,150 --out mask.png -c sam-med2d_b.pth

  # clicks on slice 20 along k of a CT; the mask is the whole volume, only that slice filled
  sammed segment ct.nii.gz --slice 20 --axis k --point 84,58 --point 70,50:- \\
      --model sam-med2d --out mask.nii.gz -c sam-med2d_b.pth

A 2D DICOM file is windowed with its VOI LUT / WindowCenter-Width (else percentiles).
"""


def parse_point_2d(text: str) -> tuple[float, float, bool]:
    """``x,y`` or ``x,y:+`` / ``x,y:-`` -> (x, y, positive)."""
    body, _, sign = text.partition(":")
    sign = sign.strip() or "+"
    if sign not in ("+", "-"):
        raise PromptError(f"point {text!r}: the label after ':' must be + or -")
    values = _numbers(body, text, "x,y or x,y:+ / x,y:-")
    if len(values) != 2:
        raise PromptError(f"point {text!r}: a 2D model takes two pixel coordinates x,y (column, row)")
    return values[0], values[1], sign == "+"


def parse_box_2d(text: str) -> tuple[float, float, float, float]:
    """``x0,y0,x1,y1`` (two opposite corners, any order) -> (min x, min y, max x, max y)."""
    values = _numbers(text, text, "x0,y0,x1,y1")
    if len(values) != 4:
        raise PromptError(f"box {text!r}: a 2D model takes four pixel coordinates x0,y0,x1,y1")
    x0, y0, x1, y1 = values
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _numbers(body: str, text: str, form: str) -> list[float]:
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        raise PromptError(f"{text!r} must look like {form}") from None
    if not all(np.isfinite(values)):
        raise PromptError(f"{text!r}: coordinates must be finite numbers")
    return values


def check_inside(x: float, y: float, size: tuple[int, int], what: str) -> None:
    """Refuse a pixel position outside the picture (half a pixel of slack at the borders)."""
    height, width = size
    if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        raise PromptError(
            f"{what} at x={x:g}, y={y:g} is outside the image of {width} x {height} pixels "
            f"(x = column 0..{width - 1}, y = row 0..{height - 1})"
        )


def _check_flags(args: argparse.Namespace) -> None:
    if args.world:
        raise SammedError("--world is for 3D models; 2D prompts are pixel coordinates x,y (column, row)")
    if getattr(args, "max_windows", 1) != 1:
        raise SammedError("--max-windows is for 3D models")
    if getattr(args, "scribble", None) or getattr(args, "lasso", None):
        raise SammedError("--scribble and --lasso are for 3D models; 2D models take --point and --box")
    if args.backend == "onnx":
        check_onnx_arguments(args)
        return
    if args.onnx_dir is not None:
        raise SammedError("--onnx-dir is only used with --backend onnx")
    if args.precision != "fp32":
        raise SammedError("--precision bf16/fp16/auto is for 3D models; 2D models run in float32")


def _load_model(args: argparse.Namespace, spec):
    """The PyTorch model, or the exported one for --backend onnx (checked against --model)."""
    from sammed.models import build_model

    if args.backend == "onnx":
        from sammed.inference.onnx_backend import providers_for_device
        from sammed.inference.onnx_backend2d import OnnxSam2D

        with step(f"loading ONNX model from {args.onnx_dir}"):
            model = OnnxSam2D.from_dir(args.onnx_dir, providers=providers_for_device(args.device))
        if spec is not None and model.spec.name != spec.name:  # OnnxSam2D states its entry
            raise SammedError(f"--onnx-dir {args.onnx_dir} holds {model.spec.name}, not {spec.name}")
        return model
    checkpoint = resolve_checkpoint(args, spec.name)  # bundled, cached or downloaded once
    with step(f"loading {spec.name} weights"):
        return build_model(spec.name, checkpoint=checkpoint, trust_checkpoint=args.trust_checkpoint).to(
            args.device
        )


def run_segment2d(args: argparse.Namespace) -> int:
    """Read, check every prompt and the output path, then load the model, predict and write."""
    import torch

    from sammed.inference.predictor2d import Predictor2D
    from sammed.io.image2d import check_mask_path, read_image_2d, write_mask_2d
    from sammed.io.outputs import refuse_output_on_input
    from sammed.models import get_model_spec

    _check_flags(args)
    spec = get_model_spec(args.model) if args.model is not None else None
    if args.device == "cuda" and args.backend == "torch" and not torch.cuda.is_available():
        raise SammedError("--device cuda requested but no CUDA device is available")
    if getattr(args, "init_mask", None) is not None or getattr(args, "init_label", None) is not None:
        raise SammedError("--init-mask is for 3D models")
    if getattr(args, "auto", False):
        from sammed.cli.segment_auto import run_auto2d

        return run_auto2d(args, spec)
    if not args.point and not args.box:
        raise SammedError("give at least one --point or a --box")
    points = [parse_point_2d(p) for p in args.point]
    box = parse_box_2d(args.box) if args.box else None
    refuse_output_on_input(args.out, [args.image, args.checkpoint, args.onnx_dir])

    with step(f"reading {args.image}"):
        image = read_image_2d(args.image, args.slice, args.axis)
    for x, y, _ in points:
        check_inside(x, y, image.size, "point")
    if box is not None:
        check_inside(box[0], box[1], image.size, "box corner")
        check_inside(box[2], box[3], image.size, "box corner")
    out = check_mask_path(image, args.out)

    model = _load_model(args, spec)
    predictor = Predictor2D(model)
    # SAM-Med2D was trained on BGR arrays: flip our RGB pixels for it (grey images are unaffected).
    channel_order = getattr(predictor.pipeline, "training_channel_order", "RGB")
    with step("encoding the image"):
        predictor.set_image(image.pixels, image_format="BGR" if channel_order == "BGR" else "RGB")
    coords = np.array([[x, y] for x, y, _ in points], dtype=np.float64) if points else None
    labels = np.array([int(positive) for _, _, positive in points]) if points else None
    single_click = box is None and len(points) == 1
    with step("decoding the prompts"):
        masks, scores, _ = predictor.predict(
            point_coords=coords,
            point_labels=labels,
            box=None if box is None else np.array(box, dtype=np.float64),
            multimask_output=single_click,
        )
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    mask = masks[best]
    written = write_mask_2d(mask, image, out)
    console.print(f"wrote {written} ({int(mask.sum())} pixels)", soft_wrap=True, markup=False)
    return 0
