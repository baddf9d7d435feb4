"""Mask-decoder forward pass shared by SAM (2D) and SAM-Med3D: the maths is the same in any dimension.

Subclasses build the official sub-modules (``transformer``, ``iou_token``, ``mask_tokens``,
``output_upscaling``, ``output_hypernetworks_mlps``, ``iou_prediction_head``); this base only
runs them, so state-dict keys are untouched.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskDecoderBase(nn.Module):
    """Token 0 is the single-mask output, tokens 1..N the multimask outputs."""

    num_mask_tokens: int

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 3 or 1, *4x spatial) and raw IoU predictions (B, 3 or 1; no sigmoid)."""
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        """All mask tokens: logits (B, T, *upscaled spatial) and IoU predictions (B, T)."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        batch = tokens.shape[0]

        # One image embedding may serve several prompt sets (official repeat_interleave path).
        src = image_embeddings
        if src.shape[0] != batch:
            src = torch.repeat_interleave(src, batch, dim=0)
        src = src + dense_prompt_embeddings
        pos_src = image_pe if image_pe.shape[0] == batch else torch.repeat_interleave(image_pe, batch, dim=0)
        b, c = src.shape[:2]
        spatial = src.shape[2:]

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).view(b, c, *spatial))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c = upscaled.shape[:2]
        out_spatial = upscaled.shape[2:]
        masks = (hyper_in @ upscaled.view(b, c, -1)).view(b, -1, *out_spatial)
        return masks, self.iou_prediction_head(iou_token_out)


class PromptDecoding(nn.Module):
    """The prompt encoder + mask decoder call on a cached embedding, shared by SAM (2D) and
    SAM-Med3D: subclasses own ``prompt_encoder`` and ``mask_decoder`` (official names)."""

    prompt_encoder: nn.Module
    mask_decoder: nn.Module

    def predict_low_res(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
        image_pe: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in the model input frame -> (low-res logits, raw IoU predictions).

        Points (B, N, d) with labels (B, N), boxes (B, 2d) as two corners, mask_input (B, 1,
        *low-res grid). ``image_pe`` may pass a cached ``prompt_encoder.get_dense_pe()`` (it
        depends on the weights only).
        """
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe() if image_pe is None else image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

