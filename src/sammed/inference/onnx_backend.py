"""Run an exported SAM-Med3D with onnxruntime behind the interface :class:`Session` uses.

``Session(OnnxSamMed3D.from_dir(folder), image)`` segments exactly as with the PyTorch model
(same windows, clicks, mask feedback and paste-back); only the two networks run in
onnxruntime. The files come from :func:`sammed.export.export_sam_med3d_onnx` and describe
themselves through their ``sammed.*`` metadata, so no PyTorch weights are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sammed.errors import SammedError
from sammed.onnx_format import DECODER_FILE, ENCODER_FILE, FORMAT_VERSION, METADATA_PREFIX, layout_prompt_tokens


class OnnxBackendError(SammedError):
    """Exported files are missing, unreadable, inconsistent, or onnxruntime is not installed."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxBackendError("the ONNX backend needs onnxruntime: pip install 'sammed[onnx]'") from None
    return onnxruntime


def providers_for_device(device: str) -> list[str]:
    """onnxruntime execution providers for ``cpu`` or ``cuda`` (CUDA needs onnxruntime-gpu)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in _onnxruntime().get_available_providers():
            raise OnnxBackendError("--device cuda with the ONNX backend needs onnxruntime-gpu and a CUDA device")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise OnnxBackendError(f"device must be cpu or cuda for the ONNX backend, not {device!r}")


def open_onnx_session(path: Path, role: str, providers: Sequence[str], options=None, **expected: str):
    """An onnxruntime session on a file written by :func:`sammed.export.export_onnx`, and its metadata.

    ``role`` and every ``expected`` metadata value (e.g. ``family="sam-med3d"``, ``dims="2"``)
    must match, and the export format must be this version's; otherwise a one-line error.
    """
    ort = _onnxruntime()
    if not path.is_file():
        raise OnnxBackendError(f"{path} not found; create it with 'sammed export-onnx'")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise OnnxBackendError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    metadata = {
        key[len(METADATA_PREFIX) :]: value
        for key, value in session.get_modelmeta().custom_metadata_map.items()
        if key.startswith(METADATA_PREFIX)
    }
    if metadata.get("role") != role or any(metadata.get(k) != v for k, v in expected.items()):
        what = " ".join([*expected.values(), role.replace("_", " ")])
        raise OnnxBackendError(f"{path} is not a {what} exported by sammed")
    if metadata.get("format") != FORMAT_VERSION:
        raise OnnxBackendError(f"{path} has export format {metadata.get('format')}; re-export it with this sammed")
    return session, metadata


def open_onnx_pair(
    encoder_path: Path,
    decoder_path: Path,
    providers: Sequence[str],
    options=None,
    same: Sequence[str] = ("model", "img_size", "embedding_grid", "low_res_size", "prompt_embed_dim"),
    **expected: str,
):
    """Sessions on an exported encoder and decoder that must come from one model (``same`` keys).

    Returns ``(encoder, encoder_metadata, decoder, decoder_metadata)``.
    """
    encoder, encoder_meta = open_onnx_session(encoder_path, "image_encoder", providers, options, **expected)
    decoder, decoder_meta = open_onnx_session(decoder_path, "prompt_decoder", providers, options, **expected)
    mismatched = [key for key in same if encoder_meta.get(key) != decoder_meta.get(key)]
    if mismatched:
        raise OnnxBackendError(
            f"{encoder_path.name} and {decoder_path.name} come from different models ({', '.join(mismatched)} differ)"
        )
    return encoder, encoder_meta, decoder, decoder_meta


def _dense_pe_of(decoder_path: Path) -> torch.Tensor:
    """Read the constant dense positional encoding out of the decoder graph."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OnnxBackendError("the SAM-Med3D ONNX backend needs onnx: pip install 'sammed[onnx]'") from None

    graph = onnx.load(str(decoder_path)).graph
    for initializer in graph.initializer:
        if initializer.name == "dense_pe":
            return torch.from_numpy(numpy_helper.to_array(initializer).copy())
    raise OnnxBackendError(f"{decoder_path} has no dense_pe constant; re-export it with this sammed")


class OnnxSamMed3D:
    """SAM-Med3D on onnxruntime: a :class:`~sammed.models.promptable.PromptableModel3D`.

    ``encode`` and ``decode`` take and return CPU tensors like the PyTorch model. ``providers``
    are onnxruntime execution providers (CPU by default).
    """

    def __init__(
        self,
        encoder_path: str | Path,
        decoder_path: str | Path,
        providers: Sequence[str] | None = None,
        session_options=None,
    ) -> None:
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.encoder_path, self.decoder_path = Path(encoder_path), Path(decoder_path)
        self._encoder, meta, self._decoder, decoder_meta = open_onnx_pair(
            self.encoder_path,
            self.decoder_path,
            providers,
            session_options,
            same=("model", "img_size", "embedding_grid", "low_res_size", "prompt_embed_dim", "supports_boxes"),
            family="sam-med3d",
        )
        self.metadata = decoder_meta
        self.model_name = meta.get("model", "")
        self.window_voxels = int(meta["img_size"])
        self.window_spacing_mm = float(meta.get("window_spacing_mm") or self._registered_spacing())
        self.low_res_size = int(meta["low_res_size"])
        self.supports_boxes = meta["supports_boxes"] == "true"
        self.device = torch.device("cpu")  # onnxruntime takes and returns host arrays
        self.dense_pe = _dense_pe_of(self.decoder_path)  # built into the decoder graph; kept for checks
        self._record_registry_entry()

    @classmethod
    def from_dir(cls, directory: str | Path, providers: Sequence[str] | None = None, session_options=None) -> "OnnxSamMed3D":
        """Load ``encoder.onnx`` and ``decoder.onnx`` written by ``sammed export-onnx``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise OnnxBackendError(f"ONNX folder {directory} not found; create it with 'sammed export-onnx'")
        return cls(directory / ENCODER_FILE, directory / DECODER_FILE, providers, session_options)

    def _record_registry_entry(self) -> None:
        """``spec_of(model)`` works for an exported model as for a built one (names in reports)."""
        from sammed.models.registry import get_model_spec, record_spec

        try:
            record_spec(self, get_model_spec(self.model_name))
        except SammedError:
            pass  # exported from a model outside the registry

    def _registered_spacing(self) -> float:
        """Files exported before the spacing was recorded: the registry entry's, else upstream's 1.5 mm."""
        from sammed.models import get_model_spec

        try:
            return float(get_model_spec(self.model_name).config.window_spacing_mm)
        except (SammedError, AttributeError):
            return 1.5

    @property
    def providers(self) -> list[str]:
        return self._encoder.get_providers()

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        """(1, 1, S, S, S) float volume -> (1, C, g, g, g) image embedding."""
        array = np.ascontiguousarray(window.detach().cpu().numpy(), dtype=np.float32)
        (embedding,) = self._encoder.run(None, {"image": array})
        return torch.from_numpy(embedding)

    def decode(
        self,
        embedding: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as ``SamMed3D.decode`` (single mask; the dense PE is built into the graph)."""
        if boxes is not None and not self.supports_boxes:
            raise ValueError("this SAM-Med3D checkpoint has no box embedding (2 point embeddings); use points")
        has_mask = mask_input is not None
        coords, labels = layout_prompt_tokens(
            _numpy(point_coords), _numpy(point_labels), _numpy(boxes), dims=3,
            batch=mask_input.shape[0] if mask_input is not None else 1,
        )
        batch, low = coords.shape[0], self.low_res_size
        mask = _array(mask_input) if mask_input is not None else np.zeros((batch, 1, low, low, low), dtype=np.float32)
        embeddings = _array(embedding)
        if embeddings.shape[0] != 1:
            raise ValueError("the exported decoder takes one image embedding (batch 1) shared by all prompts")
        low_res, iou = self._decoder.run(
            None,
            {
                "image_embeddings": embeddings,
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": mask,
                "has_mask_input": np.array([1.0 if has_mask else 0.0], dtype=np.float32),
            },
        )
        return torch.from_numpy(low_res), torch.from_numpy(iou)

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> window logits, trilinear with align_corners=False (as the model)."""
        size = (self.window_voxels,) * 3
        return F.interpolate(low_res, size=size, mode="trilinear", align_corners=False)


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else _array(tensor)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().float().numpy(), dtype=np.float32)
