"""SAM-Med3D mask decoder: tokens + image embedding -> low-res 3D mask logits and IoU."""

from __future__ import annotations

from torch import nn

from sammed.models.common import MLP, LayerNorm3d, PatchConvTranspose3d
from sammed.models.mask_decoding import MaskDecoderBase
from sammed.models.sam3d.transformer import TwoWayTransformer3D


class MaskDecoder3D(MaskDecoderBase):
    """Predicts (B, M, 4g, 4g, 4g) logits; token 0 is the single-mask output, 1..3 multimask."""

    def __init__(
        self,
        transformer_dim: int = 384,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        transformer_depth: int = 2,
        transformer_heads: int = 8,
        transformer_mlp_dim: int = 2048,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer3D(
            depth=transformer_depth, embedding_dim=transformer_dim, num_heads=transformer_heads, mlp_dim=transformer_mlp_dim
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            PatchConvTranspose3d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(transformer_dim // 4),
            nn.GELU(),
            PatchConvTranspose3d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
