"""``sammed train``: fine-tune or train a model on an nnU-Net folder, alone or under ``torchrun``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sammed.cli.common import add_command, add_model_arguments, console, resolve_checkpoint
from sammed.cli.options import (
    bias_coefficient,
    case_weight_list,
    int_list,
    non_negative_float,
    non_negative_int,
    pattern_list,
    positive_float,
    positive_int,
    probability,
    scale_range,
    size_exponent,
)
from sammed.errors import SammedError

_TRAIN_EPILOG = """\
examples:
  # fine-tune SAM-Med3D-turbo on your structures (stage-2 recipe: lr 8e-5)
  sammed train data/Dataset001_Liver --out runs/liver --stage 2 --checkpoint sam_med3d_turbo.pth

  # resume the run from runs/liver/latest.pth
  sammed train data/Dataset001_Liver --out runs/liver --stage 2 --checkpoint sam_med3d_turbo.pth --resume

  # two processes on one machine (gloo on CPU, NCCL with --device cuda)
  torchrun --nproc_per_node 2 -m sammed train data/Dataset001_Liver --out runs/liver --model sam-med3d-tiny

  # SAM-Med2D adapter fine-tuning (or --model sam-unet-r34) from a SA-Med2D list
  sammed train data/image2label_train.json --out runs/med2d --model sam-med2d --checkpoint sam-med2d_b.pth

For 3D models, DATA is an nnU-Net raw folder (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz); each label
value of each case becomes one binary target. Cases are resampled once into OUT/cache (or
--cache) at the model's spacing. Checkpoints (OUT/latest.pth, OUT/best_loss.pth) use the official
layout and load with 'sammed segment --checkpoint'; OUT/metrics.csv logs every optimizer step.
"""


def register(commands) -> None:
    train = add_command(
        commands,
        "train",
        "train or fine-tune a 3D model (SAM-Med3D recipe) on an nnU-Net folder",
        "Train or fine-tune a SAM-Med3D-architecture model with the official interactive recipe.",
        _TRAIN_EPILOG,
    )
    train.add_argument("data", help="nnU-Net raw dataset folder (imagesTr/, labelsTr/)")
    train.add_argument("--out", "-o", required=True, help="run folder: checkpoints, metrics.csv, cache")
    add_model_arguments(
        train,
        model_help="registered model name (architecture)",
        checkpoint_help="initial weights: a file or a model name (fine-tuning; --stage 2 without it starts from --model's weights)",
        trust_flag=False,  # initial weights are always read with the safe loader
    )
    train.add_argument("--stage", type=int, choices=[1, 2], default=1, help="1: from scratch (lr 8e-4); 2: fine-tune a checkpoint (lr 8e-5)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/latest.pth (weights, optimizer, schedule, epoch)")
    train.add_argument("--epochs", type=positive_int)
    train.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps")
    train.add_argument("--time-limit", type=positive_float, metavar="MINUTES", help="stop (and save) after this wall time")
    train.add_argument("--batch-size", type=positive_int, help="windows per process and micro-batch (default 2)")
    train.add_argument("--accumulation-steps", type=positive_int, help="micro-batches per optimizer step (default 20)")
    train.add_argument("--lr", type=positive_float, help="image-encoder learning rate")
    train.add_argument("--decoder-lr-scale", type=non_negative_float, help="prompt encoder/decoder lr = lr x this (default 0.1)")
    train.add_argument("--milestones", type=int_list, help="epochs where lr drops 10x, e.g. 120,180")
    train.add_argument("--num-clicks", type=positive_int, help="interaction rounds per sample (default 11)")
    train.add_argument("--newest-click-only", action="store_true", help="feed only the newest click each round (upstream default)")
    train.add_argument("--targets-per-window", type=positive_int,
                       help="decode up to this many classes of each window from one encoder pass (default 1, the official recipe)")
    train.add_argument("--slab-probability", type=probability,
                       help="that often train on a random 8-32 plane slab of the window, as in limited-coverage scans (default 0)")
    train.add_argument("--centre-on-click", action="store_true",
                       help="centre each window on its first click, as inference does (default: the official bounding-box centre)")
    train.add_argument("--scale-range", type=scale_range, metavar="LOW,HIGH",
                       help="scale augmentation: each window shows LOW-HIGH times the model's field of view (default 1,1)")
    train.add_argument("--permute-probability", type=probability, help="that often permute the window's axes at random (default 0)")
    train.add_argument("--intensity-probability", type=probability,
                       help="probability of each intensity augmentation: gamma, noise, bias field, contrast (default 0)")
    train.add_argument("--remap-probability", type=probability,
                       help="that often map the window's intensities through a random non-monotonic curve, so organs "
                            "are seen in other contrasts (CT organs in MR-like contrast; default 0)")
    train.add_argument("--bias-field-max", type=bias_coefficient, metavar="C",
                       help="bias-field augmentation coefficients drawn in [0, C] (default 0.4, as versions 2 and 3 "
                            "of sammed-demo-3d were trained: far stronger than a scanner's field; MONAI's default is 0.1)")
    train.add_argument("--gamma-on", choices=("window", "foreground"),  # training.config.GAMMA_DOMAINS (not imported: torch-free parser)
                       help="gamma augmentation over the window's min-max range (default 'window', as versions 2 and 3) "
                            "or over the voxels > 0 only ('foreground': a CT's tissue stays on its side of 0 HU)")
    train.add_argument("--pseudo-fraction", type=probability,
                       help="share of windows drawn from pseudo-object cases (ids with '__', see demo_data); "
                            "real cases are balanced (default: uniform over all items; with --size-exponent, case-balanced "
                            "and size-weighted)")
    train.add_argument("--freeze-image-encoder", action="store_true",
                       help="keep the image encoder's weights fixed and train the prompt encoder and mask decoder only "
                            "(the encoder's features stay those of --checkpoint; no encoder backward pass)")
    train.add_argument("--first-round-weight", type=positive_float, metavar="W",
                       help="weight of the one-click round in the loss summed over click rounds (default 1, the official sum)")
    train.add_argument("--size-exponent", type=size_exponent, metavar="A",
                       help="draw items in proportion to (mask voxels / median) ** A within real and pseudo groups, "
                            "so large organs are seen more often (0-2, default 0: size-blind)")
    train.add_argument("--classes", type=int_list, metavar="V1,V2", help="label values to train on (default: all)")
    train.add_argument("--extra-target-size-exponent", type=size_exponent, metavar="A",
                       help="draw a window's extra targets (--targets-per-window) in proportion to their voxels ** A "
                            "(default 0: uniformly)")
    train.add_argument("--exclude-cases", type=pattern_list, metavar="PATTERN[,PATTERN]",
                       help="leave out cases whose id matches a shell pattern, e.g. '*__svfine,*__svcoarse'")
    train.add_argument("--case-weights", type=case_weight_list, metavar="PATTERN=W[,PATTERN=W]",
                       help="multiply the draw weight of the items of cases whose id matches a shell pattern by W "
                            "(within real labels or pseudo-objects), e.g. 'tsct=3'")
    train.add_argument("--min-voxels", type=non_negative_int, help="skip class masks with at most this many voxels (default 1000)")
    train.add_argument("--workers", type=non_negative_int, help="data-loader processes per training process (default 2)")
    train.add_argument("--no-amp", action="store_true", help="full float32 (default: bf16 autocast on CPU, fp16 on CUDA)")
    train.add_argument("--seed", type=non_negative_int)
    train.add_argument("--cache", help="preprocessing cache folder (default OUT/cache)")
    train.add_argument("--prepare-only", action="store_true", help="build the cache and stop")
    train.add_argument("--export", metavar="PTH", help="also write inference-only float16 weights of the result here")
    train.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.csv)")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from sammed.io.outputs import output_folder, refuse_output_on_input
    from sammed.models import get_model_spec

    spec = get_model_spec(args.model)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SammedError("--device cuda requested but no CUDA device is available")
    refuse_output_on_input(args.out, [args.data, args.checkpoint])
    if args.export:
        refuse_output_on_input(args.export, [args.data, args.checkpoint, Path(args.out) / "latest.pth"])
    if args.cache:
        refuse_output_on_input(args.cache, [args.data, args.checkpoint])
    with output_folder(args.out):
        return _run_train(args, spec)


def _run_train(args: argparse.Namespace, spec) -> int:
    from sammed.training import TrainConfig, build_cache, train

    if spec.dims == 2:
        return _run_train_2d(args, spec)
    if args.prepare_only:
        spacing = spec.config.window_spacing_mm
        manifest = build_cache(args.data, args.cache or Path(args.out) / "cache", spacing,
                               progress=lambda case: console.print(f"resampling {case}"))
        console.print(f"cache ready: {len(manifest['cases'])} cases at {spacing} mm")
        return 0
    config = TrainConfig.for_stage(
        args.stage,
        model=spec.name,
        init_checkpoint=_initial_weights(args, spec),
        epochs=args.epochs,
        max_steps=args.max_steps,
        time_limit_minutes=args.time_limit,
        batch_size=args.batch_size,
        accumulation_steps=args.accumulation_steps,
        lr=args.lr,
        decoder_lr_scale=args.decoder_lr_scale,
        milestones=args.milestones,
        num_clicks=args.num_clicks,
        multi_click=False if args.newest_click_only else None,
        min_label_voxels=args.min_voxels,
        targets_per_window=args.targets_per_window,
        slab_probability=args.slab_probability,
        centre_on_click=True if args.centre_on_click else None,
        scale_range=args.scale_range,
        permute_probability=args.permute_probability,
        intensity_probability=args.intensity_probability,
        remap_probability=args.remap_probability,
        bias_field_max=args.bias_field_max,
        gamma_on=args.gamma_on,
        pseudo_fraction=args.pseudo_fraction,
        size_exponent=args.size_exponent,
        extra_target_size_exponent=args.extra_target_size_exponent,
        first_round_weight=args.first_round_weight,
        freeze_image_encoder=args.freeze_image_encoder,
        classes=args.classes,
        exclude_cases=args.exclude_cases,
        case_weights=args.case_weights,
        num_workers=args.workers,
        amp=False if args.no_amp else None,
        seed=args.seed,
    )
    summary = train(config, args.data, args.out, cache_dir=args.cache, resume=args.resume, device=args.device,
                    show_progress=not args.no_progress)
    if summary.checkpoint is not None and os.environ.get("RANK", "0") == "0":
        console.print(f"trained {summary.steps} steps in {summary.seconds:.0f} s; checkpoint {summary.checkpoint}")
        if args.export:
            from sammed.training.checkpointing import export_weights

            exported = export_weights(summary.checkpoint, args.export, note={"steps": summary.steps, "seconds": round(summary.seconds)})
            console.print(f"inference weights {exported} ({exported.stat().st_size / 1e6:.1f} MB)")
    return 0


def _run_train_2d(args: argparse.Namespace, spec) -> int:
    """SAM-Med2D / SAM-UNet recipes; DATA is a SA-Med2D ``image2label_train.json``."""
    from sammed.training.trainer2d import Train2DConfig, train_2d

    options = {
        "epochs": args.epochs, "max_steps": args.max_steps, "time_limit_minutes": args.time_limit,
        "batch_size": args.batch_size, "lr": args.lr, "milestones": args.milestones,
        "num_workers": args.workers, "seed": args.seed, "init_checkpoint": _initial_weights(args, spec),
    }
    config = Train2DConfig(model=spec.name, **{k: v for k, v in options.items() if v is not None})
    summary = train_2d(config, args.data, args.out, device=args.device)
    if summary.checkpoint is not None and os.environ.get("RANK", "0") == "0":
        console.print(f"trained {summary.batches} batches; checkpoint {summary.checkpoint}")
    return 0


def _initial_weights(args: argparse.Namespace, spec) -> str | None:
    """--checkpoint as a file or a model name; --stage 2 without it fine-tunes --model's own weights."""
    if args.checkpoint is None and args.stage != 2:
        return None
    return str(resolve_checkpoint(args, spec.name))
