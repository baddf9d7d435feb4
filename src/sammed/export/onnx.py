"""ONNX export: a model's image encoder and its prompt encoder + mask decoder as two graphs.

Two graphs because they run at different rates: the encoder once per image (or 3D window),
the decoder at every click. :func:`export_onnx` is family-agnostic (any module, any example
inputs); :func:`export_sam_med3d_onnx` applies it to SAM-Med3D. The files carry ``sammed.*``
metadata (role, model name, sizes) so :mod:`sammed.inference.onnx_backend` can run them without
PyTorch weights.

Export uses PyTorch's ``torch.export``-based exporter: the older TorchScript exporter has no
translation for ``logaddexp``, which the exact windowed attention of the 3D encoder uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from sammed.errors import SammedError
from sammed.export.prompt_decoder import PromptDecoderGraph
from sammed.models.registry import spec_of
from sammed.onnx_format import (  # noqa: F401  (the file layout, shared with the runtimes)
    DECODER_FILE,
    ENCODER_FILE,
    FORMAT_VERSION,
    METADATA_PREFIX,
    read_onnx_metadata,
)

DEFAULT_OPSET = 18
# ONNX protobufs cannot exceed 2 GiB; larger models keep their weights in a side file.
_SINGLE_FILE_LIMIT_BYTES = 1_800_000_000


class OnnxExportError(SammedError):
    """The ONNX tool chain is missing or a model cannot be exported."""


def require_onnx_exporter() -> None:
    """Fail with one clear line when the optional export dependencies are absent."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise OnnxExportError(
            f"ONNX export needs the 'onnx' extra ({exc.name} is not installed): pip install 'sammed[onnx]'"
        ) from None


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``module`` called on ``example_inputs`` to ``path``, written atomically.

    ``dynamic_shapes`` maps the module's ``forward`` argument names to ``{axis: torch.export.Dim}``
    (``None`` for fully static inputs). ``metadata`` values are stored as strings under
    ``sammed.<key>``. Weights stay inside the file unless the model exceeds the 2 GiB protobuf
    limit, in which case they go to ``<name>.data`` beside it.
    """
    require_onnx_exporter()
    path = Path(path)
    module = module.eval()
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            module,
            tuple(example_inputs),
            dynamo=True,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dict(dynamic_shapes) if dynamic_shapes is not None else None,
            verbose=False,
        )
    entries = {"format": FORMAT_VERSION, "opset": opset, "torch": torch.__version__, **(metadata or {})}
    program.model.metadata_props.update({METADATA_PREFIX + k: _as_text(v) for k, v in entries.items()})
    weight_bytes = sum(p.numel() * p.element_size() for p in [*module.parameters(), *module.buffers()])
    _save_atomically(program, path, external_data=weight_bytes > _SINGLE_FILE_LIMIT_BYTES)
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """Hide exporter-internal notices that say nothing about the exported model (torchvision ops
    it skips registering, a deprecated pytree check, dynamic-axis renaming)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            yield
    finally:
        registration.setLevel(level)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _save_atomically(program, path: Path, external_data: bool) -> None:
    """Write into a temporary folder beside ``path``, then move the file(s) into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        program.save(staging / path.name, external_data=external_data)
        written = sorted(staging.iterdir(), key=lambda p: p.name == path.name)  # the .onnx file last
        for file in written:
            os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _model_metadata(model: nn.Module) -> dict[str, Any]:
    """What a runtime needs to know about a SAM-Med3D model besides its weights."""
    config = model.config
    spec = spec_of(model)
    return {
        "family": "sam-med3d",
        "model": spec.name if spec is not None else "",
        "dims": 3,
        "img_size": config.img_size,
        "embedding_grid": config.embedding_grid,
        "low_res_size": model.low_res_size,
        "prompt_embed_dim": config.prompt_embed_dim,
        "supports_boxes": bool(model.supports_boxes),
        "window_spacing_mm": float(model.window_spacing_mm),
    }


def export_sam_med3d_onnx(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` for a SAM-Med3D model into ``out_dir``.

    Encoder: ``image`` (1, 1, S, S, S) -> ``image_embeddings`` (1, C, g, g, g). Decoder (single
    mask, dense PE built in): ``image_embeddings``, ``point_coords`` (B, N, 3) and
    ``point_labels`` (B, N) laid out by :func:`~sammed.export.prompt_decoder.layout_prompt_tokens`,
    ``mask_input`` (B, 1, L, L, L), ``has_mask_input`` (1,) -> ``low_res_logits`` (B, 1, L, L, L)
    and ``iou_predictions`` (B, 1). B and N are dynamic.
    """
    out_dir = Path(out_dir)
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        raise OnnxExportError("export a float32 model on the CPU (call model.float().cpu() first)")
    model = model.eval()
    config, low = model.config, model.low_res_size
    grid = config.embedding_grid
    metadata = _model_metadata(model)

    image = torch.zeros(1, 1, config.img_size, config.img_size, config.img_size)
    encoder_path = export_onnx(
        model.image_encoder,
        (image,),
        out_dir / ENCODER_FILE,
        input_names=["image"],
        output_names=["image_embeddings"],
        metadata={**metadata, "role": "image_encoder"},
        opset=opset,
    )

    decoder = PromptDecoderGraph(model.prompt_encoder, model.mask_decoder, multimask_output=False)
    batch, tokens = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("tokens", min=1, max=4096)
    # Example inputs with batch 2 and 3 tokens, so no size is mistaken for a constant 1.
    example = (
        torch.zeros(1, config.prompt_embed_dim, grid, grid, grid),
        torch.tensor([[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0], [0.0, 0.0, 0.0]]]).repeat(2, 1, 1),
        torch.tensor([[1.0, 0.0, -1.0]]).repeat(2, 1),
        torch.zeros(2, 1, low, low, low),
        torch.ones(1),
    )
    decoder_path = export_onnx(
        decoder,
        example,
        out_dir / DECODER_FILE,
        input_names=["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
        output_names=["low_res_logits", "iou_predictions"],
        dynamic_shapes={
            "image_embeddings": None,
            "point_coords": {0: batch, 1: tokens},
            "point_labels": {0: batch, 1: tokens},
            "mask_input": {0: batch},
            "has_mask_input": None,
        },
        metadata={**metadata, "role": "prompt_decoder", "multimask_output": False},
        opset=opset,
    )
    return encoder_path, decoder_path


# Family -> exporter writing (encoder, decoder) files into a folder; 2D families add theirs here.
EXPORTERS = {"sam-med3d": export_sam_med3d_onnx}


def export_model_onnx(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> tuple[Path, Path]:
    """Export a registry-built model with its family's exporter."""
    spec = spec_of(model)
    family = spec.family if spec is not None else None
    if family not in EXPORTERS:
        available = ", ".join(sorted(EXPORTERS))
        raise OnnxExportError(f"ONNX export is not available for the {family or 'unknown'} family yet (available: {available})")
    return EXPORTERS[family](model, out_dir, opset=opset)
