"""Prompt encoder + mask decoder as one traceable graph, for 2D and 3D SAM-family models.

The PyTorch prompt encoder pads point prompts itself, branches on ``boxes is None`` and
``masks is None`` and updates tokens through boolean-mask indexing. An exported graph needs
fixed inputs instead, so :class:`PromptDecoderGraph` takes the convention of the original SAM
ONNX export: the *caller* lays out the tokens (clicks, then either the "not a point" padding
token with label -1 or the two box corners with labels 2 and 3), and ``has_mask_input`` selects
between the mask prompt and the no-mask embedding. Every token comes out with the same float
operations as the official encoder (positional encoding, then one addition of the label's
embedding; padding tokens are exactly ``0 + not_a_point_embed``), so outputs match the PyTorch
model, not merely approximately the same function.
"""

from __future__ import annotations

import torch
from torch import nn

from sammed.onnx_format import BOX_CORNER_LABELS, NOT_A_POINT, layout_prompt_tokens  # noqa: F401  (re-exported)


class PromptDecoderGraph(nn.Module):
    """(image embedding, tokens, labels, mask prompt, has-mask flag) -> (low-res logits, IoU).

    ``prompt_encoder`` and ``mask_decoder`` are a model's own sub-modules (2D or 3D; they share
    attribute names). The dense positional encoding is prompt-independent, so it is computed once
    here and becomes a constant of the exported graph. ``multimask_output`` is fixed at export.

    Inputs: ``image_embeddings`` (1, C, *grid); ``point_coords`` (B, N, dims) in model-input voxel
    or pixel units, already padded by the caller; ``point_labels`` (B, N) in {-1, 0, 1, 2, 3};
    ``mask_input`` (B, 1, *low_res); ``has_mask_input`` (1,), 1.0 to use the mask prompt, 0.0
    for the learnt no-mask embedding.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, multimask_output: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.multimask_output = multimask_output
        with torch.no_grad():
            dense_pe = prompt_encoder.get_dense_pe().detach().clone()
        self.register_buffer("dense_pe", dense_pe, persistent=False)

    def label_embeddings(self) -> torch.Tensor:
        """Rows indexed by ``label + 1``: not-a-point, negative, positive (, box corner 1, 2)."""
        encoder = self.prompt_encoder
        return torch.cat([encoder.not_a_point_embed.weight, *(e.weight for e in encoder.point_embeddings)], dim=0)

    def embed_tokens(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """Sparse prompt tokens (B, N, C), the official per-token arithmetic without masked writes."""
        encoder = self.prompt_encoder
        positional = encoder.pe_layer.forward_with_coords(point_coords + 0.5, encoder.input_image_size)
        is_padding = (point_labels == NOT_A_POINT).unsqueeze(-1)
        positional = torch.where(is_padding, torch.zeros_like(positional), positional)
        return positional + self.label_embeddings()[(point_labels + 1).long()]

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense prompt (B, C, *grid): the down-scaled mask prompt, or the no-mask embedding."""
        encoder = self.prompt_encoder
        from_mask = encoder.mask_downscaling(mask_input)
        spatial = (1,) * (from_mask.ndim - 2)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, *spatial)
        use_mask = has_mask_input.reshape(1, 1, *spatial) > 0.5
        return torch.where(use_mask, from_mask, no_mask.expand_as(from_mask))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = point_coords.shape[0]
        # Expanded to the prompt batch up front, so the decoder's repeat branch is never traced.
        embeddings = image_embeddings.expand(batch, *image_embeddings.shape[1:])
        dense_pe = self.dense_pe.expand(batch, *self.dense_pe.shape[1:])
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=dense_pe,
            sparse_prompt_embeddings=self.embed_tokens(point_coords, point_labels),
            dense_prompt_embeddings=self.embed_mask(mask_input, has_mask_input),
            multimask_output=self.multimask_output,
        )

