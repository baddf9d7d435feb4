"""Optimizer and schedule of the SAM-Med3D recipe (spec §11.2)."""

from __future__ import annotations

import torch
from torch import nn

from sammed.training.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two learning rates: the image encoder at ``lr``, prompt encoder + decoder lower.

    Upstream lists three groups (encoder, prompt encoder, decoder); the last two share a rate, so
    keeping them separate changes nothing but the group count, which resume checks.
    """
    decoder_lr = config.lr * config.decoder_lr_scale
    groups = [
        {"params": list(model.image_encoder.parameters()), "lr": config.lr},
        {"params": list(model.prompt_encoder.parameters()), "lr": decoder_lr},
        {"params": list(model.mask_decoder.parameters()), "lr": decoder_lr},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step schedule, stepped once per epoch: lr divided by 10 at each milestone."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
