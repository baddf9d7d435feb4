"""SAM-Med3D top-level module and its configurable builder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sammed.models.mask_decoding import PromptDecoding
from sammed.models.sam3d.config import SamMed3DConfig
from sammed.models.sam3d.image_encoder import ImageEncoderViT3D
from sammed.models.sam3d.mask_decoder import MaskDecoder3D
from sammed.models.sam3d.prompt_encoder import PromptEncoder3D


class SamMed3D(PromptDecoding):
    """Container with the official sub-module names: image_encoder, prompt_encoder, mask_decoder.

    The official ``Sam3D.forward`` is dead code for 3D; pipelines call the three parts directly,
    and so does :mod:`sammed.inference`. :meth:`predict_low_res` is a convenience for one call.
    """

    mask_threshold: float = 0.0

    def __init__(self, config: SamMed3DConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.embedding_grid
        self.image_encoder = ImageEncoderViT3D(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            window_size=config.window_size,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes),
        )
        self.prompt_encoder = PromptEncoder3D(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid, grid),
            input_image_size=(config.img_size,) * 3,
            mask_in_chans=config.mask_in_chans,
            num_point_embeddings=config.num_point_embeddings,
            aligned_point_axes=config.aligned_point_axes,
        )
        self.mask_decoder = MaskDecoder3D(
            transformer_dim=config.prompt_embed_dim,
            transformer_depth=config.decoder_depth,
            transformer_heads=config.decoder_heads,
            transformer_mlp_dim=config.decoder_mlp_dim,
        )

    # ------------------------------------------------------------------ PromptableModel3D
    @property
    def low_res_size(self) -> int:
        return 4 * self.config.embedding_grid

    @property
    def window_voxels(self) -> int:
        return self.config.img_size

    @property
    def window_spacing_mm(self) -> float:
        return self.config.window_spacing_mm

    @property
    def supports_boxes(self) -> bool:
        return self.prompt_encoder.supports_boxes

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device

    def encode(self, window: torch.Tensor) -> torch.Tensor:
        """(1, 1, S, S, S) z-scored window -> (1, C, g, g, g) image embedding."""
        return self.image_encoder(window)

    def decode(
        self,
        embedding: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in window voxel indices + previous low-res logits -> (low-res logits, IoU).

        The dense positional encoding never depends on the prompts; it is computed once per
        weights (a new load or a move to another device recomputes it).
        """
        return self.predict_low_res(
            embedding, point_coords, point_labels, mask_input, boxes=boxes, image_pe=self._cached_dense_pe()
        )

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        return self.upscale_logits(low_res)

    def _cached_dense_pe(self) -> torch.Tensor:
        gaussian = self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        key = (gaussian.data_ptr(), gaussian._version, gaussian.device, torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_dense_pe_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self.prompt_encoder.get_dense_pe())
            self.__dict__["_dense_pe_cache"] = cached
        return cached[1]

    def upscale_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> input-size logits, trilinear with align_corners=False (official)."""
        size = (self.config.img_size,) * 3
        return F.interpolate(low_res, size=size, mode="trilinear", align_corners=False)


def build_sam_med3d(config: SamMed3DConfig | None = None) -> SamMed3D:
    """Build an uninitialised (randomly initialised) SAM-Med3D of the given configuration."""
    model = SamMed3D(config or SamMed3DConfig())
    model.eval()
    return model
