"""SAM-UNet's mask decoder: SAM's two-way transformer and upscaling plus a "med token" head.

The official repo strips SAM's IoU token, mask tokens, hypernetwork MLPs and IoU head, and adds
(HQ-SAM style) one learnable ``med_token``, its hypernetwork ``hf_mlp`` and a conv refinement
``embedding_maskfeature`` of the upscaled embedding, to which the encoder's fused multi-scale
map is added. Output: one mask logit map per prompt, no IoU score.
"""

from __future__ import annotations

import torch
from torch import nn

from sammed.models.common import MLP, LayerNorm2d


class SamMaskDecoderTrunk(nn.Module):
    """What is left of SAM's MaskDecoder in SAM-UNet: ``transformer`` and ``output_upscaling``."""

    def __init__(self, transformer: nn.Module, output_upscaling: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.output_upscaling = output_upscaling


class MedMaskDecoder(nn.Module):
    """Official ``SAMMaskDecoderWrapper_Med`` (keys ``sam_mask_decoder``, ``med_token``, ``hf_mlp``...)."""

    def __init__(self, transformer: nn.Module, output_upscaling: nn.Module, transformer_dim: int = 256) -> None:
        super().__init__()
        mask_channels = transformer_dim // 8
        self.sam_mask_decoder = SamMaskDecoderTrunk(transformer, output_upscaling)
        self.med_token = nn.Embedding(1, transformer_dim)
        self.hf_mlp = MLP(transformer_dim, transformer_dim, mask_channels, 3)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(mask_channels, 2 * mask_channels, kernel_size=3, padding=1),
            LayerNorm2d(2 * mask_channels),
            nn.GELU(),
            nn.Conv2d(2 * mask_channels, mask_channels, kernel_size=3, padding=1),
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multi_scale_feature: torch.Tensor,
    ) -> torch.Tensor:
        """One image's (1, C, 16, 16) embedding and (1, 32, 64, 64) fused map -> (Bp, 1, 64, 64) logits."""
        prompts = sparse_prompt_embeddings.shape[0]
        tokens = torch.cat([self.med_token.weight.unsqueeze(0).expand(prompts, -1, -1), sparse_prompt_embeddings], 1)
        src = torch.repeat_interleave(image_embeddings, prompts, dim=0) + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, prompts, dim=0)
        batch, channels, height, width = src.shape
        hs, src = self.sam_mask_decoder.transformer(src, pos_src, tokens)
        src = src.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.sam_mask_decoder.output_upscaling(src)
        features = self.embedding_maskfeature(upscaled) + multi_scale_feature.repeat(prompts, 1, 1, 1)
        hyper_in = self.hf_mlp(hs[:, 0, :]).unsqueeze(1)
        batch, channels, height, width = features.shape
        return (hyper_in @ features.view(batch, channels, height * width)).view(batch, 1, height, width)
