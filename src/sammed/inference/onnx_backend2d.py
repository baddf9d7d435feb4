"""Run an exported 2D model (SAM, SAM-Med2D, SAM-UNet) with onnxruntime behind :class:`Predictor2D`.

``Predictor2D(OnnxSam2D.from_dir(folder))`` segments exactly as with the PyTorch model: the
family's preprocessing, prompt scaling, mask selection and post-processing are the same Python
code (the registry entry's pipeline); only the two networks run in onnxruntime. The files come
from :func:`sammed.export.onnx2d.export_sam2d_onnx` (``sammed export-onnx``) and describe
themselves through their ``sammed.*`` metadata, so no PyTorch weights are needed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sammed.errors import SammedError
from sammed.inference.onnx_backend import OnnxBackendError, open_onnx_pair
from sammed.models.registry import record_spec
from sammed.onnx_format import DECODER_FILE, ENCODER_FILE, layout_prompt_tokens

SAM_UNET_FAMILY = "sam-unet"
_SHARED_KEYS = ("family", "model", "img_size", "embedding_grid", "low_res_size", "prompt_embed_dim")


class OnnxSam2D:
    """A 2D model on onnxruntime with the surface :class:`~sammed.inference.Predictor2D` uses.

    ``encode_image(x)`` and ``predict_low_res(...)`` take and return CPU tensors like the PyTorch
    models (:class:`~sammed.models.sam2d.Sam2D`, :class:`~sammed.models.sam2d.sam_unet.SamUNet`);
    ``spec`` is the registry entry named in the files (its pipeline does the pre/post-processing).
    """

    def __init__(
        self,
        encoder_path: str | Path,
        decoder_path: str | Path,
        providers: Sequence[str] | None = None,
        session_options=None,
    ) -> None:
        from sammed.models import get_model_spec

        providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.encoder_path, self.decoder_path = Path(encoder_path), Path(decoder_path)
        self._encoder, meta, self._decoder, decoder_meta = open_onnx_pair(
            self.encoder_path, self.decoder_path, providers, session_options, same=_SHARED_KEYS, dims="2"
        )
        self.metadata = decoder_meta
        self.model_name = meta.get("model", "")
        self.family = meta["family"]
        try:
            spec = get_model_spec(self.model_name)
        except SammedError:
            raise OnnxBackendError(f"{self.encoder_path} holds an unknown model {self.model_name!r}") from None
        # The registry entry's conventions at the exported input size (the files say which).
        pipeline = replace(spec.preprocessing, model_size=int(meta["img_size"]))
        self.spec = replace(spec, preprocessing_source=pipeline)
        record_spec(self, self.spec)
        self.low_res_size = int(meta["low_res_size"])
        self.device = torch.device("cpu")  # tensors in and out live on the CPU

    @classmethod
    def from_dir(
        cls, directory: str | Path, providers: Sequence[str] | None = None, session_options=None
    ) -> "OnnxSam2D":
        """Load ``encoder.onnx`` and ``decoder.onnx`` written by ``sammed export-onnx``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise OnnxBackendError(f"ONNX folder {directory} not found; create it with 'sammed export-onnx'")
        return cls(directory / ENCODER_FILE, directory / DECODER_FILE, providers, session_options)

    @property
    def providers(self) -> list[str]:
        return self._encoder.get_providers()

    def encode_image(self, x: torch.Tensor):
        """(1, 3, S, S) model input -> the image embedding (SAM-UNet: its two-part features)."""
        outputs = self._encoder.run(None, {"image": _numpy(x)})
        if self.family == SAM_UNET_FAMILY:
            from sammed.models.sam2d.sam_unet.model import SamUNetFeatures

            return SamUNetFeatures(*(torch.from_numpy(o) for o in outputs))
        return torch.from_numpy(outputs[0])

    def predict_low_res(
        self,
        features,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
        image_pe: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as the PyTorch models' ``predict_low_res`` (prompts in the model frame);
        ``image_pe`` is accepted and unused: the dense positional encoding is built into the graph."""
        coords, labels = layout_prompt_tokens(_numpy(point_coords), _numpy(point_labels), _numpy(boxes), dims=2)
        batch, low = coords.shape[0], self.low_res_size
        has_mask = mask_input is not None
        given = _numpy(mask_input)
        mask = given if given is not None else np.zeros((1, 1, low, low), dtype=np.float32)
        if mask.shape[0] != batch:  # one mask prompt shared by every prompt set
            mask = np.ascontiguousarray(np.broadcast_to(mask, (batch, *mask.shape[1:])))
        prompts = {
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": mask,
            "has_mask_input": np.array([1.0 if has_mask else 0.0], dtype=np.float32),
        }
        if self.family == SAM_UNET_FAMILY:
            embeddings = {"image_embeddings": _numpy(features.image_embeddings),
                          "multi_scale_feature": _numpy(features.multi_scale_feature)}
            (low_res,) = self._decoder.run(None, {**embeddings, **prompts})
            low_res = torch.from_numpy(low_res)
            return low_res, torch.full((batch, 1), float("nan"))
        low_res, iou = self._decoder.run(None, {"image_embeddings": _numpy(features), **prompts})
        selected = slice(1, None) if multimask_output else slice(0, 1)  # as SAM's MaskDecoder.forward
        return torch.from_numpy(low_res[:, selected]), torch.from_numpy(iou[:, selected])


def _numpy(tensor) -> np.ndarray | None:
    if tensor is None:
        return None
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().float().numpy()
    return np.ascontiguousarray(tensor, dtype=np.float32)
