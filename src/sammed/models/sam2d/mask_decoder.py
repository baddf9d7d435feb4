"""SAM's 2D mask decoder: output tokens + prompt tokens <-> image embedding -> mask logits, IoU.

The two-way transformer (``sammed.models.common``) is shared with SAM-Med3D: it only flattens
the spatial axes of the embedding.
"""

from __future__ import annotations

from torch import nn

from sammed.models.common import MLP, LayerNorm2d, TwoWayTransformer
from sammed.models.mask_decoding import MaskDecoderBase
from sammed.models.sam2d.matmul_conv import MatmulConvTranspose2d


class MaskDecoder(MaskDecoderBase):
    """Predicts (B, M, 4h, 4w) logits; token 0 is the single-mask output, tokens 1..3 multimask.

    One image embedding may serve several prompt sets: when its batch differs from the prompt
    batch it is repeated (SAM). SAM-Med2D's decoder drops that repeat and expects the caller to
    batch the embedding; both give the same numbers whenever the official code runs.

    Args:
        transformer_dim: token / embedding width (256).
        num_multimask_outputs: masks returned with ``multimask_output=True`` (3).
        iou_head_depth, iou_head_hidden_dim: IoU-prediction MLP (3 layers, 256 wide).
        transformer_depth, transformer_heads, transformer_mlp_dim: two-way transformer (2, 8, 2048).
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        transformer_depth: int = 2,
        transformer_heads: int = 8,
        transformer_mlp_dim: int = 2048,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer(
            depth=transformer_depth, embedding_dim=transformer_dim, num_heads=transformer_heads, mlp_dim=transformer_mlp_dim
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(  # kernel == stride: run as matmuls (same keys)
            MatmulConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            MatmulConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
