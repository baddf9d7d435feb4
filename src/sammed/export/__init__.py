"""Model export to portable formats (ONNX) for runtimes other than PyTorch."""

from sammed.export import onnx2d as _onnx2d  # noqa: F401, E402  (adds the 2D families to EXPORTERS)
from sammed.export.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    EXPORTERS,
    OnnxExportError,
    export_model_onnx,
    export_onnx,
    export_sam_med3d_onnx,
    read_onnx_metadata,
)
from sammed.export.prompt_decoder import PromptDecoderGraph, layout_prompt_tokens

__all__ = [
    "DECODER_FILE",
    "ENCODER_FILE",
    "EXPORTERS",
    "OnnxExportError",
    "PromptDecoderGraph",
    "export_model_onnx",
    "export_onnx",
    "export_sam_med3d_onnx",
    "layout_prompt_tokens",
    "read_onnx_metadata",
]
