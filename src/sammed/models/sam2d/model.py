"""SAM / SAM-Med2D top-level module and its configurable builder.

One architecture serves both families: SAM ViT-B/L/H at 1024 and SAM-Med2D (ViT-B at 256
with an adapter in every block). The attribute names are the official ones
(``image_encoder``, ``prompt_encoder``, ``mask_decoder``; ``pixel_mean``/``pixel_std`` are
non-persistent buffers, as in segment-anything), so ``sam_vit_b_01ec64.pth`` and
``sam-med2d_b.pth['model']`` load strictly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch

from sammed.models.mask_decoding import PromptDecoding
from sammed.models.sam2d.config import ADAPTER_KEY, PIXEL_MEAN, PIXEL_STD, Sam2DConfig  # noqa: F401  (re-exported)
from sammed.models.sam2d.image_encoder import ImageEncoderViT
from sammed.models.sam2d.mask_decoder import MaskDecoder
from sammed.models.sam2d.prompt_encoder import PromptEncoder


class Sam2D(PromptDecoding):
    """Container of the three official parts plus the normalisation buffers.

    Pipelines call :meth:`encode_image` once per image and :meth:`predict_low_res` per prompt;
    :mod:`sammed.inference.predictor2d` does that with the family's pre/post-processing.
    """

    def __init__(self, config: Sam2DConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.embedding_grid
        self.image_encoder = ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            window_size=config.window_size,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes),
            adapter=config.encoder_adapter,
            adapter_mlp_ratio=config.adapter_mlp_ratio,
        )
        self.image_encoder.set_adapter_bypass(config.bypass_adapters)
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer_depth=config.decoder_depth,
            transformer_heads=config.decoder_heads,
            transformer_mlp_dim=config.decoder_mlp_dim,
        )
        # Non-persistent, as in segment-anything (not in the checkpoints); the pipelines normalise
        # on the CPU in NumPy with the same values, which is what the official predictors do.
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)

    @property
    def low_res_size(self) -> int:
        """Side of the low-res logits and of the mask prompt (4x the embedding grid)."""
        return 4 * self.config.embedding_grid

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised, padded input -> image embedding (B, C, S/16, S/16)."""
        return self.image_encoder(x)


def drop_adapter_weights(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The SAM-Med2D weights without the 72 adapter tensors, for a model built without adapters."""
    return OrderedDict((k, v) for k, v in state_dict.items() if ADAPTER_KEY not in k)


def build_sam2d(config: Sam2DConfig | None = None) -> Sam2D:
    """Build an uninitialised (randomly initialised) SAM / SAM-Med2D of the given configuration."""
    model = Sam2D(config or Sam2DConfig())
    model.eval()
    return model
