"""SAM-Med3D encoder and decoder latency: onnxruntime against PyTorch, in one process.

The PyTorch side is the package's exact (float32) model, the baseline; the onnxruntime side runs
the files written by ``export_sam_med3d_onnx`` from that same model. Both use the same number
of threads, the same 128^3 input (the parity fixture image when ../shared is present) and the
same prompts: a first click (zero mask prompt) and a refinement click (the previous logits
as mask prompt), as the interactive session issues them. The two runtimes run alternately,
after one warm-up run each; figures are medians of ``--repeats`` encoder runs and of 4x as
many decoder runs. The table also gives the largest output difference between the runtimes. Usage::

    .venv/bin/python benchmarks/bench_onnx.py [--model sam-med3d-turbo] [--repeats 5] [--threads 2]

Timings move with machine load: compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE_IMAGE = SHARED / "fixtures" / "sam_med3d" / "image.npz"


def median_seconds_interleaved(baseline, candidate, repeats: int) -> tuple[float, float]:
    """Median time of each function, run alternately so that both see the same machine load."""
    baseline(), candidate()  # warm-up: first-run allocations and kernel selection
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, spent in zip((baseline, candidate), times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def load_model(name: str):
    """The registry model with the parity-fixture weights when available (outputs then mean something)."""
    from sammed.models import build_model
    from sammed.models.registry import spec_of

    torch.manual_seed(0)
    model = build_model(name)
    config = {"sam-med3d-turbo": "turbo", "sam-med3d-tiny": "tiny"}.get(spec_of(model).name)
    if config is None or not FIXTURE_IMAGE.is_file():
        return model, "random weights"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support import fixture_weights

    model.load_state_dict(fixture_weights(config))
    return model, "parity-fixture weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sam-med3d-turbo")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    import onnxruntime as ort

    from sammed.export import export_sam_med3d_onnx
    from sammed.inference.onnx_backend import OnnxSamMed3D
    from sammed.models.registry import spec_of

    torch.set_num_threads(args.threads)
    model, weights = load_model(args.model)
    size, low = model.config.img_size, model.low_res_size
    if FIXTURE_IMAGE.is_file() and size == 128:
        image = torch.from_numpy(np.load(FIXTURE_IMAGE)["image"])
    else:
        image = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(0))

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export_sam_med3d_onnx(model, folder)
        export_seconds = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        start = time.perf_counter()
        onnx_model = OnnxSamMed3D.from_dir(folder, session_options=options)
        load_seconds = time.perf_counter() - start

        coords = torch.tensor([[[64.0, 64.0, 64.0]]])
        labels = torch.tensor([[1.0]])
        refine_coords = torch.tensor([[[64.0, 64.0, 64.0], [70.0, 60.0, 64.0]]])
        refine_labels = torch.tensor([[1.0, 0.0]])
        zeros = torch.zeros(1, 1, low, low, low)
        with torch.inference_mode():
            embedding = model.image_encoder(image)
            image_pe = model.prompt_encoder.get_dense_pe()
            previous, _ = model.predict_low_res(embedding, coords, labels, zeros, image_pe=image_pe)

            def torch_first():
                return model.predict_low_res(embedding, coords, labels, zeros, image_pe=image_pe)

            def torch_refine():
                return model.predict_low_res(embedding, refine_coords, refine_labels, previous, image_pe=image_pe)

            def onnx_first():
                return onnx_model.decode(embedding, coords, labels, zeros)

            def onnx_refine():
                return onnx_model.decode(embedding, refine_coords, refine_labels, previous)

            rows = [
                ("encoder 128^3", lambda: model.image_encoder(image), lambda: onnx_model.encode(image)),
                ("decoder, first click", torch_first, onnx_first),
                ("decoder, refinement click", torch_refine, onnx_refine),
            ]
            results = []
            for index, (name, torch_fn, onnx_fn) in enumerate(rows):
                repeats = args.repeats if index == 0 else 4 * args.repeats  # clicks are cheap
                torch_seconds, onnx_seconds = median_seconds_interleaved(torch_fn, onnx_fn, repeats)
                expected, actual = torch_fn(), onnx_fn()
                expected = expected if isinstance(expected, tuple) else (expected,)
                actual = actual if isinstance(actual, tuple) else (actual,)
                difference = max(float((a - e).abs().max()) for a, e in zip(actual, expected))
                results.append((name, torch_seconds, onnx_seconds, difference))

    print(f"model {spec_of(model).name} ({weights}), {args.threads} thread(s), medians of interleaved runs")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, providers {onnx_model.providers}")
    print(f"export {export_seconds:.1f} s, onnxruntime load {load_seconds:.1f} s")
    print(f"{'stage':28s} {'PyTorch ms':>11s} {'ORT ms':>9s} {'ORT/PyTorch':>12s} {'max |diff|':>11s}")
    for name, torch_seconds, onnx_seconds, difference in results:
        print(
            f"{name:28s} {torch_seconds * 1e3:11.1f} {onnx_seconds * 1e3:9.1f} "
            f"{onnx_seconds / torch_seconds:12.2f} {difference:11.1e}"
        )


if __name__ == "__main__":
    main()
