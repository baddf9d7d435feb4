"""``sammed segment``: prompts in, a mask with the input's exact geometry out."""

from __future__ import annotations

import argparse

from sammed.cli import segment2d
from sammed.cli.common import CHECKPOINT_HELP, add_offline_argument, console, resolve_checkpoint, step
from sammed.cli.options import positive_int
from sammed.errors import SammedError

_SEGMENT_EPILOG = """\
examples:
  # one positive click at voxel (i, j, k) of the file
  sammed segment ct.nii.gz --point 84,58,20 --out liver.nii.gz --checkpoint sam_med3d_turbo.pth

  # refine with a negative click, world coordinates in RAS mm (as Slicer shows them)
  sammed segment ct.nii.gz --world --point -60.5,12,80:+ --point -40,20,80:- --out m.nrrd \\
      --checkpoint sam_med3d_turbo.pth

  # a DICOM series folder and a box (two opposite corners, voxel indices)
  sammed segment dicom_dir/ --box 200,180,5,300,260,15 --out kidney.nii.gz --checkpoint ...

Points are applied one after another, each as a click that refines the previous mask (the
official interactive protocol). Voxel indices (i, j, k) are in the file's own voxel order,
the order ITK-SNAP, Slicer and nibabel show. The mask is written with exactly the input's
size, spacing, origin and direction.
"""


def register(commands) -> None:
    segment = commands.add_parser(
        "segment",
        help="segment an image from clicks and/or a box and write the mask",
        description=(
            "Segment one structure of a 3D image (NIfTI, NRRD, MHA or a DICOM folder) from prompts, "
            "or of a 2D image (PNG, JPEG, TIFF, 2D DICOM) or a volume slice with a 2D model."
        ),
        epilog=_SEGMENT_EPILOG + "\n" + segment2d.EPILOG_2D,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.add_argument("image", help="input image file or DICOM series folder")
    segment.add_argument(
        "--point",
        "-p",
        action="append",
        default=[],
        metavar="X,Y,Z[:+|-]",
        help="a click; ':+' positive (default) or ':-' negative; repeat for more clicks",
    )
    segment.add_argument("--box", "-b", metavar="X0,Y0,Z0,X1,Y1,Z1", help="a 3D box given by two opposite corners")
    segment.add_argument(
        "--world",
        action="store_true",
        help="prompts are world coordinates in mm (see --convention) instead of voxel indices",
    )
    segment.add_argument(
        "--convention",
        choices=["RAS", "LPS"],
        default="RAS",
        type=str.upper,
        help="world convention for --world: RAS (NIfTI/Slicer, default) or LPS (DICOM/ITK)",
    )
    segment.add_argument(
        "--out", "-o", required=True, metavar="MASK", help="output mask (.nii.gz, .nii, .nrrd, .mha; .png for 2D images)"
    )
    segment.add_argument(
        "--model", "-m", default=None, help="model name (see 'sammed models list'; default sam-med3d-turbo)"
    )
    segment.add_argument("--checkpoint", "-c", metavar="PTH", help=CHECKPOINT_HELP)
    segment.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint that needs arbitrary code to unpickle (only for files you trust)",
    )
    add_offline_argument(segment)
    segment.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run the model")
    segment.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="fp32: exact (default); bf16/fp16: fast mode under autocast; auto: bf16 where native",
    )
    segment.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="torch: PyTorch with --checkpoint (default); onnx: onnxruntime with files from 'sammed export-onnx'",
    )
    segment.add_argument("--onnx-dir", metavar="DIR", help="folder written by 'sammed export-onnx' (with --backend onnx)")
    segment.add_argument(
        "--max-windows",
        type=positive_int,
        default=1,
        metavar="N",
        help="let a structure larger than one model window (192 mm) grow into up to N overlapping windows",
    )
    segment2d.add_arguments(segment)
    segment.set_defaults(handler=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    if segment2d.wants_2d(args):  # SAM, SAM-Med2D, SAM-UNet: pictures and slices
        return segment2d.run_segment2d(args)
    segment2d.refuse_2d_arguments(args)
    import numpy as np
    import torch

    from sammed.inference import Session
    from sammed.io import read_image, validate_volume
    from sammed.io.writers import WRITE_SUFFIXES
    from sammed.io.outputs import refuse_output_on_input
    from sammed.io.readers import image_suffix
    from sammed.models import build_model, get_model_spec
    from sammed.prompts import parse_box, parse_point

    if image_suffix(args.out) not in WRITE_SUFFIXES:
        raise SammedError(f"cannot write '{args.out}': use one of {', '.join(WRITE_SUFFIXES)}")
    refuse_output_on_input(args.out, [args.image, args.checkpoint, args.onnx_dir])
    if not args.point and not args.box:
        raise SammedError("give at least one --point or a --box")
    space = "world" if args.world else "voxel"
    points = [parse_point(p, space, args.convention) for p in args.point]
    box = parse_box(args.box, space, args.convention) if args.box else None
    spec = get_model_spec(args.model or "sam-med3d-turbo")
    if args.backend == "onnx":
        _check_onnx_arguments(args)
    elif args.onnx_dir is not None:
        raise SammedError("--onnx-dir is only used with --backend onnx")
    if args.backend == "torch" and args.device == "cuda" and not torch.cuda.is_available():
        raise SammedError("--device cuda requested but no CUDA device is available")

    with step(f"reading {args.image}"):
        image = read_image(args.image)
        validate_volume(image)
    # Check every prompt against the image before the slow model load.
    for point in points:
        point.to_world_lps(image.geometry)
    if box is not None:
        box.corners_world_lps(image.geometry)

    if args.backend == "onnx":
        with step(f"loading ONNX model from {args.onnx_dir}"):
            session = Session(_load_onnx_model(args), image, max_windows=args.max_windows)
    else:
        checkpoint = resolve_checkpoint(args, spec.name)  # bundled, cached or downloaded once
        with step(f"loading {spec.name} weights"):
            model = build_model(spec.name, checkpoint=checkpoint, trust_checkpoint=args.trust_checkpoint)
        session = Session(model, image, device=args.device, precision=args.precision, max_windows=args.max_windows)
    if box is not None:
        with step("box prompt (encodes the model window)"):
            session.add_box(box)
    for number, point in enumerate(points, start=1):
        label = "+" if point.positive else "-"
        with step(f"click {number}/{len(points)} ({label})"):
            session.add_point(point)
    written = session.save(args.out)
    voxels = int(session.mask().sum())
    volume_ml = voxels * float(np.prod(image.spacing)) / 1000.0
    console.print(f"wrote {written} ({voxels} voxels, {volume_ml:.1f} ml)")
    return 0


def _check_onnx_arguments(args: argparse.Namespace) -> None:
    """--backend onnx takes its model from --onnx-dir; flags meant for PyTorch weights are errors."""
    if args.onnx_dir is None:
        raise SammedError("--backend onnx needs --onnx-dir DIR (written by 'sammed export-onnx')")
    if args.checkpoint is not None:
        raise SammedError("--checkpoint is not used with --backend onnx: the weights are in the --onnx-dir files")
    if args.precision != "fp32":
        raise SammedError("--precision is for the PyTorch backend; the ONNX backend runs the exported float32 graphs")


def _load_onnx_model(args: argparse.Namespace):
    """The exported model, checked against --model when one was given."""
    from sammed.inference.onnx_backend import OnnxSamMed3D, providers_for_device
    from sammed.models import get_model_spec

    model = OnnxSamMed3D.from_dir(args.onnx_dir, providers=providers_for_device(args.device))
    if args.model is not None and model.model_name and get_model_spec(args.model).name != model.model_name:
        raise SammedError(f"--onnx-dir {args.onnx_dir} holds {model.model_name}, not {args.model}")
    return model
