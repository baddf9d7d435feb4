"""SAM-Med2D per-image and per-prompt latency: sammed (PyTorch, onnxruntime) against a literal reference.

The reference is the official ``SammedPredictor`` computation done literally, in this process:
``set_image`` normalises the uint8 image in float32 NumPy and nearest-resizes it to 256, then the
image encoder runs the official block code (every windowed block zero-pads its 16x16 tokens to
28x28 and projects all 784 tokens; every convolution is PyTorch's generic Conv2d / ConvTranspose2d);
``predict`` scales the prompts, runs the prompt encoder, recomputes the dense positional encoding,
runs the mask decoder with multimask output, keeps the best-IoU mask, upsamples it 64 -> 256 ->
H x W and thresholds its sigmoid, returning float masks as the official predictor does.

sammed's path is ``Predictor2D`` on the same model (PyTorch), and on the same weights exported to
ONNX and run by onnxruntime (``--skip-onnx`` leaves that out; the export takes a minute or two).
Every repeat times the three paths back to back on the same image and prompts, so a busy machine
slows all of them alike; the table reports medians and ratios reference / path. Usage::

    .venv/bin/python benchmarks/bench_2d.py [--repeats 7] [--image PNG] [--skip-onnx]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEMO_IMAGE = SHARED / "data" / "sammed2d_demo_2d" / "images" / "amos_0006_90.png"
PROMPTS = {  # on the 512 x 512 demo slice: a liver box, a click, a click + box
    "box": dict(box=np.array([300.0, 150.0, 470.0, 380.0])),
    "click": dict(point_coords=np.array([[380.0, 260.0]]), point_labels=np.array([1])),
    "click+box": dict(point_coords=np.array([[380.0, 260.0]]), point_labels=np.array([1]),
                      box=np.array([300.0, 150.0, 470.0, 380.0])),
}


# --- the literal reference ---------------------------------------------------------------------


def reference_encoder(encoder, x: torch.Tensor) -> torch.Tensor:
    x = encoder.patch_embed(x) + encoder.pos_embed
    for block in encoder.blocks:
        x = block.reference_forward(x)  # official order, padded windows, generic convolutions
    return encoder.neck(x.permute(0, 3, 1, 2))


def with_generic_convolutions(model):
    """A copy of ``model`` whose matmul-backed convolutions are PyTorch's own modules again and
    whose decoder recomputes every projection at every prompt (no remembered image side)."""
    from sammed.models.common import TwoWayAttentionBlock
    from sammed.models.sam2d.matmul_conv import MatmulConv2d, MatmulConvTranspose2d

    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, TwoWayAttentionBlock):
            module.remember_image_side = False
        elif isinstance(module, MatmulConv2d):
            module.__class__ = torch.nn.Conv2d
        elif isinstance(module, MatmulConvTranspose2d):
            module.__class__ = torch.nn.ConvTranspose2d
    return reference


class ReferencePredictor:
    """``SammedPredictor`` step by step (``image_format='RGB'``, so a BGR array is not flipped)."""

    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)

    def __init__(self, model) -> None:
        self.model = with_generic_convolutions(model)

    def set_image(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        normalised = (image - self.mean) / self.std
        rows = (np.arange(256) * height) // 256  # albumentations Resize(256, 256, INTER_NEAREST)
        cols = (np.arange(256) * width) // 256
        resized = normalised[rows][:, cols]
        x = torch.from_numpy(resized).permute(2, 0, 1).contiguous()[None]
        with torch.no_grad():
            self.features = reference_encoder(self.model.image_encoder, x)
        self.original_size = (height, width)

    def predict(self, point_coords=None, point_labels=None, box=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = self.original_size
        scale = np.array([256 / width, 256 / height])
        points = None
        if point_coords is not None:
            coords = torch.as_tensor(point_coords * scale, dtype=torch.float)[None]
            points = (coords, torch.as_tensor(point_labels, dtype=torch.int)[None])
        boxes = None if box is None else torch.as_tensor((box.reshape(2, 2) * scale).reshape(-1, 4), dtype=torch.float)
        model = self.model
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
            low_res, iou = model.mask_decoder(
                image_embeddings=self.features,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            best = torch.argmax(iou, dim=1)
            low_res, iou = low_res[:, best], iou[:, best]
            masks = F.interpolate(low_res, (256, 256), mode="bilinear", align_corners=False)
            masks = F.interpolate(masks, (height, width), mode="bilinear", align_corners=False)
            masks = (torch.sigmoid(masks) > 0.5).float()
        return masks[0].numpy(), iou[0].numpy(), low_res[0].numpy()


# --- measurement -------------------------------------------------------------------------------


def timed(samples: dict, key: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    samples.setdefault(key, []).append(time.perf_counter() - start)
    return result


def build_paths(skip_onnx: bool) -> dict:
    from sammed.inference.predictor2d import Predictor2D
    from sammed.models import build_model

    torch.manual_seed(0)
    model = build_model("sam-med2d")
    for parameter in model.parameters():  # random, non-zero tables (timing does not depend on values)
        if parameter.abs().sum() == 0:
            parameter.data.normal_(0, 0.02)
    paths = {"reference": ReferencePredictor(model), "sammed torch": Predictor2D(model)}
    if not skip_onnx:
        from sammed.export.onnx2d import export_sam2d_onnx
        from sammed.inference.onnx_backend2d import OnnxSam2D

        folder = Path(tempfile.mkdtemp(prefix="sammed-bench2d-"))
        start = time.perf_counter()
        export_sam2d_onnx(model, folder)
        print(f"ONNX export: {time.perf_counter() - start:.0f} s")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same cores as PyTorch
        paths["sammed onnx"] = Predictor2D(OnnxSam2D.from_dir(folder, session_options=options))
    return paths


def run(paths: dict, image: np.ndarray, repeats: int) -> tuple[dict, dict]:
    samples: dict = {name: {} for name in paths}
    agreement: dict = {}
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for name, predictor in paths.items():
            times: dict = {} if repeat == 0 else samples[name]
            timed(times, "set_image", predictor.set_image, image)
            for prompt_name, prompt in PROMPTS.items():
                result = timed(times, f"prompt: {prompt_name}", predictor.predict, **prompt)
                agreement.setdefault(prompt_name, {})[name] = result
    return samples, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--image", type=Path, default=DEMO_IMAGE)
    parser.add_argument("--skip-onnx", action="store_true", help="only the PyTorch paths")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    image = np.asarray(PILImage.open(args.image).convert("RGB"))[:, :, ::-1].copy()  # BGR, as cv2.imread
    paths = build_paths(args.skip_onnx)
    samples, agreement = run(paths, image, args.repeats)
    load = os.getloadavg()[0]
    print(f"SAM-Med2D on {args.image.name} {image.shape[1]}x{image.shape[0]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load:.1f}, "
          f"median of {args.repeats} (ms)")
    names = list(paths)
    stages = list(samples["reference"])
    header = f"{'stage':20s}" + "".join(f"{n:>15s}" for n in names) + "".join(
        f"{'ref/' + n.split()[-1]:>12s}" for n in names[1:]
    )
    print(header)
    medians = {n: {s: statistics.median(samples[n][s]) * 1000 for s in stages} for n in names}
    for stage in stages:
        row = f"{stage:20s}" + "".join(f"{medians[n][stage]:15.1f}" for n in names)
        row += "".join(f"{medians['reference'][stage] / medians[n][stage]:11.2f}x" for n in names[1:])
        print(row)
    per_image = {n: medians[n]["set_image"] + medians[n]["prompt: box"] for n in names}
    row = f"{'images/s (+1 box)':20s}" + "".join(f"{1000 / per_image[n]:15.2f}" for n in names)
    row += "".join(f"{per_image['reference'] / per_image[n]:11.2f}x" for n in names[1:])
    print(row)
    torch_path = "sammed torch"  # issue 18's targets, from the medians above (same process, same repeats)
    prompts = ", ".join(f"{s.split(': ')[1]} {medians[torch_path][s]:.1f}" for s in stages if s.startswith("prompt"))
    print(f"targets: {torch_path} images/s = {per_image['reference'] / per_image[torch_path]:.2f}x the reference's "
          f"(target >= 3x); set_image {medians['reference']['set_image'] / medians[torch_path]['set_image']:.2f}x; "
          f"prompt ms {prompts} (target <= 10)")
    for prompt_name, results in agreement.items():
        reference = results["reference"]
        for name in names[1:]:
            other = results[name]
            differ = int((other[0] != reference[0]).sum())
            print(f"  {prompt_name:10s} {name}: max |d low-res logit| "
                  f"{np.abs(other[2] - reference[2]).max():.2e}, mask pixels differing {differ}")


if __name__ == "__main__":
    main()
