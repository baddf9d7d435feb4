"""``sammed eval``: run a published evaluation protocol on a dataset and write a report."""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext

from sammed.cli.common import add_command, add_model_arguments, console, resolve_checkpoint, step
from sammed.cli.options import non_negative_float, non_negative_int, positive_int
from sammed.errors import SammedError

_EVAL_EPILOG = """\
protocols:
  sam-med3d-official  current official SAM-Med3D inference (GT-centred ROI, random error clicks)
  sam-med3d-paper     paper-era validation (RITM then random clicks, Dice on the 128^3 ROI)
  sam-med2d           SAM-Med2D test protocol on 2D images: box, then 1..N points
  cvpr25              CVPR 2025 interactive challenge: box + N clicks (default 5), DSC/NSD AUC
  clicks-N            N clicks through the prompt-centred pipeline 'sammed segment' uses

examples:
  # nnU-Net raw dataset, official protocol, 5 accumulated clicks, two classes
  sammed eval --model sam-med3d-turbo --checkpoint sam_med3d_turbo.pth \\
      --dataset Dataset001_Liver --protocol sam-med3d-official --clicks 5 --classes 1 2 --out eval/

  # the same sharded over 4 processes (or nodes): one report, the rows of a 1-process run
  # with --threads 1 (torchrun gives each process one thread)
  torchrun --nproc_per_node 4 -m sammed eval --model sam-med3d-turbo --checkpoint ... --out eval/

  # one image/label pair
  sammed eval --model sam-med3d-turbo --checkpoint ... --dataset ct.nii.gz --label seg.nii.gz \\
      --protocol cvpr25 --out eval_ct/

Writes OUT/results.csv and OUT/results.json (one row per case x class x interaction),
OUT/summary.md and OUT/plots/*.png. Rerunning into the same OUT resumes where it stopped.
"""


def register(commands) -> None:
    parser = add_command(
        commands,
        "eval",
        "evaluate a model with a published interactive protocol and write a report",
        "Evaluate a promptable model on a labelled dataset with simulated prompts.",
        _EVAL_EPILOG,
    )
    add_model_arguments(parser, required=True)
    parser.add_argument(
        "--dataset",
        "-d",
        required=True,
        metavar="DIR",
        help="nnU-Net raw folder, SAM-Med3D <class>/<dataset> tree, SA-Med2D JSON list, or an image (with --label)",
    )
    parser.add_argument("--label", metavar="FILE", help="label map of the single image given as --dataset")
    parser.add_argument("--protocol", "-p", required=True, metavar="NAME", help="evaluation protocol (listed below)")
    parser.add_argument("--clicks", "-n", type=positive_int, metavar="N", help="clicks per class (default 5)")
    parser.add_argument(
        "--out", "-o", required=True, metavar="DIR", help="report folder (resumed if it holds this run)"
    )
    parser.add_argument(
        "--classes", nargs="+", metavar="CLASS", help="only these classes: label values or names (default: all)"
    )
    parser.add_argument("--max-cases", type=positive_int, metavar="N", help="only the first N cases (sorted by case id)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=233, help="seed of the simulated prompts (default 233, as upstream)"
    )
    parser.add_argument(
        "--nsd-tolerance", type=non_negative_float, metavar="MM", help="NSD tolerance in mm (default: the protocol's, 1 or 2)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run the model")
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads per process (default: PyTorch's choice; torchrun sets 1). Float sums depend on it, "
        "so rows are bit-identical only between runs with the same threads per process",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_eval)


def _classes(values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    classes = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
    if not classes:
        raise SammedError("--classes needs at least one label value or name")
    return classes


def _check_classes(classes: tuple[str, ...] | None, label_names: dict) -> None:
    """Refuse class names the dataset does not define (values are checked per case)."""
    if classes is None or not label_names:
        return
    known = {str(v) for v in label_names} | {n.lower() for n in label_names.values()}
    unknown = [c for c in classes if c not in known and c.lower() not in known]
    if unknown:
        listing = ", ".join(f"{v}={n}" for v, n in sorted(label_names.items()))
        raise SammedError(f"unknown class {', '.join(unknown)}; the dataset defines {listing}")


def _device(choice: str) -> str:
    import torch

    if choice == "cuda":
        if not torch.cuda.is_available():
            raise SammedError("--device cuda requested but no CUDA device is available")
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from sammed.evaluation import EvalSettings, load_dataset, resolve_protocol, run_evaluation
    from sammed.io.outputs import output_folder, refuse_output_on_input
    from sammed.models import build_model, get_model_spec
    from sammed.models.weights import file_sha256

    try:
        import matplotlib  # noqa: F401
        import monai  # noqa: F401
    except ImportError as exc:
        raise SammedError(f"sammed eval needs the 'eval' extra ({exc.name} is missing): pip install 'sammed[eval]'") from None
    protocol, clicks = resolve_protocol(args.protocol, args.clicks)
    if args.max_cases is not None and args.max_cases < 1:
        raise SammedError("--max-cases must be at least 1")
    spec = get_model_spec(args.model)
    if spec.dims != protocol.dims:
        raise SammedError(f"protocol {protocol.name} needs a {protocol.dims}D model; {spec.name} is {spec.dims}D")
    refuse_output_on_input(args.out, [args.dataset, args.label, args.checkpoint])
    classes = _classes(args.classes)
    dataset = load_dataset(args.dataset, label=args.label)
    _check_classes(classes, dict(dataset.label_names))
    checkpoint = resolve_checkpoint(args, spec.name)  # bundled, cached or downloaded once; after the cheap checks
    device = _device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise SammedError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    tolerance = protocol.default_tolerance_mm if args.nsd_tolerance is None else args.nsd_tolerance
    if not tolerance >= 0:
        raise SammedError("--nsd-tolerance must be a number of mm >= 0")
    root = int(os.environ.get("RANK", "0")) == 0
    with step(f"loading {spec.name} weights") if root else nullcontext():
        model = build_model(spec.name, checkpoint=checkpoint, trust_checkpoint=args.trust_checkpoint).to(device)
    info = {"model": spec.name, "checkpoint_name": checkpoint.name,
            "checkpoint_sha256": file_sha256(checkpoint) if root else None, "threads": torch.get_num_threads()}
    settings = EvalSettings(interactions=clicks, seed=args.seed, nsd_tolerance_mm=tolerance, classes=classes,
                            device=device)
    with output_folder(args.out):
        report = run_evaluation(model, dataset, protocol, settings, args.out, run_info=info,
                                max_cases=args.max_cases, progress=not args.no_progress)
    if report is not None:
        _print_report(report)
    return 0


def _print_report(report) -> None:
    from sammed.evaluation.summary import by_group

    overall = by_group(report.rows, ("track", "interaction"), "dice")
    for (track, interaction), s in overall.items():
        console.print(f"{track} interaction {interaction}: Dice {s.text()} (n={s.n})", markup=False)
    console.print(
        f"{report.cases} cases ({report.cases_resumed} resumed), {len(report.rows)} rows -> "
        f"{report.files['csv']}, {report.files['summary']}",
        markup=False,
    )
