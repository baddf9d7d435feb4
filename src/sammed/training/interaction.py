"""The simulated interactive session of one training step (spec §11.2, ``interaction``).

The image is encoded once; then ``num_clicks`` rounds each add a click drawn uniformly from the
current error region (false negatives positive, false positives negative), run the prompt
encoder with the previous low-resolution logits as the mask prompt, decode one mask and add a
Dice + cross-entropy term. One round drawn in ``mask_only_round_range`` and the last round get no
new point, so the model learns to refine from its own mask alone.

Differences from ``train.py``, chosen so that training matches :class:`sammed.inference.Session`:
the error region uses ``logits > 0`` (upstream thresholds logits at 0.5), the fed-back mask is
the decoder's own low-res output (upstream re-samples the up-scaled logits), and it is detached
so that rounds share only the image embedding in the graph (memory). With ``multi_click`` all
clicks so far are fed, as inference does; ``multi_click=False`` feeds only the newest, the
upstream default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sammed.evaluation.official_clicks import random_sample_next_click
from sammed.training.config import TrainingConfigError


def dice_ce_loss() -> nn.Module:
    """MONAI ``DiceCELoss(sigmoid=True, squared_pred=True)``: the official loss (BCE for 1 channel)."""
    try:
        from monai.losses import DiceCELoss
    except ImportError as exc:
        raise TrainingConfigError("training needs MONAI: pip install 'sammed[train]'") from exc

    return DiceCELoss(sigmoid=True, squared_pred=True, reduction="mean")


@dataclass
class InteractionResult:
    loss: torch.Tensor
    dice_per_round: list[float]
    final_logits: torch.Tensor


def sample_error_clicks(logits: torch.Tensor, target: torch.Tensor, rng: np.random.RandomState) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per batch item from its error region -> coords ``(B,1,3)`` float, labels ``(B,1)``."""
    coords, labels = [], []
    prediction = (logits.detach() > 0).cpu()
    truth = target.detach().cpu()
    for i in range(target.shape[0]):
        point, label = random_sample_next_click(prediction[i, 0], truth[i, 0], "random", rng)
        coords.append(point.reshape(1, 3))
        labels.append(label.reshape(1))
    device = logits.device
    return torch.stack(coords).float().to(device), torch.stack(labels).float().to(device)


def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean Dice of ``logits > 0`` against the binary target (an empty pair counts as 1)."""
    pred = logits.detach() > 0
    truth = target > 0.5
    inter = (pred & truth).flatten(1).sum(1).float()
    total = pred.flatten(1).sum(1).float() + truth.flatten(1).sum(1).float()
    dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return float(dice.mean())


def run_interaction(
    model: nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    loss_fn: nn.Module,
    num_clicks: int,
    rng: np.random.RandomState,
    mask_only_round_range: tuple[int, int] = (2, 9),
    multi_click: bool = True,
    target_valid: torch.Tensor | None = None,
    first_clicks: torch.Tensor | None = None,
    first_round_weight: float = 1.0,
) -> InteractionResult:
    """Encode ``image`` (B,1,S,S,S) once and run the click rounds; the loss is summed over rounds.

    ``target`` is ``(B, K, S, S, S)``: K binary targets per window (K = 1 is the official recipe).
    Every valid target (``target_valid`` ``(B, K)``, default all) runs its own click session on
    its window's embedding, so one encoder pass serves K decoder sessions. ``first_clicks``
    ``(B, K, 3)`` gives a target's first (positive) click where finite, e.g. the window centre
    when windows are centred on the click as at inference; NaN rows draw it as usual.
    ``first_round_weight`` scales the first round's loss (1: the official plain sum): the
    one-click mask is what a user sees first, and with seven rounds it is a seventh of the loss.
    """
    core = model
    embedding = core.image_encoder(image)
    if target_valid is None:
        target_valid = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
    window_of_target = torch.arange(target.shape[0], device=target.device)[:, None].expand(target.shape[:2])[target_valid]
    embedding = embedding[window_of_target]
    target = target[target_valid][:, None]
    given = first_clicks[target_valid] if first_clicks is not None else None
    batch = target.shape[0]
    low = core.low_res_size
    mask_input = torch.zeros(batch, 1, low, low, low, device=image.device, dtype=embedding.dtype)
    logits = torch.zeros_like(target)
    low_bound, high_bound = mask_only_round_range
    mask_only_round = int(rng.randint(low_bound, high_bound)) if high_bound > low_bound else -1
    all_coords, all_labels = [], []
    loss = image.new_zeros(())
    dices = []
    for round_index in range(num_clicks):
        coords, labels = sample_error_clicks(logits, target, rng)  # drawn every round, as upstream
        if round_index == 0 and given is not None:
            use = torch.isfinite(given).all(dim=1)
            coords[use, 0] = given[use].to(coords)
            labels[use, 0] = 1.0
        all_coords.append(coords)
        all_labels.append(labels)
        if round_index == mask_only_round or (round_index == num_clicks - 1 and num_clicks > 1):
            point_coords = point_labels = None
        elif multi_click:
            point_coords, point_labels = torch.cat(all_coords, 1), torch.cat(all_labels, 1)
        else:
            point_coords, point_labels = coords, labels
        low_res, _ = core.predict_low_res(embedding, point_coords, point_labels, mask_input)
        logits = core.upscale_logits(low_res)
        round_loss = loss_fn(logits.float(), target)
        loss = loss + (first_round_weight * round_loss if round_index == 0 else round_loss)
        mask_input = low_res.detach()
        dices.append(batch_dice(logits, target))
    return InteractionResult(loss=loss, dice_per_round=dices, final_logits=logits.detach())


class InteractiveTraining(nn.Module):
    """The whole interaction as one ``forward`` so DistributedDataParallel can wrap it.

    DDP synchronises gradients of what runs inside the wrapped module's forward; the SAM-Med3D
    container has no forward of its own (upstream's is dead code), so this module provides one.
    ``self.model`` is the bare network whose ``state_dict`` goes into checkpoints.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, num_clicks: int, mask_only_round_range: tuple[int, int],
                 multi_click: bool, first_round_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.num_clicks = num_clicks
        self.mask_only_round_range = tuple(mask_only_round_range)
        self.multi_click = multi_click
        self.first_round_weight = first_round_weight

    def forward(self, image: torch.Tensor, target: torch.Tensor, rng: np.random.RandomState,
                target_valid: torch.Tensor | None = None, first_clicks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        result = run_interaction(
            self.model, image, target, self.loss_fn, self.num_clicks, rng, self.mask_only_round_range, self.multi_click,
            target_valid, first_clicks, self.first_round_weight,
        )
        return result.loss, torch.tensor(result.dice_per_round)
