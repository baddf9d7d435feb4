"""``sammed segment``: prompts in, a mask with the input's exact geometry out.

This module declares the command line and chooses the pipeline; ``segment3d`` and ``segment2d``
each run one straight path (read, check prompts and output, load the model, predict, write).
"""

from __future__ import annotations

import argparse

from sammed.cli.common import add_command, add_model_arguments
from sammed.cli.options import non_negative_int, positive_int
from sammed.cli.segment2d import EPILOG_2D
from sammed.cli.segment_backend import model_dims

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
    segment = add_command(
        commands,
        "segment",
        "segment an image from clicks and/or a box and write the mask",
        (
            "Segment one structure of a 3D image (NIfTI, NRRD, MHA or a DICOM folder) from prompts, "
            "or of a 2D image (PNG, JPEG, TIFF, 2D DICOM) or a volume slice with a 2D model."
        ),
        _SEGMENT_EPILOG + "\n" + EPILOG_2D,
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
        "--out",
        "-o",
        required=True,
        metavar="MASK",
        help=(
            "output mask (.nii.gz, .nii, .nrrd, .mha; .seg.nrrd: a 3D Slicer segmentation with name and colour; "
            ".dcm: a DICOM-SEG, for a DICOM series input; .png for 2D images)"
        ),
    )
    segment.add_argument(
        "--label",
        metavar="NAME",
        default=None,
        help="the segment's name in .seg.nrrd and DICOM-SEG outputs (default 'object 1')",
    )
    add_model_arguments(segment, default=None, model_help="model name (see 'sammed models list'; default sam-med3d-turbo)")
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
    segment.add_argument(
        "--scribble",
        action="append",
        default=[],
        metavar="I,J,K/I,J,K/...[:+|-]",
        help="3D: a stroke through these voxels (becomes clicks along it); ':-' negative; repeatable",
    )
    segment.add_argument(
        "--lasso",
        action="append",
        default=[],
        metavar="AXIS=K/A,B/A,B/A,B[:+|-]",
        help="3D: a closed polygon on one slice, e.g. k=15/55,45/75,45/75,62 (filled; ':-' cuts it out); repeatable",
    )
    segment.add_argument(
        "--init-mask",
        metavar="MASK",
        default=None,
        help="3D: start from this mask (label image, .seg.nrrd or DICOM-SEG on the image's grid) and refine it "
        "with the prompts (prompts optional)",
    )
    segment.add_argument(
        "--init-label",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --init-mask: use the voxels of label N (default: every non-zero voxel)",
    )
    _add_slice_arguments(segment)
    _add_auto_arguments(segment)
    segment.set_defaults(handler=run_segment)


def _add_auto_arguments(segment: argparse.ArgumentParser) -> None:
    """2D automatic mode: SAM's automatic mask generator over a grid of point prompts."""
    segment.add_argument(
        "--auto",
        action="store_true",
        help="2D models: segment everything (a grid of point prompts); --out is a label image, one value per "
        "mask, and a .json beside it lists each mask's scores and box",
    )
    segment.add_argument(
        "--points-per-side", type=positive_int, default=32, metavar="N", help="--auto: N x N point prompts (default 32)"
    )
    segment.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=0.88,
        metavar="T",
        help="--auto: keep masks whose predicted IoU is at least T (default 0.88)",
    )
    segment.add_argument(
        "--stability-score-thresh",
        type=float,
        default=0.95,
        metavar="T",
        help="--auto: keep masks whose stability score is at least T (default 0.95)",
    )
    segment.add_argument(
        "--crop-n-layers", type=non_negative_int, default=0, metavar="N", help="--auto: layers of image crops (default 0)"
    )


def _add_slice_arguments(segment: argparse.ArgumentParser) -> None:
    """The 2D-only options: which slice of a volume a 2D model segments."""
    segment.add_argument(
        "--slice", type=non_negative_int, default=None, metavar="K", help="2D models: segment slice K of a 3D volume"
    )
    segment.add_argument(
        "--axis",
        choices=["i", "j", "k"],
        default="k",
        help="2D models: the voxel axis --slice counts along (default k)",
    )


def run_segment(args: argparse.Namespace) -> int:
    """One decision, then one straight path: SAM/SAM-Med2D/SAM-UNet on pictures and slices, or a 3D model."""
    if model_dims(args) == 2:
        from sammed.cli.segment2d import run_segment2d

        return run_segment2d(args)
    from sammed.cli.segment3d import run_segment3d

    return run_segment3d(args)
