"""Validation and held-out evaluation of ``sammed-demo-3d`` next to the classical baselines.

``--split validation`` scores checkpoints and settings while developing (the folders ``val_*``);
``--split heldout`` is run once, for the weights that ship (the model card's table).

Every method runs the evaluation harness's ``clicks-N`` protocol (official-style simulated
clicks: first a uniform object voxel, then a uniform error voxel, positive iff missed) with the
same seed on the same held-out folders written by :mod:`sammed.training.demo_data`. Classes
smaller than ``min_volume_ml`` on the file's grid are skipped (they are a few voxels at the
demo model's 3 mm). The table reports mean Dice over (volume, class) targets after 1, 3 and 5 clicks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sammed.errors import SammedError
from sammed.evaluation import EvalSettings, load_dataset, resolve_protocol, run_evaluation
from sammed.evaluation.baselines import BASELINES, BaselineClicksProtocol
from sammed.io import read_image
from sammed.io.atomic import write_text_atomic

HELD_OUT = ("heldout_ct", "heldout_mr", "heldout_spine")
VALIDATION = ("val_ct3slice", "val_headct", "val_spine", "val_synth1000", "val_synth1001")
SPLITS = {"heldout": HELD_OUT, "validation": VALIDATION}
CLICKS = 5
SEED = 233
REPORTED_CLICKS = (1, 3, 5)


def large_classes(dataset, min_volume_ml: float) -> tuple[str, ...]:
    """Label values whose volume reaches ``min_volume_ml`` in some case of ``dataset``."""
    keep = set()
    for case in dataset.cases:
        label = read_image(case.label)
        voxel_ml = float(np.prod(label.spacing)) / 1000.0
        values, counts = np.unique(label.array, return_counts=True)
        keep |= {int(v) for v, c in zip(values, counts) if v != 0 and c * voxel_ml >= min_volume_ml}
    return tuple(str(v) for v in sorted(keep))


def evaluate_method(method_name: str, model, folder: Path, out: Path, min_volume_ml: float) -> list[dict]:
    dataset = load_dataset(folder)
    settings = EvalSettings(interactions=CLICKS, seed=SEED, nsd_tolerance_mm=1.0,
                            classes=large_classes(dataset, min_volume_ml))
    protocol = BaselineClicksProtocol() if method_name in BASELINES else resolve_protocol("clicks-N", CLICKS)[0]
    report = run_evaluation(model, dataset, protocol, settings, out / method_name / folder.name,
                            run_info={"model": method_name}, progress=False)
    return report.rows if report is not None else []


def dice_table(rows_by_method: dict[str, dict[str, list[dict]]]) -> str:
    """Markdown: one line per (held-out folder, method) and a pooled line per method."""
    lines = ["| set | targets | method | " + " | ".join(f"Dice @{k}" for k in REPORTED_CLICKS) + " |",
             "|---|---|---|" + "---|" * len(REPORTED_CLICKS)]
    pooled: dict[str, list[dict]] = {}
    for method, by_folder in rows_by_method.items():
        for folder, rows in by_folder.items():
            pooled.setdefault(method, []).extend(rows)
            lines.append(_line(folder, method, rows))
    for method, rows in pooled.items():
        lines.append(_line("**all**", method, rows))
    return "\n".join(lines)


def _line(folder: str, method: str, rows: list[dict]) -> str:
    targets = len({(r["case"], r["class"]) for r in rows})
    cells = []
    for k in REPORTED_CLICKS:
        values = [float(r["dice"]) for r in rows if int(r["interaction"]) == k and r["dice"] == r["dice"]]
        cells.append(f"{np.mean(values):.3f}" if values else "-")
    return f"| {folder} | {targets} | {method} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one line for a user mistake (unknown method, missing folders or weights)."""
    parser = argparse.ArgumentParser(description="Dice at 1/3/5 clicks of sammed-demo-3d and classical baselines.")
    parser.add_argument("data", type=Path, help="folder written by sammed.training.demo_data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", help="evaluate these weights instead of the bundled ones")
    parser.add_argument("--methods", default="sammed-demo-3d,random-walker,region-growing")
    parser.add_argument("--min-volume-ml", type=float, default=1.0)
    parser.add_argument("--split", choices=sorted(SPLITS), default="heldout",
                        help="validation: choose checkpoints on val_*; heldout: the model card's figures (default)")
    args = parser.parse_args(argv)
    from sammed.models import build_model, get_model_spec

    try:
        methods = args.methods.split(",")
        for method in methods:
            if method not in BASELINES:
                get_model_spec(method)  # an unknown name fails here, before any work
        folders = [f for f in SPLITS[args.split] if (args.data / f).is_dir()]
        if not folders:
            raise SammedError(f"no {args.split} folders ({', '.join(SPLITS[args.split])}) in {args.data}")
        results: dict[str, dict[str, list[dict]]] = {}
        for method in methods:
            model = BASELINES[method]() if method in BASELINES else build_model(method, checkpoint=args.checkpoint)
            results[method] = {f: evaluate_method(method, model, args.data / f, args.out, args.min_volume_ml) for f in folders}
    except SammedError as error:
        print(f"demo_eval: error: {error}", file=sys.stderr)
        return 2
    table = dice_table(results)
    write_text_atomic(args.out / f"dice_table_{args.split}.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
