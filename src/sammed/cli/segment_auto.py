"""``sammed segment IMAGE --model <2D model> --auto --out labels.png``: segment everything.

SAM's automatic mask generator (:class:`sammed.inference.AutomaticMaskGenerator2D`) over the
picture: the output is a label image (one value per mask, 0 = none; a PNG for pictures, the
volume's grid for a slice) and a JSON beside it (same name, ``.json``) listing each label's
predicted IoU, stability score, area, box (x, y, width, height) and prompt point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sammed.cli.common import console, step
from sammed.errors import ImageWriteError, SammedError


def json_path_for(out: Path) -> Path:
    """labels.png -> labels.json, labels.nii.gz -> labels.json."""
    name = out.name
    for suffix in (".nii.gz", *[s for s in [out.suffix] if s]):
        if name.lower().endswith(suffix.lower()):
            return out.with_name(name[: -len(suffix)] + ".json")
    return out.with_name(name + ".json")


def run_auto2d(args: argparse.Namespace, spec) -> int:
    """Read, check the output, load the model, generate the masks, write labels and JSON."""
    from sammed.cli.segment2d import _load_model
    from sammed.inference.automatic2d import AutomaticMaskGenerator2D, label_image
    from sammed.inference.predictor2d import Predictor2D
    from sammed.io.atomic import write_text_atomic
    from sammed.io.image2d import check_mask_path, read_image_2d
    from sammed.io.outputs import refuse_output_on_input

    if args.point or args.box:
        raise SammedError("--auto segments everything from a grid of points: give no --point or --box")
    for flag, value in (("--pred-iou-thresh", args.pred_iou_thresh), ("--stability-score-thresh", args.stability_score_thresh)):
        if not 0.0 <= value <= 1.0:
            raise SammedError(f"{flag} must be between 0 and 1, got {value:g}")
    refuse_output_on_input(args.out, [args.image, args.checkpoint, args.onnx_dir])
    with step(f"reading {args.image}"):
        image = read_image_2d(args.image, args.slice, args.axis)
    out = check_mask_path(image, args.out)
    report = json_path_for(out)
    refuse_output_on_input(report, [args.image, args.checkpoint, args.onnx_dir])
    model = _load_model(args, spec)
    predictor = Predictor2D(model)
    channel_order = getattr(predictor.pipeline, "training_channel_order", "RGB")
    generator = AutomaticMaskGenerator2D(
        predictor,
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        crop_n_layers=args.crop_n_layers,
        image_format="BGR" if channel_order == "BGR" else "RGB",
    )
    with step(f"automatic masks ({args.points_per_side} x {args.points_per_side} points)"):
        records = generator.generate(image.pixels)
    labels = label_image(records, image.size)
    written = _write_labels(labels, image, out)
    entries = [{"label": i + 1, **record.to_json()} for i, record in enumerate(records)]
    text = json.dumps({"image": str(args.image), "model": spec.name if spec else None, "masks": entries}, indent=1)
    write_text_atomic(report, text + "\n")
    console.print(f"wrote {written} ({len(records)} masks) and {report}", soft_wrap=True, markup=False)
    return 0


def _write_labels(labels: np.ndarray, image, out: Path) -> Path:
    """A label PNG (8 or 16 bit) for pictures; the volume grid for a slice (at most 255 masks)."""
    if image.volume_slice is not None:
        from sammed.io.writers import write_mask

        if labels.max(initial=0) > 255:
            raise ImageWriteError(f"cannot write '{out}': more than 255 masks on a slice")
        grid = image.volume_slice
        return write_mask(grid.grid_mask(labels.astype(np.uint8)), grid.geometry, out)
    from PIL import Image as PILImage

    from sammed.io.atomic import atomic_path

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, ".png") as temporary:
            PILImage.fromarray(labels).save(temporary, format="PNG")
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{out}': {exc.strerror or exc}") from None
    return out
