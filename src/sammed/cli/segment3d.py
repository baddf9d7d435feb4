"""``sammed segment`` with a 3D model: clicks and boxes on a volume, a mask on its exact grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from sammed.cli.common import console, resolve_checkpoint, step
from sammed.cli.segment_backend import check_onnx_arguments
from sammed.errors import SammedError


def run_segment3d(args: argparse.Namespace) -> int:
    """Read, check the prompts and the output path, then load the model, segment and write."""
    refuse_2d_arguments(args)
    import numpy as np
    import torch

    from sammed.inference import Session
    from sammed.io import read_image, validate_volume
    from sammed.io.dicom_seg import looks_like_dicom_input
    from sammed.io.outputs import refuse_output_on_input
    from sammed.io.readers import image_suffix
    from sammed.io.writers import SEGMENTATION_SUFFIXES, WRITE_SUFFIXES, segmentation_suffix
    from sammed.models import build_model, get_model_spec
    from sammed.prompts import Point, parse_box, parse_lasso, parse_point, parse_scribble

    kind = segmentation_suffix(args.out)
    if image_suffix(args.out) not in WRITE_SUFFIXES and kind is None:
        raise SammedError(f"cannot write '{args.out}': use one of {', '.join((*WRITE_SUFFIXES, *SEGMENTATION_SUFFIXES))}")
    if kind == ".dcm" and not looks_like_dicom_input(Path(args.image)):
        raise SammedError(
            f"cannot write '{args.out}': a DICOM-SEG (.dcm) needs a DICOM series as input, and '{args.image}' is not one "
            "(write .nii.gz or .seg.nrrd instead)"
        )
    if args.label is not None and (not args.label.strip() or len(args.label) > 64 or any(ord(c) < 32 for c in args.label)):
        raise SammedError("--label must be a name of 1 to 64 characters on one line")
    refuse_output_on_input(args.out, [args.image, args.checkpoint, args.onnx_dir, getattr(args, "init_mask", None)])
    init_mask = getattr(args, "init_mask", None)
    if getattr(args, "auto", False):
        raise SammedError("--auto is for 2D models (e.g. --model sam-med2d)")
    if getattr(args, "init_label", None) is not None and init_mask is None:
        raise SammedError("--init-label needs --init-mask")
    scribbles, lassos = getattr(args, "scribble", []), getattr(args, "lasso", [])
    if not args.point and not args.box and init_mask is None and not scribbles and not lassos:
        raise SammedError("give at least one --point, --box, --scribble, --lasso or an --init-mask")
    if (scribbles or lassos) and args.world:
        raise SammedError("--scribble and --lasso take voxel indices; --world is for --point and --box")
    space = "world" if args.world else "voxel"
    points = [parse_point(p, space, args.convention) for p in args.point]
    box = parse_box(args.box, space, args.convention) if args.box else None
    strokes = [parse_scribble(s) for s in scribbles]
    polygons = [parse_lasso(s) for s in lassos]
    spec = get_model_spec(args.model or "sam-med3d-turbo")
    if args.backend == "onnx":
        check_onnx_arguments(args)
    elif args.onnx_dir is not None:
        raise SammedError("--onnx-dir is only used with --backend onnx")
    if args.backend == "torch" and args.device == "cuda" and not torch.cuda.is_available():
        raise SammedError("--device cuda requested but no CUDA device is available")

    with step(f"reading {args.image}"):
        image = read_image(args.image)
        validate_volume(image)
    # Every prompt is checked against the image (and points become world LPS, once) before the
    # slow model load.
    points = [Point(tuple(p.to_world_lps(image.geometry)), p.positive, "world", "LPS") for p in points]
    if box is not None:
        box.corners_world_lps(image.geometry)
    _check_strokes(strokes, polygons, image.shape)
    seed = None
    if init_mask is not None:  # read and checked against the image before the model loads
        from sammed.inference.scribble import initial_mask_region

        with step(f"reading {init_mask}"):
            region, region_mask = initial_mask_region(init_mask, image, args.init_label)
        seed = np.zeros(image.shape, dtype=bool)
        seed[region] = region_mask

    if args.backend == "onnx":
        with step(f"loading ONNX model from {args.onnx_dir}"):
            session = Session(_load_onnx_model(args), image, max_windows=args.max_windows, validate=False)
    else:
        checkpoint = resolve_checkpoint(args, spec.name)  # bundled, cached or downloaded once
        with step(f"loading {spec.name} weights"):
            model = build_model(spec.name, checkpoint=checkpoint, trust_checkpoint=args.trust_checkpoint)
        session = Session(
            model, image, device=args.device, precision=args.precision, max_windows=args.max_windows, validate=False
        )
    if args.label is not None:
        session.set_name(session.active_object, args.label)
    if seed is not None:
        session.add_initial_mask(seed)
    if box is not None:
        with step("box prompt (encodes the model window)"):
            session.add_box(box)
    for voxels, positive in strokes:  # order: initial mask, box, scribbles, lassos, then clicks
        with step(f"scribble ({'+' if positive else '-'}, {len(voxels)} voxels)"):
            session.add_scribble(voxels, positive=positive)
    for polygon, axis, index, positive in polygons:
        with step(f"lasso on {axis}={index} ({'+' if positive else '-'})"):
            session.add_lasso(polygon, axis=axis, index=index, positive=positive)
    for number, point in enumerate(points, start=1):
        label = "+" if point.positive else "-"
        with step(f"click {number}/{len(points)} ({label})"):
            session.add_point(point)
    written = session.save(args.out)
    voxels = int(session.mask().sum())
    volume_ml = voxels * float(np.prod(image.spacing)) / 1000.0
    console.print(f"wrote {written} ({voxels} voxels, {volume_ml:.1f} ml)")
    return 0


def _check_strokes(strokes, polygons, shape: tuple[int, ...]) -> None:
    """Scribbles and lassos are checked against the image before the model loads (the Session's
    own checks, which run again when they are applied)."""
    from sammed.inference.scribble import lasso_fill, scribble_voxels

    for voxels, _ in strokes:
        scribble_voxels(voxels, shape)
    for polygon, axis, index, _ in polygons:
        lasso_fill(polygon, axis, index, shape)


def refuse_2d_arguments(args: argparse.Namespace) -> None:
    """For the 3D path: 2D pictures and --slice need a 2D model; say so in one line."""
    from sammed.io.image2d import PICTURE_SUFFIXES
    from sammed.io.readers import image_suffix

    if image_suffix(args.image) in PICTURE_SUFFIXES:
        raise SammedError(
            f"'{args.image}' is a 2D image and {args.model or 'sam-med3d-turbo'} is a 3D model: "
            "use a 2D model, e.g. --model sam-med2d (see 'sammed models list')"
        )
    if args.slice is not None:
        raise SammedError("--slice/--axis are for 2D models; a 3D model segments the whole volume")


def _load_onnx_model(args: argparse.Namespace):
    """The exported model, checked against --model when one was given."""
    from sammed.inference.onnx_backend import OnnxSamMed3D, providers_for_device
    from sammed.models import get_model_spec

    model = OnnxSamMed3D.from_dir(args.onnx_dir, providers=providers_for_device(args.device))
    if args.model is not None and model.model_name and get_model_spec(args.model).name != model.model_name:
        raise SammedError(f"--onnx-dir {args.onnx_dir} holds {model.model_name}, not {args.model}")
    return model
