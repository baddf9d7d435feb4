"""Losses of the 2D recipes (spec: SAM-Med2D §4.3, SAM-UNet §4.3).

Both are sums of a focal term, a soft Dice term and (SAM-Med2D only) an IoU-regression term, each
computed over the **whole batch tensor** as the official code does (not averaged per sample):

* SAM-Med2D ``FocalDiceloss_IoULoss``: ``20 * focal + dice + mse(soft IoU, predicted IoU)``;
* SAM-UNet: ``focal + 20 * dice`` (the weights reversed), no IoU term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EPS = 1e-12


def focal_term(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss summed over all pixels and divided by their number."""
    p = torch.sigmoid(logits)
    positive = -alpha * target * (1 - p) ** gamma * torch.log(p + EPS)
    negative = -(1 - alpha) * (1 - target) * p**gamma * torch.log(1 - p + EPS)
    return (positive + negative).sum() / (target.numel() + EPS)


def dice_term(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)


def iou_term(logits: torch.Tensor, target: torch.Tensor, iou_prediction: torch.Tensor) -> torch.Tensor:
    """Squared error between the predicted IoUs and the batch's soft IoU (one scalar, upstream)."""
    p = torch.sigmoid(logits)
    intersection = (p * target).sum()
    soft_iou = (intersection + 1e-7) / (p.sum() + target.sum() - intersection + 1e-7)
    return ((soft_iou - iou_prediction) ** 2).mean()


@dataclass(frozen=True)
class LossWeights:
    focal: float
    dice: float
    iou: float


SAM_MED2D_WEIGHTS = LossWeights(focal=20.0, dice=1.0, iou=1.0)
SAM_UNET_WEIGHTS = LossWeights(focal=1.0, dice=20.0, iou=0.0)


class FocalDiceIoULoss(nn.Module):
    def __init__(self, weights: LossWeights) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor, iou_prediction: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.weights.focal * focal_term(logits, target) + self.weights.dice * dice_term(logits, target)
        if self.weights.iou and iou_prediction is not None:
            loss = loss + self.weights.iou * iou_term(logits, target, iou_prediction)
        return loss
