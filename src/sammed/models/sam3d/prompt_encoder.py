"""SAM-Med3D prompt encoder: points (and boxes, for the CVPR-25 variant) and mask prompts.

Point coordinates are voxel indices in the model tensor's axis order (A0, A1, A2).
Two quirks of the official model are reproduced on purpose, because the published weights
were trained with them:

* the Fourier features are ``[sin, cos, sin]`` (the third block repeats ``sin``);
* the dense grid PE builds coordinate 0 from tensor axis 1 and coordinate 1 from axis 0,
  i.e. it is transposed in (A0, A1) relative to the sparse point PE.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sammed.models.common import LayerNorm3d, PatchConv3d

Size3 = tuple[int, int, int]


class PositionEmbeddingRandom3D(nn.Module):
    """Random Fourier features of normalised 3D coordinates (buffer is in the checkpoint)."""

    def __init__(self, num_pos_feats: int = 128, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((3, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1]^3, shape (..., 3) -> (..., 3 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords), torch.sin(coords)], dim=-1)

    def forward(self, size: Size3) -> torch.Tensor:
        """Dense PE of a (s0, s1, s2) grid, channels first: (C, s0, s1, s2)."""
        s0, s1, s2 = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((s0, s1, s2), device=device, dtype=torch.float32)
        ramp_axis0 = (grid.cumsum(dim=0) - 0.5) / s1
        ramp_axis1 = (grid.cumsum(dim=1) - 0.5) / s0
        ramp_axis2 = (grid.cumsum(dim=2) - 0.5) / s2
        pe = self._pe_encoding(torch.stack([ramp_axis1, ramp_axis0, ramp_axis2], dim=-1))
        return pe.permute(3, 0, 1, 2)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: Size3) -> torch.Tensor:
        """Voxel coordinates (B, N, 3) in an image of ``image_size`` -> (B, N, C)."""
        coords = coords_input.clone()
        for axis in range(3):
            coords[:, :, axis] = coords[:, :, axis] / image_size[axis]
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder3D(nn.Module):
    """Encodes points/boxes into sparse tokens and a low-res mask into a dense field."""

    def __init__(
        self,
        embed_dim: int = 384,
        image_embedding_size: Size3 = (8, 8, 8),
        input_image_size: Size3 = (128, 128, 128),
        mask_in_chans: int = 16,
        num_point_embeddings: int = 2,
        aligned_point_axes: bool = False,
    ) -> None:
        super().__init__()
        # False: upstream, whose point encoding swaps the first two axes against the dense encoding
        # (spec 3.3; the released checkpoints learned around it). True: both on the same axes.
        self.aligned_point_axes = aligned_point_axes
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        # 0 = negative click, 1 = positive click; the CVPR-25 box variant adds 2/3 = box corners.
        self.num_point_embeddings = num_point_embeddings
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = tuple(4 * s for s in image_embedding_size)
        self.mask_downscaling = nn.Sequential(
            PatchConv3d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            nn.GELU(),
            PatchConv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            PatchConv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def supports_boxes(self) -> bool:
        return self.num_point_embeddings >= 4

    def get_dense_pe(self) -> torch.Tensor:
        """Dense positional encoding of the image-embedding grid, (1, C, g0, g1, g2)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        if self.aligned_point_axes:  # (A0, A1, A2) enter as upstream's (A1, A0, A2)
            points = points[..., [1, 0, 2]]
        points = points + 0.5  # centre of the voxel
        if pad:
            padding_point = torch.zeros((points.shape[0], 1, 3), device=points.device)
            padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, padding_point], dim=1)
            labels = torch.cat([labels, padding_label], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        embedding[labels == -1] = 0.0
        embedding[labels == -1] += self.not_a_point_embed.weight
        embedding[labels == 0] += self.point_embeddings[0].weight
        embedding[labels == 1] += self.point_embeddings[1].weight
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (B, 6) as two corners (A0, A1, A2 min; max) -> (B, 2, C)."""
        if not self.supports_boxes:
            raise ValueError("this SAM-Med3D checkpoint has no box embedding (2 point embeddings); use points")
        boxes = boxes + 0.5
        corners = boxes.reshape(-1, 2, 3)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        embedding[:, 0, :] += self.point_embeddings[2].weight
        embedding[:, 1, :] += self.point_embeddings[3].weight
        return embedding

    @staticmethod
    def _batch_size(points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def _device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse (B, N(+1), C) and dense (B, C, g0, g1, g2) embeddings."""
        batch = self._batch_size(points, boxes, masks)
        sparse = torch.empty((batch, 0, self.embed_dim), device=self._device())
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense
