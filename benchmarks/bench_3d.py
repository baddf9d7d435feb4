"""SAM-Med3D interactive latency and memory: sammed (exact and fast) against a literal reference.

The reference is the official computation done the official way: TorchIO resamples the *whole*
volume to 1.5 mm, reorients it and crops a 128^3 ROI around a ground-truth-like cube at the
click (``sammed.evaluation.official_pipeline``), the encoder computes attention over every zero-padded
window token (``set_reference_windowing(True)``, the literal official math), and the prediction
is pasted back by TorchIO nearest-neighbour resampling onto the full grid.

Each pipeline runs in its own process (so peak RSS is its own) on a full-size CT built here by
resampling ``example_ct.nii.gz`` to 0.75 x 0.75 x 1.5 mm (about 488 x 404 x 224 voxels).
Times are medians of ``--repeats`` runs per stage.

A second table (``--latency-only`` prints it alone) times reading the CT and a refinement click
through ``Session.add_point`` (mask returned on the original grid), each against its previous
path in the same process (SimpleITK read with the parallel gzip check; SimpleITK paste-back),
interleaved with the GEMM unit.

A first table times loading the checkpoint (a random-weight file of the model's full size) in one
process, interleaved with the *GEMM unit*: one float32 ``4096 x 4096 @ 4096 x 4096`` matmul
(137 GFLOP) on the same threads, so the figure reads as a fraction of what the machine computes
and survives a busy or different machine. The baseline is the official way (build the model with
its random initialisation, ``torch.load``, ``load_state_dict``). Usage::

    .venv/bin/python benchmarks/bench_3d.py [--repeats 3] [--model sam-med3d-turbo] [--load-only | --latency-only]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SOURCE_CT = SHARED / "data" / "totalsegmentator_examples" / "example_ct.nii.gz"
SOURCE_SEG = SHARED / "data" / "totalsegmentator_examples" / "example_seg_fast_force_split.nii.gz"
LIVER = 5
CACHE = Path(tempfile.gettempdir()) / "sammed-bench"


def build_inputs(model_name: str) -> dict:
    """Full-size CT, a liver voxel in it, a reference GT cube, and a checkpoint (cached)."""
    CACHE.mkdir(exist_ok=True)
    ct_path = CACHE / "full_ct.nii.gz"
    source = sitk.ReadImage(str(SOURCE_CT))
    spacing = (0.75, 0.75, 1.5)
    size = [int(round(n * s / t)) for n, s, t in zip(source.GetSize(), source.GetSpacing(), spacing)]
    if not ct_path.exists():
        full = sitk.Resample(source, size, sitk.Transform(), sitk.sitkLinear, source.GetOrigin(), spacing,
                             source.GetDirection(), -1024, sitk.sitkInt16)
        sitk.WriteImage(full, str(ct_path))
    full = sitk.ReadImage(str(ct_path))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(SOURCE_SEG)))  # z, y, x
    zyx = np.median(np.argwhere(seg == LIVER), axis=0)
    world = sitk.ReadImage(str(SOURCE_SEG)).TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist())
    click = tuple(int(round(v)) for v in full.TransformPhysicalPointToContinuousIndex(world))  # i, j, k

    gt_path = CACHE / "reference_cube_gt.nii.gz"
    if not gt_path.exists():
        cube = np.zeros(sitk.GetArrayFromImage(full).shape, np.uint8)
        i, j, k = click
        cube[k - 10 : k + 11, j - 20 : j + 21, i - 20 : i + 21] = 1
        label = sitk.GetImageFromArray(cube)
        label.CopyInformation(full)
        sitk.WriteImage(label, str(gt_path))

    checkpoint = CACHE / f"{model_name}-random.pth"
    if not checkpoint.exists():
        from sammed.models import build_model

        torch.manual_seed(0)
        torch.save({"model_state_dict": build_model(model_name).state_dict()}, checkpoint)
    return {"ct": str(ct_path), "gt": str(gt_path), "click": click, "checkpoint": str(checkpoint),
            "size": tuple(full.GetSize())}


def _timed(stage_times: dict, name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    stage_times.setdefault(name, []).append(time.perf_counter() - start)
    return result


def run_sammed(inputs: dict, model_name: str, precision: str, repeats: int, queue) -> None:
    """sammed's path: read, window around the click, cached encoder, tight paste-back, write."""
    from sammed.inference import Session
    from sammed.inference.precision import autocast
    from sammed.inference.roi import RoiGrid, sample_window, zscore_foreground
    from sammed.inference.window_paste import plan_for
    from sammed.io import read_image, to_sitk, write_mask
    from sammed.models import build_model

    torch.set_num_threads(torch.get_num_threads())
    t: dict = {}
    for _ in range(repeats):
        model = _timed(t, "model load", build_model, model_name, checkpoint=inputs["checkpoint"])
        image = _timed(t, "read", read_image, inputs["ct"])
        click = inputs["click"]
        roi = RoiGrid.centered_at(image.index_to_world(click))
        source = to_sitk(image)
        window = _timed(t, "region", lambda: zscore_foreground(sample_window(source, roi)))
        device = torch.device("cpu")
        with torch.inference_mode(), autocast(precision, device):
            embedding = _timed(t, "encode", model.image_encoder, window[None, None])
            coords = torch.tensor([[list(roi.to_index(image.index_to_world(click)))]], dtype=torch.float32)
            labels = torch.ones(1, 1)
            zeros = torch.zeros(1, 1, 32, 32, 32)
            low_res, _ = _timed(t, "decode", model.predict_low_res, embedding, coords, labels, zeros)
            logits = model.upscale_logits(low_res.float())[0, 0].float().numpy()
        # today's paste-back: the window's plan (built here, once per window in a Session)
        _timed(t, "paste-back", lambda: plan_for(roi, image.geometry, model.low_res_size).paste(
            low_res[0, 0].float().numpy(), logits))

        session = Session(model, image, precision=precision)
        _timed(t, "first click", session.add_point, click)
        refine = (click[0] + 6, click[1] + 4, click[2])
        _timed(t, "refinement click", session.add_point, refine, positive=False)
        out = Path(tempfile.mkdtemp()) / "mask.nii.gz"
        _timed(t, "write", write_mask, session.label_map(), image, out)
    queue.put(_summary(t))


def run_reference(inputs: dict, model_name: str, repeats: int, queue) -> None:
    """The official order: whole-volume TorchIO preprocessing, literal windows, TorchIO paste-back."""
    from sammed.evaluation.official_pipeline import postprocess_official, preprocess_official

    t: dict = {}
    for _ in range(repeats):
        model = _timed(t, "model load", official_load, model_name, inputs["checkpoint"])
        model.image_encoder.set_reference_windowing(True)
        case = _timed(t, "read", lambda: sitk.ReadImage(inputs["ct"]))  # official reads again below
        case = _timed(t, "region", preprocess_official, inputs["ct"], inputs["gt"], 1)
        roi_image = case.roi_image
        centre = torch.tensor([[[64.0, 64.0, 64.0]]])
        with torch.inference_mode():
            embedding = _timed(t, "encode", model.image_encoder, roi_image)

            def decode(mask_input):
                low, _ = model.predict_low_res(embedding, centre, torch.ones(1, 1), mask_input)
                return low, (torch.sigmoid(model.upscale_logits(low)) > 0.5)[0, 0].numpy().astype(np.uint8)

            low_res, pred = _timed(t, "decode", decode, torch.zeros(1, 1, 32, 32, 32))
        pasted = _timed(t, "paste-back", postprocess_official, pred, case)
        # First click = preprocessing + encode + decode + paste; refinement = decode + paste.
        t.setdefault("first click", []).append(t["region"][-1] + t["encode"][-1] + t["decode"][-1] + t["paste-back"][-1])
        with torch.inference_mode():
            start = time.perf_counter()
            _, pred = decode(low_res)
            postprocess_official(pred, case)
            t.setdefault("refinement click", []).append(time.perf_counter() - start)
        out = Path(tempfile.mkdtemp()) / "mask.nii.gz"

        def write():
            image = sitk.GetImageFromArray(pasted)
            image.CopyInformation(sitk.ReadImage(inputs["gt"]))
            sitk.WriteImage(image, str(out))

        _timed(t, "write", write)
    queue.put(_summary(t))


def gemm_unit() -> float:
    """Seconds of one float32 4096^3 matmul on this process's threads (the benchmarks' unit)."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    start = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - start


def official_load(model_name: str, checkpoint: str) -> torch.nn.Module:
    """The official loading: sam_model_registry3D[...](checkpoint=None) (random init), torch.load, load_state_dict."""
    from sammed.models import get_model_spec

    model = get_model_spec(model_name).build()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state_dict"])
    return model.eval()


def run_load(checkpoint: str, model_name: str, repeats: int, queue) -> None:
    """Checkpoint load, the official way and sammed's, interleaved with the GEMM unit."""
    from sammed.models import build_model
    from sammed.models.checkpoint import _refuse_non_finite, extract_state_dict, read_checkpoint

    state = extract_state_dict(read_checkpoint(checkpoint))
    gemm_unit()  # warm-up: thread pool, allocator
    t: dict = {}
    for _ in range(repeats):
        _timed(t, "GEMM unit", gemm_unit)
        _timed(t, "official load", official_load, model_name, checkpoint)
        _timed(t, "sammed load", build_model, model_name, checkpoint=checkpoint)
        _timed(t, "NaN check", _refuse_non_finite, state)
    queue.put({name: statistics.median(values) for name, values in t.items()})


def run_latency(inputs: dict, model_name: str, repeats: int, queue) -> None:
    """Read and refinement click, today's path against the previous one, interleaved with the GEMM unit.

    Baselines in the same process: the read through SimpleITK (with the parallel gzip check), and
    the refinement click with the SimpleITK paste-back (no window plan). A refinement click is a
    negative click through ``Session.add_point``, the mask returned on the original grid, then
    undone so that every repeat starts from the same state. With random weights the whole
    window's mask changes at each click (the worst case).
    """
    import sammed.io.readers as readers
    from sammed.inference import Session
    from sammed.inference.roi import paste_window_mask
    from sammed.io import read_image
    from sammed.models import build_model

    fast_read = readers._read_nifti_gz_in_memory

    def old_read(path):
        readers._read_nifti_gz_in_memory = lambda p: None
        try:
            return read_image(path)
        finally:
            readers._read_nifti_gz_in_memory = fast_read

    model = build_model(model_name, checkpoint=inputs["checkpoint"])
    image = read_image(inputs["ct"])
    click = inputs["click"]
    refine = (click[0] + 6, click[1] + 4, click[2])
    sessions = {"new": Session(model, image), "old": Session(model, image)}
    # the baseline session pastes with SimpleITK whatever the window
    sessions["old"]._paste = lambda roi, low_res, logits: paste_window_mask(logits, roi, image.geometry)  # type: ignore[method-assign]
    for session in sessions.values():
        session.add_point(click)
    gemm_unit()  # warm-up
    t: dict = {}
    for _ in range(repeats):
        _timed(t, "GEMM unit", gemm_unit)
        _timed(t, "read (old)", old_read, inputs["ct"])
        _timed(t, "read", read_image, inputs["ct"])
        for name, label in (("old", "refinement click (old)"), ("new", "refinement click")):
            session = sessions[name]
            _timed(t, label, session.add_point, refine, positive=False)
            t.setdefault(label + " decoder", []).append(session.timings.decoder)
            session.undo()
    masks = [sessions[n].add_point(refine, positive=False) for n in ("old", "new")]
    result = {name: statistics.median(values) for name, values in t.items()}
    result["masks equal"] = bool(np.array_equal(*masks))
    result["mask voxels"] = int(masks[1].sum())
    queue.put(result)


def print_latency(result: dict) -> None:
    """Each stage's old and new rows in seconds and GEMM units; the new row carries old/new."""
    unit = result["GEMM unit"]
    print(f"{'stage':32s}{'seconds':>10s}{'GEMM units':>12s}{'old/new':>9s}   (old = previous path, same process)")
    print(f"{'GEMM unit':32s}{unit:10.3f}{1.0:12.3f}")
    for old, new in (("read (old)", "read"), ("refinement click (old)", "refinement click"),
                     ("refinement click (old) decoder", "refinement click decoder")):
        print(f"{old:32s}{result[old]:10.3f}{result[old] / unit:12.3f}")
        print(f"{new:32s}{result[new]:10.3f}{result[new] / unit:12.3f}{result[old] / result[new]:8.2f}x")
    print(f"refinement masks equal (old vs new): {result['masks equal']} ({result['mask voxels']} voxels)")


def _summary(times: dict) -> dict:
    result = {name: statistics.median(values) for name, values in times.items()}
    result["end to end"] = sum(result[name] for name in END_TO_END)
    result["peak RSS (GB)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return result


def _in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


STAGES = ["model load", "read", "region", "encode", "decode", "paste-back", "first click", "refinement click",
          "write", "end to end", "peak RSS (GB)"]
# One structure, one click, as `sammed segment` does it: load, read, first click, write.
END_TO_END = ("model load", "read", "first click", "write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam-med3d-turbo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true", help="only sammed's modes (no baseline ratios)")
    parser.add_argument("--load-only", action="store_true", help="only the checkpoint-load table")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the read / refinement-click table (GEMM units, old path vs new)")
    args = parser.parse_args()

    inputs = build_inputs(args.model)
    print(f"full CT {inputs['size']} voxels at 0.75x0.75x1.5 mm, click {inputs['click']}, model {args.model}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    if args.latency_only:
        print_latency(_in_child(run_latency, inputs, args.model, max(args.repeats, 5)))
        return
    load = _in_child(run_load, inputs["checkpoint"], args.model, max(args.repeats, 5))
    unit = load["GEMM unit"]
    print(f"{'checkpoint load':18s}{'seconds':>14s}{'GEMM units':>14s}{'official/x':>12s}")
    for name in ("GEMM unit", "official load", "sammed load", "NaN check"):
        ratio = f"{load['official load'] / load[name]:11.1f}x" if name.endswith("load") else ""
        print(f"{name:18s}{load[name]:14.3f}{load[name] / unit:14.3f}{ratio}")
    if args.load_only:
        return
    print_latency(_in_child(run_latency, inputs, args.model, max(args.repeats, 5)))
    columns = {}
    if not args.skip_reference:
        columns["reference"] = _in_child(run_reference, inputs, args.model, args.repeats)
    columns["exact fp32"] = _in_child(run_sammed, inputs, args.model, "fp32", args.repeats)
    columns["fast bf16"] = _in_child(run_sammed, inputs, args.model, "bf16", args.repeats)

    header = f"{'stage':18s}" + "".join(f"{name:>14s}" for name in columns)
    if "reference" in columns:
        header += "".join(f"{'ref/' + name.split()[0]:>12s}" for name in columns if name != "reference")
    print(header)
    for stage in STAGES:
        row = f"{stage:18s}" + "".join(f"{col.get(stage, float('nan')):14.3f}" for col in columns.values())
        if "reference" in columns:
            ref = columns["reference"].get(stage, float("nan"))
            row += "".join(f"{ref / col.get(stage, float('nan')):11.1f}x" for name, col in columns.items()
                           if name != "reference")
        print(row)
    for name, col in columns.items():  # issue 18's targets are in GEMM units (the unit above, same process)
        print(f"{name}: first click {col.get('first click', float('nan')) / unit:.2f} GEMM units, "
              f"refinement click {col.get('refinement click', float('nan')) / unit:.3f}")


if __name__ == "__main__":
    main()
