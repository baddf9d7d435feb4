"""SAM-UNet top-level module: frozen SAM ViT-B at 256 + ResNet branch + multi-scale decoder.

Attribute names are the official ones (``image_encoder.sam_img_encoder``,
``prompt_encoder.sam_prompt_encoder``, ``mask_decoder.*``, ``resnet.stage0..4``,
``adapters_in``, ``adapters_bridge``, ``embedding_encoder``), in the official order, so the
trainers' ``{'model': state_dict}`` files load strictly. The ViT, the prompt encoder, the
two-way transformer and the output upscaling are SAM's modules from :mod:`sammed.models.sam2d`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sammed.models.sam2d.image_encoder import ImageEncoderViT
from sammed.models.sam2d.model import Sam2D
from sammed.models.sam2d.prompt_encoder import PromptEncoder
from sammed.models.sam2d.sam_unet.adapters import Reshaper, upsampler_x4
from sammed.models.sam2d.sam_unet.config import SamUNetConfig
from sammed.models.sam2d.sam_unet.mask_decoder import MedMaskDecoder
from sammed.models.sam2d.sam_unet.resnet import ResNetBranch


class SamUNetFeatures(NamedTuple):
    """What the encoder hands the decoder for one batch of images."""

    image_embeddings: torch.Tensor  # (B, 256, 16, 16), SAM's neck output
    multi_scale_feature: torch.Tensor  # (B, 32, 64, 64), embedding_encoder(...) + the three bridges


class ImageEncoderWrapper(nn.Module):
    """Official ``SAMImageEncodeWrapper``: only a name level (``sam_img_encoder``)."""

    def __init__(self, encoder: ImageEncoderViT) -> None:
        super().__init__()
        self.sam_img_encoder = encoder


class PromptEncoderWrapper(nn.Module):
    """Official ``SAMPromptEncoderWrapper``: SAM's prompt encoder under ``sam_prompt_encoder``."""

    def __init__(self, encoder: PromptEncoder) -> None:
        super().__init__()
        self.sam_prompt_encoder = encoder

    def forward(self, points, boxes, masks) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sam_prompt_encoder(points=points, boxes=boxes, masks=masks)

    def get_dense_pe(self) -> torch.Tensor:
        return self.sam_prompt_encoder.get_dense_pe()


class SamUNet(nn.Module):
    """SAM-UNet (official ``SAM_UNET``); one mask per prompt, no IoU head.

    :meth:`encode_image` runs the ViT and the ResNet in lock-step: before each global-attention
    block the matching ResNet stage is reshaped to the token grid and added; after the first
    global blocks a bridge upsamples the tokens to 64x64, and the bridges are added to the
    upsampled image embedding (fused multi-scale map). :meth:`predict_low_res` decodes one
    image's prompts. Pipelines and :func:`sammed.models.sam2d.sam_unet.infer` build on both.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    num_mask_outputs: int = 1
    has_iou_head: bool = False

    def __init__(self, config: SamUNetConfig) -> None:
        super().__init__()
        self.config = config
        if config.encoder_adapter:
            raise ValueError("SAM-UNet's ViT has no adapters (encoder_adapter must be False)")
        grid = config.embedding_grid
        # As the official builder does, build a SAM at 256 and wrap its parts; SAM's output
        # tokens, hypernetwork MLPs and IoU head are not part of SAM-UNet and are dropped.
        sam = Sam2D(config)
        sam.image_encoder.requires_grad_(False)  # frozen in the official model
        self.image_encoder = ImageEncoderWrapper(sam.image_encoder)
        self.prompt_encoder = PromptEncoderWrapper(sam.prompt_encoder)
        self.mask_decoder = MedMaskDecoder(
            sam.mask_decoder.transformer, sam.mask_decoder.output_upscaling, config.prompt_embed_dim
        )
        self.resnet = ResNetBranch(config.resnet_depth)
        stage_sizes = [config.img_size // 4 // 2**i for i in range(4)]
        self.adapters_in = nn.ModuleList(
            Reshaper(size, channels, grid, config.encoder_embed_dim)
            for size, channels in zip(stage_sizes, self.resnet.stage_channels)
        )
        if len(config.encoder_global_attn_indexes) != len(self.adapters_in):
            raise ValueError("SAM-UNet injects one ResNet stage per global-attention block: 4 are needed")
        mask_channels = config.prompt_embed_dim // 8
        self.adapters_bridge = nn.ModuleList(
            upsampler_x4(config.encoder_embed_dim, config.prompt_embed_dim, mask_channels)
            for _ in range(len(self.adapters_in) - 1)
        )
        self.embedding_encoder = upsampler_x4(config.prompt_embed_dim, config.prompt_embed_dim // 4, mask_channels)

    @property
    def low_res_size(self) -> int:
        """Side of the low-res logits and of a mask prompt (4x the embedding grid)."""
        return 4 * self.config.embedding_grid

    def encode_image(self, x: torch.Tensor) -> SamUNetFeatures:
        """(B, 3, 256, 256) normalised, padded input (fed to both branches) -> encoder features."""
        vit = self.image_encoder.sam_img_encoder
        cnn_features = self.resnet(x)
        tokens = vit.embed_patches(x)
        bridges: list[torch.Tensor | None] = [None] * len(self.adapters_bridge)
        next_block = 0
        for stage, global_index in enumerate(self.config.encoder_global_attn_indexes):
            for index in range(next_block, global_index):
                tokens = vit.blocks[index](tokens)
            tokens = tokens + self.adapters_in[stage](cnn_features[stage]).permute(0, 2, 3, 1)
            tokens = vit.blocks[global_index](tokens)
            next_block = global_index + 1
            if stage < len(bridges):  # U-Net order: the earliest block feeds the last bridge
                slot = len(bridges) - 1 - stage
                bridges[slot] = self.adapters_bridge[slot](tokens.permute(0, 3, 1, 2))
        for index in range(next_block, len(vit.blocks)):
            tokens = vit.blocks[index](tokens)
        image_embeddings = vit.neck(tokens.permute(0, 3, 1, 2))
        fused = self.embedding_encoder(image_embeddings)
        for bridge in bridges:  # ((E + B0) + B1) + B2, the official summation order
            fused = fused + bridge
        return SamUNetFeatures(image_embeddings, fused)

    def predict_low_res(
        self,
        features: SamUNetFeatures,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
        image_pe: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's prompts (model input frame) -> ((Bp, 1, 64, 64) logits, (Bp, 1) NaN).

        Points (Bp, N, 2) with labels (Bp, N), boxes (Bp, 4), mask_input (Bp, 1, 64, 64) logits.
        SAM-UNet has a single output and no IoU head: ``multimask_output`` is accepted for the
        predictor interface and changes nothing, and the IoU slot is NaN ("not predicted").
        ``image_pe`` is the cached ``prompt_encoder.get_dense_pe()``, if the caller keeps one.
        """
        del multimask_output
        if features.image_embeddings.shape[0] != 1:
            raise ValueError("predict_low_res decodes one image at a time; slice the features first")
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res = self.mask_decoder(
            image_embeddings=features.image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe() if image_pe is None else image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multi_scale_feature=features.multi_scale_feature,
        )
        return low_res, torch.full((low_res.shape[0], 1), float("nan"), device=low_res.device)


def build_sam_unet(config: SamUNetConfig | None = None) -> SamUNet:
    """Build an uninitialised SAM-UNet of the given configuration, in eval mode (BatchNorm uses running stats)."""
    model = SamUNet(config or SamUNetConfig())
    model.eval()
    return model
