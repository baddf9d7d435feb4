"""2D trainers: SAM-Med2D adapter fine-tuning and SAM-UNet, alone or under ``torchrun``.

SAM-Med2D (spec §4.3), per batch of images with ``mask_num`` masks each:

* phase A, one optimizer step: box or single point (coin flip), image encoder with only its
  adapters trainable, prompt encoder and decoder trainable; the mask with the highest predicted
  IoU of the three multimask outputs is kept; loss ``20 focal + dice + IoU``;
* phase B, ``iter_point`` optimizer steps on the detached embedding: each round samples
  1/3/5/9 new points from the error region (they replace the previous ones) and feeds the
  previous low-res mask as a probability map; one random round and the last round are
  mask-only; the prompt encoder runs without gradient, so only the decoder learns here.

SAM-UNet (spec §4.3): boxes only, one optimizer step per batch, the ViT frozen and everything
else (ResNet branch, bridges, prompt encoder, decoder) trained with ``focal + 20 dice``.

Checkpoints use SAM-Med2D's layout, ``{'model': state_dict, 'optimizer': ..., 'epoch': ...}``,
which :func:`sammed.models.build_model` reads.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from sammed.models import get_model_spec
from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.models.sam2d.model import ADAPTER_KEY
from sammed.training.checkpointing import LATEST, plain_scheduler_state, save_checkpoint
from sammed.training.config import TrainingConfigError
from sammed.training.data2d import Med2DDataset, load_med2d_cases, pipeline_for
from sammed.training.distributed import setup_distributed, teardown_distributed
from sammed.training.losses2d import SAM_MED2D_WEIGHTS, SAM_UNET_WEIGHTS, FocalDiceIoULoss

FAMILIES = ("sam-med2d", "sam-unet")


@dataclass(frozen=True)
class Train2DConfig:
    """Defaults are upstream's ``train.py`` (SAM-Med2D) values."""

    model: str = "sam-med2d"
    epochs: int = 15
    max_steps: int | None = None  # batches
    time_limit_minutes: float | None = None
    batch_size: int = 2  # images per process; each brings mask_num prompts
    mask_num: int = 5
    lr: float = 1e-4
    milestones: tuple[int, ...] = (5, 10)
    gamma: float = 0.5
    iter_point: int = 8
    point_choices: tuple[int, ...] = (1, 3, 5, 9)
    num_workers: int = 2
    seed: int = 0
    init_checkpoint: str | None = None
    model_overrides: dict = field(default_factory=dict)  # architecture fields (small test models)


@dataclass
class Train2DSummary:
    batches: int
    losses: list[float]
    checkpoint: Path | None
    model: nn.Module | None = field(default=None, repr=False)


class _Step(nn.Module):
    """One forward per optimizer step, so DDP can wrap it: encode (optional) + decode + loss."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, family: str) -> None:
        super().__init__()
        self.model, self.loss_fn, self.family = model, loss_fn, family

    def forward(self, image, features, labels, coords, point_labels, boxes, mask_input, multimask: bool, prompt_grad: bool):
        if features is None:
            features = self.model.encode_image(image)
        if self.family == "sam-unet":
            return self._unet(features, labels, boxes)
        repeat = labels.shape[0] // features.shape[0]
        embedding = torch.repeat_interleave(features, repeat, dim=0)
        points = None if coords is None else (coords, point_labels)
        with torch.set_grad_enabled(prompt_grad and torch.is_grad_enabled()):
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=embedding, image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        )
        if multimask:  # keep the output with the highest predicted IoU (upstream)
            best = iou.argmax(dim=1)
            rows = torch.arange(low_res.shape[0], device=low_res.device)
            low_res, iou = low_res[rows, best][:, None], iou[rows, best][:, None]
        logits = F.interpolate(low_res, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return self.loss_fn(logits, labels, iou), low_res.detach(), logits.detach(), features

    def _unet(self, features, labels, boxes):
        repeat = labels.shape[0] // features.image_embeddings.shape[0]
        low_res = []
        for i in range(features.image_embeddings.shape[0]):
            one = type(features)(*(f[i : i + 1] for f in features))
            low_res.append(self.model.predict_low_res(one, None, None, None, boxes=boxes[i * repeat : (i + 1) * repeat])[0])
        low_res = torch.cat(low_res)
        logits = F.interpolate(low_res, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return self.loss_fn(logits, labels), low_res.detach(), logits.detach(), features


def error_points(logits: torch.Tensor, labels: torch.Tensor, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pixels per mask drawn with replacement from the error region (upstream ``generate_point``).

    Label 1 on a missed pixel, 0 on a false positive; with no error, uniform pixels labelled -1.
    """
    prediction = logits[:, 0] > 0
    truth = labels[:, 0] > 0.5
    coords, point_labels = [], []
    for pred, gt in zip(prediction.cpu().numpy(), truth.cpu().numpy()):
        ys, xs = np.nonzero(pred != gt)
        if len(ys):
            pick = rng.integers(len(ys), size=count)
            y, x = ys[pick], xs[pick]
            lab = np.where(gt[y, x], 1.0, 0.0)
        else:
            y, x = rng.integers(gt.shape[0], size=count), rng.integers(gt.shape[1], size=count)
            lab = np.full(count, -1.0)
        coords.append(np.stack([x, y], axis=1))
        point_labels.append(lab)
    device = logits.device
    return (torch.as_tensor(np.stack(coords), dtype=torch.float32, device=device),
            torch.as_tensor(np.stack(point_labels), dtype=torch.float32, device=device))


def _set_trainable(model: nn.Module, family: str) -> None:
    if family == "sam-med2d":
        for name, param in model.image_encoder.named_parameters():
            param.requires_grad_(ADAPTER_KEY.strip(".") in name.split("."))
    else:  # SAM-UNet: the ViT is frozen, everything else learns
        model.requires_grad_(True)
        model.image_encoder.requires_grad_(False)


def train_2d(config: Train2DConfig, data_json: str | Path, out_dir: str | Path, device: str = "cpu") -> Train2DSummary:
    """Train a SAM-Med2D or SAM-UNet model on a SA-Med2D list; rank 0 writes ``OUT/latest.pth``."""
    spec = get_model_spec(config.model)
    if spec.family not in FAMILIES:
        raise TrainingConfigError(f"2D training supports {', '.join(FAMILIES)} models, not {spec.name} ({spec.family})")
    context = setup_distributed(device)
    try:
        return _train_2d(config, spec, Path(data_json), Path(out_dir), context)
    finally:
        teardown_distributed(context)


def _train_2d(config, spec, data_json: Path, out_dir: Path, context) -> Train2DSummary:
    started = time.perf_counter()
    cases = load_med2d_cases(data_json)
    model = spec.build(**config.model_overrides)
    if config.init_checkpoint:
        load_weights(model, extract_state_dict(read_checkpoint(config.init_checkpoint)), model_name=spec.name)
    family = spec.family
    _set_trainable(model, family)
    model = model.to(context.device).train()
    if context.is_distributed and context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # upstream's multi-GPU script (NCCL only)
    if family == "sam-unet":
        model.image_encoder.eval()  # frozen ViT (no dropout/BN there anyway)
    pipeline = pipeline_for(spec.preprocessing, model.config.img_size)
    dataset = Med2DDataset(cases, pipeline, config.mask_num)
    if context.is_distributed:
        sampler = DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        persistent_workers=config.num_workers > 0, collate_fn=_collate)
    torch.manual_seed(config.seed + context.rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    weights = SAM_MED2D_WEIGHTS if family == "sam-med2d" else SAM_UNET_WEIGHTS
    step_module: nn.Module = _Step(model, FocalDiceIoULoss(weights), family)
    if context.is_distributed:
        step_module = nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=True)
    rng = np.random.default_rng(config.seed + 7919 * context.rank)
    losses: list[float] = []
    batches, done, checkpoint = 0, False, None
    for epoch in range(config.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(context.device) for k, v in batch.items()}
            losses.append(context.all_mean(_train_batch(step_module, optimizer, batch, family, config, rng)))
            batches += 1
            over_time = config.time_limit_minutes is not None and time.perf_counter() - started > 60 * config.time_limit_minutes
            if over_time or (config.max_steps is not None and batches >= config.max_steps):
                done = True
                break
        scheduler.step()
        context.sync_buffers(model)
        if context.is_main:
            payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "lr_scheduler_state_dict": plain_scheduler_state(scheduler.state_dict()),
                       "epoch": epoch, "step": batches, "losses": losses, "model_name": spec.name,
                       "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}}
            checkpoint = save_checkpoint(out_dir / LATEST, payload)
        context.barrier()
        if done:
            break
    return Train2DSummary(batches, losses, checkpoint, model.eval())


def _collate(items: list[dict]) -> dict:
    """Images stack to (B, 3, S, S); the per-mask tensors concatenate to B * mask_num prompts."""
    out = {"image": torch.stack([i["image"] for i in items])}
    for key in ("label", "boxes", "point_coords", "point_labels"):
        out[key] = torch.cat([i[key] for i in items])
    return out


def _optimize(optimizer, loss: torch.Tensor) -> float:
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _train_batch(step: nn.Module, optimizer, batch: dict, family: str, config: Train2DConfig, rng) -> float:
    labels = batch["label"]
    if family == "sam-unet":
        loss, *_ = step(batch["image"], None, labels, None, None, batch["boxes"], None, False, True)
        return _optimize(optimizer, loss)
    use_box = rng.random() < 0.5
    coords = None if use_box else batch["point_coords"]
    point_labels = None if use_box else batch["point_labels"]
    boxes = batch["boxes"] if use_box else None
    loss, low_res, logits, features = step(batch["image"], None, labels, coords, point_labels, boxes, None, True, True)
    total = _optimize(optimizer, loss)
    features = features.detach()
    coords, point_labels = error_points(logits, labels, int(rng.choice(config.point_choices)), rng)
    mask_only = int(rng.integers(1, config.iter_point - 1)) if config.iter_point > 2 else -1
    for it in range(config.iter_point):
        prompt = (None, None) if it in (mask_only, config.iter_point - 1) else (coords, point_labels)
        loss, low_res, logits, _ = step(None, features, labels, prompt[0], prompt[1], None,
                                        torch.sigmoid(low_res), True, False)
        total += _optimize(optimizer, loss)
        if it != config.iter_point - 1:
            coords, point_labels = error_points(logits, labels, int(rng.choice(config.point_choices)), rng)
    return total / (config.iter_point + 1)
