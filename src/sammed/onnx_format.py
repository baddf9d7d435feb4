"""The layout of sammed's exported ONNX files, shared by the exporter and the runtimes.

File names, the ``sammed.*`` metadata keys and the order of prompt tokens are a contract
between ``sammed.export`` (which needs torch.onnx) and the onnxruntime backends in
``sammed.inference`` (which must not import the exporter): it lives here, numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMAT_VERSION = "1"
METADATA_PREFIX = "sammed."
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
NOT_A_POINT = -1  # padding token label (its positional encoding is zeroed)
BOX_CORNER_LABELS = (2, 3)  # first / second box corner


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``sammed.*`` metadata of an exported file, without the prefix (external weight files are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def layout_prompt_tokens(
    point_coords: np.ndarray | None,
    point_labels: np.ndarray | None,
    boxes: np.ndarray | None,
    dims: int,
    batch: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrange clicks and boxes as :class:`PromptDecoderGraph` expects them (float32 arrays).

    The same token order as the PyTorch prompt encoder: clicks, then the two corners of the box
    (B, 2*dims) if there is one, otherwise one padding token at the origin with label -1. With
    neither (a mask-only prompt) there are no tokens at all; ``batch`` then gives B.
    """
    if point_coords is None and boxes is None:
        return np.zeros((batch, 0, dims), dtype=np.float32), np.zeros((batch, 0), dtype=np.float32)
    if point_coords is not None:
        coords = np.asarray(point_coords, dtype=np.float32)
        labels = np.asarray(point_labels, dtype=np.float32)
        if coords.ndim != 3 or coords.shape[2] != dims or labels.shape != coords.shape[:2]:
            raise ValueError(f"point_coords must be (B, N, {dims}) with point_labels (B, N)")
        batch = coords.shape[0]
    else:
        batch = np.asarray(boxes).shape[0]
        coords = np.zeros((batch, 0, dims), dtype=np.float32)
        labels = np.zeros((batch, 0), dtype=np.float32)
    if boxes is not None:
        corners = np.asarray(boxes, dtype=np.float32).reshape(batch, 2, dims)
        corner_labels = np.broadcast_to(np.asarray(BOX_CORNER_LABELS, dtype=np.float32), (batch, 2))
    else:
        corners = np.zeros((batch, 1, dims), dtype=np.float32)
        corner_labels = np.full((batch, 1), NOT_A_POINT, dtype=np.float32)
    return np.concatenate([coords, corners], axis=1), np.concatenate([labels, corner_labels], axis=1)
