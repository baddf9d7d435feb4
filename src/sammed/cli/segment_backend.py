"""What ``sammed segment`` decides before it knows whether the model is 2D or 3D.

Shared by ``segment2d`` and ``segment3d`` so neither imports the other: which pipeline a
command line asks for (from ``--model`` or the exported files of ``--onnx-dir``) and the flag
rules of the ONNX backend.
"""

from __future__ import annotations

import argparse

from sammed.errors import SammedError


def model_dims(args: argparse.Namespace) -> int:
    """2 when the chosen model is 2D (from --model, or from the files of --onnx-dir), else 3."""
    from sammed.models import get_model_spec

    if args.model is not None:
        return get_model_spec(args.model).dims
    if args.backend == "onnx" and args.onnx_dir is not None:
        return _onnx_dir_dims(args.onnx_dir) or 3
    return 3


def _onnx_dir_dims(onnx_dir: str) -> int | None:
    from pathlib import Path

    from sammed.onnx_format import ENCODER_FILE, read_onnx_metadata

    encoder = Path(onnx_dir) / ENCODER_FILE
    if not encoder.is_file():
        return None  # the backend's own loader reports the missing file
    try:
        return int(read_onnx_metadata(encoder).get("dims", 3))
    except Exception:  # noqa: BLE001 - unreadable: let the backend's loader say why
        return None


def check_onnx_arguments(args: argparse.Namespace) -> None:
    """--backend onnx takes its model from --onnx-dir; flags meant for PyTorch weights are errors."""
    if args.onnx_dir is None:
        raise SammedError("--backend onnx needs --onnx-dir DIR (written by 'sammed export-onnx')")
    if args.checkpoint is not None:
        raise SammedError("--checkpoint is not used with --backend onnx: the weights are in the --onnx-dir files")
    if args.precision != "fp32":
        raise SammedError("--precision is for the PyTorch backend; the ONNX backend runs the exported float32 graphs")
