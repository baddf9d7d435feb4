"""``sammed export-onnx``: write a model's encoder and prompt decoder as ONNX files."""

from __future__ import annotations

import argparse

from sammed.cli.common import add_command, add_model_arguments, console, resolve_checkpoint, step
from sammed.cli.options import bounded
from sammed.errors import SammedError

_EXPORT_EPILOG = """\
examples:
  # SAM-Med3D-turbo -> onnx/encoder.onnx and onnx/decoder.onnx
  sammed export-onnx --model sam-med3d-turbo --checkpoint sam_med3d_turbo.pth --out onnx/

  # then segment with onnxruntime instead of PyTorch
  sammed segment ct.nii.gz --point 84,58,20 --out mask.nii.gz --backend onnx --onnx-dir onnx/

The encoder takes the model window (1, 1, 128, 128, 128) and returns the image embedding; the
decoder takes the embedding, the prompt tokens and the previous low-res mask and returns the
single-mask low-res logits and the IoU prediction. Both files record the model they came from.
"""


def register(commands) -> None:
    export = add_command(
        commands,
        "export-onnx",
        "export a model to ONNX (image encoder + prompt decoder) for onnxruntime",
        "Export a model's image encoder and prompt encoder + mask decoder as two ONNX files.",
        _EXPORT_EPILOG,
    )
    add_model_arguments(
        export,
        "export untrained weights without --checkpoint (for testing the tool chain only)",
    )
    export.add_argument("--out", "-o", required=True, metavar="DIR", help="folder for encoder.onnx and decoder.onnx")
    export.add_argument("--opset", type=bounded(int, 18, 23), default=None, help="ONNX opset version, 18 to 23 (default 18)")
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sammed.export.onnx import DEFAULT_OPSET, EXPORTERS, export_model_onnx, require_onnx_exporter
    from sammed.io.outputs import output_folder, refuse_output_on_input
    from sammed.models import build_model, get_model_spec

    spec = get_model_spec(args.model)
    if spec.family not in EXPORTERS:
        raise SammedError(f"ONNX export is not available for {spec.name} ({spec.family}) yet")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SammedError(f"--out {out} exists and is not a folder")
    refuse_output_on_input(out, [args.checkpoint])
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    require_onnx_exporter()

    checkpoint = resolve_checkpoint(args, spec.name, random_weights=args.allow_random_weights)
    with step(f"loading {spec.name}" + (" weights" if checkpoint else " (random weights)")):
        model = build_model(spec.name, checkpoint=checkpoint, trust_checkpoint=args.trust_checkpoint)
    with step(f"exporting to {out} (opset {opset})"), output_folder(out):
        paths = export_model_onnx(model, out, opset=opset)
    for path in paths:
        console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
