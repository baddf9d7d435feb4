"""ONNX export of the 2D families: SAM ViT-B/L/H, SAM-Med2D (with or without adapters) and SAM-UNet.

Same two-graph split and file layout as the 3D export (:mod:`sammed.export.onnx`):
``encoder.onnx`` runs once per image, ``decoder.onnx`` (prompt encoder + mask decoder) per
prompt set. Differences from SAM-Med2D's own export, chosen so onnxruntime reproduces
:class:`~sammed.inference.Predictor2D` and not an approximation of it:

* the encoder takes the *preprocessed* (1, 3, S, S) input: each family's exact resize and
  normalisation stay in NumPy, shared with the PyTorch path;
* the SAM / SAM-Med2D decoder returns all four mask tokens and their IoU predictions; the
  runtime then keeps token 0 (single mask) or tokens 1-3 (multimask) exactly as the PyTorch
  decoder does, so one file serves both modes and the family's best-of-three rule;
* point-only prompts get the padding token, as in training (the caller lays the tokens out
  with :func:`~sammed.export.prompt_decoder.layout_prompt_tokens`);
* SAM-UNet's encoder has two outputs (the image embedding and the fused multi-scale map) and
  its decoder takes both.

Importing this module adds the three 2D families to :data:`sammed.export.onnx.EXPORTERS`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sammed.export.onnx import DECODER_FILE, DEFAULT_OPSET, ENCODER_FILE, EXPORTERS, OnnxExportError, export_onnx
from sammed.export.prompt_decoder import PromptDecoderGraph
from sammed.models.registry import spec_of

SAM_FAMILIES = ("sam", "sam-med2d")
SAM_UNET_FAMILY = "sam-unet"
_PROMPT_INPUTS = ["point_coords", "point_labels", "mask_input", "has_mask_input"]


class Sam2DDecoderGraph(PromptDecoderGraph):
    """SAM / SAM-Med2D prompt encoder + mask decoder returning every mask token.

    Outputs ``low_res_logits`` (B, 4, s, s) and ``iou_predictions`` (B, 4): token 0 is the
    single-mask output, tokens 1-3 the multimask ones.
    """

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        batch = point_coords.shape[0]
        return self.mask_decoder.predict_masks(
            image_embeddings.expand(batch, *image_embeddings.shape[1:]),
            self.dense_pe.expand(batch, *self.dense_pe.shape[1:]),
            self.embed_tokens(point_coords, point_labels),
            self.embed_mask(mask_input, has_mask_input),
        )


class SamUNetEncoderGraph(nn.Module):
    """SAM-UNet's encoder with its two outputs as a plain tuple (ONNX has no named tuples)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.encode_image(image)
        return features.image_embeddings, features.multi_scale_feature


class SamUNetDecoderGraph(PromptDecoderGraph):
    """SAM-UNet's prompt encoder + med-token decoder: one (B, 1, s, s) logit map per prompt set."""

    def forward(self, image_embeddings, multi_scale_feature, point_coords, point_labels, mask_input, has_mask_input):
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=self.embed_tokens(point_coords, point_labels),
            dense_prompt_embeddings=self.embed_mask(mask_input, has_mask_input),
            multi_scale_feature=multi_scale_feature,
        )


def model_metadata_2d(model: nn.Module) -> dict:
    """What the onnxruntime backend needs besides the graphs (the registry entry gives the rest)."""
    spec = spec_of(model)
    if spec is None or spec.dims != 2:
        raise OnnxExportError("export a 2D model built with sammed.models.build_model (it records its registry entry)")
    config = model.config
    return {
        "family": spec.family,
        "model": spec.name,
        "dims": 2,
        "img_size": config.img_size,
        "embedding_grid": config.embedding_grid,
        "low_res_size": model.low_res_size,
        "prompt_embed_dim": config.prompt_embed_dim,
    }


def _example_prompts(low: int) -> tuple[torch.Tensor, ...]:
    """Batch 2, 3 tokens, so no dynamic size is mistaken for a constant 1."""
    coords = torch.tensor([[[10.0, 20.0], [40.0, 50.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    labels = torch.tensor([[1.0, 0.0, -1.0]]).repeat(2, 1)
    return coords, labels, torch.zeros(2, 1, low, low), torch.ones(1)


def _prompt_dynamic_shapes() -> dict:
    batch, tokens = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("tokens", min=1, max=4096)
    return {
        "point_coords": {0: batch, 1: tokens},
        "point_labels": {0: batch, 1: tokens},
        "mask_input": {0: batch},
        "has_mask_input": None,
    }


def export_sam2d_onnx(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` for a SAM, SAM-Med2D or SAM-UNet model.

    Encoder: ``image`` (1, 3, S, S), normalised and padded/resized by the family's pipeline ->
    ``image_embeddings`` (1, C, g, g) (SAM-UNet adds ``multi_scale_feature`` (1, C/8, 4g, 4g)).
    Decoder: the embedding(s), ``point_coords`` (B, N, 2) and ``point_labels`` (B, N) in the
    model-input frame laid out by ``layout_prompt_tokens``, ``mask_input`` (B, 1, 4g, 4g) and
    ``has_mask_input`` (1,) -> ``low_res_logits`` (B, 4, 4g, 4g) and ``iou_predictions`` (B, 4)
    for SAM / SAM-Med2D, ``low_res_logits`` (B, 1, 4g, 4g) for SAM-UNet. B and N are dynamic.
    """
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        raise OnnxExportError("export a float32 model on the CPU (call model.float().cpu() first)")
    metadata = model_metadata_2d(model)
    model = model.eval()
    out_dir = Path(out_dir)
    config, low, grid = model.config, model.low_res_size, model.config.embedding_grid
    image = torch.zeros(1, 3, config.img_size, config.img_size)
    embedding = torch.zeros(1, config.prompt_embed_dim, grid, grid)
    dynamic = _prompt_dynamic_shapes()
    if metadata["family"] == SAM_UNET_FAMILY:
        encoder, encoder_outputs = SamUNetEncoderGraph(model), ["image_embeddings", "multi_scale_feature"]
        prompt_encoder = model.prompt_encoder.sam_prompt_encoder
        decoder = SamUNetDecoderGraph(prompt_encoder, model.mask_decoder)
        multi_scale = torch.zeros(1, config.prompt_embed_dim // 8, low, low)
        embeddings, names = (embedding, multi_scale), ["image_embeddings", "multi_scale_feature"]
        decoder_outputs, tokens = ["low_res_logits"], "med_token"
    elif metadata["family"] in SAM_FAMILIES:
        encoder, encoder_outputs = model.image_encoder, ["image_embeddings"]
        decoder = Sam2DDecoderGraph(model.prompt_encoder, model.mask_decoder)
        embeddings, names = (embedding,), ["image_embeddings"]
        decoder_outputs, tokens = ["low_res_logits", "iou_predictions"], "all_mask_tokens"
    else:
        raise OnnxExportError(f"no 2D ONNX exporter for the {metadata['family']} family")

    encoder_path = export_onnx(
        encoder,
        (image,),
        out_dir / ENCODER_FILE,
        input_names=["image"],
        output_names=encoder_outputs,
        metadata={**metadata, "role": "image_encoder"},
        opset=opset,
    )
    decoder_path = export_onnx(
        decoder,
        (*embeddings, *_example_prompts(low)),
        out_dir / DECODER_FILE,
        input_names=[*names, *_PROMPT_INPUTS],
        output_names=decoder_outputs,
        dynamic_shapes={**{name: None for name in names}, **dynamic},
        metadata={**metadata, "role": "prompt_decoder", "mask_tokens": tokens},
        opset=opset,
    )
    return encoder_path, decoder_path


for _family in (*SAM_FAMILIES, SAM_UNET_FAMILY):
    EXPORTERS.setdefault(_family, export_sam2d_onnx)
