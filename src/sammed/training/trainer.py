"""The 3D trainer: SAM-Med3D recipe, single process or under ``torchrun``.

One micro-batch = a batch of random windows, each run through the simulated click session
(:mod:`sammed.training.interaction`); gradients are accumulated over ``accumulation_steps``
micro-batches (DDP syncs only on the last one), then AdamW steps. The schedule steps per epoch.
Rank 0 writes ``latest.pth`` / ``best_loss.pth`` (official layout) and ``metrics.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, WeightedRandomSampler

from sammed.models import get_model_spec
from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint
from sammed.training.checkpointing import (
    BEST,
    LATEST,
    load_training_state,
    restore_scheduler_state,
    save_checkpoint,
    training_payload,
)
from sammed.training.config import TrainConfig, TrainingConfigError
from sammed.training.dataset import (
    MANIFEST,
    Augmentations,
    WindowDataset,
    build_cache,
    find_nnunet_cases,
    item_voxels,
    item_weights,
    list_items,
)
from sammed.training.distributed import DistributedContext, setup_distributed, teardown_distributed
from sammed.training.interaction import InteractiveTraining, dice_ce_loss
from sammed.training.optim import build_optimizer, build_scheduler
from sammed.training.sampling import WeightedDistributedSampler

METRICS_FILE = "metrics.csv"
METRIC_FIELDS = ["epoch", "step", "loss", "dice_first_round", "dice_last_round", "lr_encoder", "lr_decoder", "seconds"]


@dataclass
class TrainSummary:
    steps: int
    epochs_done: int
    step_losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained network (this rank's copy)


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _build_network(config: TrainConfig, resume_state: dict | None):
    spec = get_model_spec(config.model)
    if spec.dims != 3 or not spec.family.startswith("sam-med3d"):
        raise TrainingConfigError(f"{spec.name} is not a SAM-Med3D model; the 3D trainer cannot train it")
    # Random init: a builder that loads bundled weights (sammed-demo-3d) skips them on this flag.
    model = spec.build(extra={**spec.config.extra, "load_bundled_weights": False})
    if resume_state is not None:
        load_weights(model, extract_state_dict(resume_state), model_name=spec.name)
    elif config.init_checkpoint:
        load_weights(model, extract_state_dict(read_checkpoint(config.init_checkpoint)), model_name=spec.name)
    return spec, model


def _window_and_spacing(spec) -> tuple[int, float]:
    return int(spec.config.img_size), float(spec.config.window_spacing_mm)


class _MetricsLog:
    """CSV of one row per optimizer step (rank 0 only); appends across resumes."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and not path.is_file():
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(METRIC_FIELDS)

    def write(self, row: dict) -> None:
        if self.enabled:
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow([row[k] for k in METRIC_FIELDS])


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sammed.console import console

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), console=console, disable=not enabled, transient=False,
    )


def train(
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    show_progress: bool = True,
) -> TrainSummary:
    """Train (or resume, or fine-tune) a SAM-Med3D model on an nnU-Net folder; return a summary."""
    context = setup_distributed(device)
    try:
        return _train(config, Path(data_dir), Path(out_dir), cache_dir, resume, context, show_progress)
    finally:
        teardown_distributed(context)


def _train(config, data_dir: Path, out_dir: Path, cache_dir, resume: bool, context: DistributedContext, show_progress: bool) -> TrainSummary:
    started = time.perf_counter()
    find_nnunet_cases(data_dir)  # a wrong folder fails before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_state = None
    if resume:
        latest = out_dir / LATEST
        if not latest.is_file():
            raise TrainingConfigError(f"--resume: no {LATEST} in {out_dir}")
        resume_state = load_training_state(latest)
        changes = config.recipe_changes(resume_state["config"]) if resume_state.get("config") else []
        if changes and context.is_main:
            from sammed.console import console

            console.print(f"warning: --resume with options that differ from the run's ({'; '.join(changes)}); "
                          "repeat the run's options to continue its recipe", markup=False, soft_wrap=True)
    spec, network = _build_network(config, resume_state)
    window, spacing = _window_and_spacing(spec)

    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    if context.is_main:
        build_cache(data_dir, cache_dir, spacing)
    context.barrier()
    manifest = json.loads((cache_dir / MANIFEST).read_text())
    items = list_items(manifest, config.min_label_voxels, set(config.classes) if config.classes else None,
                       tuple(config.exclude_cases))
    dataset = WindowDataset(cache_dir, items, window, config.max_shift_fraction, config.flip_probability,
                            max_cached_cases=64, targets_per_window=config.targets_per_window,
                            slab_probability=config.slab_probability, centre_on_click=config.centre_on_click,
                            extra_target_size_exponent=config.extra_target_size_exponent,
                            augment=Augmentations(scale_range=tuple(config.scale_range),
                                                  permute_probability=config.permute_probability,
                                                  intensity_probability=config.intensity_probability,
                                                  remap_probability=config.remap_probability,
                                                  bias_field_max=config.bias_field_max, gamma_on=config.gamma_on))
    weighted = config.pseudo_fraction is not None or bool(config.size_exponent) or bool(config.case_weights)
    sampler: Sampler[int]
    if weighted:
        # An "epoch" stays the number of real items (pseudo-objects would make it thousands of draws).
        real = sum("__" not in item.case_id for item in items) or len(items)
        weights = item_weights(items, config.pseudo_fraction, item_voxels(manifest, items), config.size_exponent,
                               tuple(config.case_weights))
        if context.is_distributed:
            sampler = WeightedDistributedSampler(weights, real, context.rank, context.world_size, config.seed)
        else:
            sampler = WeightedRandomSampler(weights, num_samples=real, replacement=True,
                                            generator=torch.Generator().manual_seed(config.seed))
    elif context.is_distributed:
        sampler = DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=context.device.type == "cuda",
        drop_last=False,
    )

    torch.manual_seed(config.seed + context.rank)
    network = network.to(context.device).train()
    if config.freeze_image_encoder:
        # No parameter of the encoder requires a gradient, so autograd records no encoder graph: the
        # backward pass starts at the image embedding. AdamW skips parameters whose grad stays None,
        # and the group stays in the optimizer so that resume sees the same three groups.
        network.image_encoder.requires_grad_(False)
    optimizer = build_optimizer(network, config)
    scheduler = build_scheduler(optimizer, config)
    use_scaler = config.amp and context.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    module = InteractiveTraining(network, dice_ce_loss(), config.num_clicks, config.mask_only_round_range, config.multi_click,
                                 config.first_round_weight)
    if context.is_distributed:
        ids = [context.device.index] if context.device.type == "cuda" else None
        # find_unused_parameters: e.g. no_mask_embed is never used (a mask prompt is always fed).
        module = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    start_epoch, step = 0, 0
    history: dict = {"losses": [], "dices": [], "best_loss": math.inf}
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer_state_dict"])
        restore_scheduler_state(scheduler, resume_state["lr_scheduler_state_dict"])
        if scaler is not None and "grad_scaler_state_dict" in resume_state:
            scaler.load_state_dict(resume_state["grad_scaler_state_dict"])
        start_epoch, step = int(resume_state["epoch"]) + 1, int(resume_state["step"])
        history = {k: resume_state.get(k, history[k]) for k in history}

    metrics = _MetricsLog(out_dir / METRICS_FILE, context.is_main)
    summary = TrainSummary(steps=step, epochs_done=start_epoch)
    done = config.max_steps is not None and step >= config.max_steps
    micro = 0
    total_steps = config.max_steps or config.epochs * math.ceil(len(loader) / config.accumulation_steps)
    with _progress(show_progress and context.is_main) as progress:
        task = progress.add_task("training", total=total_steps, completed=step, status="")
        for epoch in range(start_epoch, config.epochs):
            if done:
                break
            if isinstance(sampler, (DistributedSampler, WeightedDistributedSampler)):
                sampler.set_epoch(epoch)
            rng = np.random.RandomState((config.seed + 7919 * context.rank + 104729 * epoch) % 2**32)
            epoch_losses, epoch_dices = [], []
            window_loss, window_dice_first, window_dice_last, window_count = 0.0, 0.0, 0.0, 0
            tick = time.perf_counter()
            for batch in loader:
                micro += 1
                sync_now = micro % config.accumulation_steps == 0
                image = batch["image"].to(context.device, non_blocking=True)
                target = batch["label"].to(context.device, non_blocking=True)
                valid = batch["target_valid"].to(context.device, non_blocking=True)
                first_clicks = batch["first_click"].to(context.device, non_blocking=True)
                no_sync = module.no_sync() if context.is_distributed and not sync_now else contextlib.nullcontext()
                with no_sync:
                    with _autocast(context.device, config.amp):
                        loss, dices = module(image, target, rng, valid, first_clicks)
                    scaled = loss / config.accumulation_steps
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                per_round = float(loss.detach()) / config.num_clicks
                window_loss += per_round
                window_dice_first += float(dices[0])
                window_dice_last += float(dices[-1])
                window_count += 1
                epoch_losses.append(per_round)
                epoch_dices.append(float(dices[-1]))
                if not sync_now:
                    continue
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                step_loss = context.all_mean(window_loss / window_count)
                summary.step_losses.append(step_loss)
                row = {
                    "epoch": epoch,
                    "step": step,
                    "loss": f"{step_loss:.6f}",
                    "dice_first_round": f"{context.all_mean(window_dice_first / window_count):.4f}",
                    "dice_last_round": f"{context.all_mean(window_dice_last / window_count):.4f}",
                    "lr_encoder": f"{optimizer.param_groups[0]['lr']:.3g}",
                    "lr_decoder": f"{optimizer.param_groups[1]['lr']:.3g}",
                    "seconds": f"{time.perf_counter() - tick:.2f}",
                }
                metrics.write(row)
                progress.update(task, completed=step, status=f"epoch {epoch} loss {step_loss:.4f} dice {row['dice_last_round']}")
                window_loss, window_dice_first, window_dice_last, window_count = 0.0, 0.0, 0.0, 0
                tick = time.perf_counter()
                over_time = config.time_limit_minutes is not None and time.perf_counter() - started > 60 * config.time_limit_minutes
                if over_time or (config.max_steps is not None and step >= config.max_steps):
                    done = True
                    break
            scheduler.step()
            epoch_loss = context.all_mean(float(np.mean(epoch_losses))) if epoch_losses else math.nan
            history["losses"].append(epoch_loss)
            history["dices"].append(context.all_mean(float(np.mean(epoch_dices))) if epoch_dices else math.nan)
            summary.epochs_done = epoch + 1
            if context.is_main:
                payload = training_payload(network, optimizer, scheduler, scaler, epoch, step, history, config.to_dict(), spec.name)
                summary.checkpoint = save_checkpoint(out_dir / LATEST, payload)
                if epoch_loss < history["best_loss"]:
                    history["best_loss"] = epoch_loss
                    payload["best_loss"] = epoch_loss
                    save_checkpoint(out_dir / BEST, payload)
            context.barrier()
    summary.steps = step
    summary.model = network.eval()
    summary.seconds = time.perf_counter() - started
    if summary.checkpoint is None and (out_dir / LATEST).is_file():
        summary.checkpoint = out_dir / LATEST
    return summary
