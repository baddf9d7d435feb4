"""Numeric precision of model execution: exact float32 by default, or a fast mode.

``fp32`` reproduces the official computation within the parity tolerances. ``bf16`` (CPUs with
AVX-512 BF16/AMX, and GPUs) and ``fp16`` (GPUs) run matmuls and convolutions under autocast while
normalisations and softmax stay in float32; masks then agree with fp32 closely but not bitwise.
``auto`` picks bf16 where the hardware has native support, else fp32.
"""

from __future__ import annotations

import contextlib

import torch

from sammed.errors import SammedError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def cpu_has_native_bf16() -> bool:
    """True on CPUs whose oneDNN kernels run bfloat16 natively (AVX-512 BF16 or AMX)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - very old torch
        return False
    if capability not in ("AVX512", "AMX"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` and turn ``auto`` into a concrete choice for ``device``."""
    if precision not in PRECISIONS:
        raise SammedError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise SammedError("fp16 is for GPUs; on a CPU use --precision bf16 (or auto)")
    return precision


def autocast(precision: str, device: torch.device):
    """Context manager running the model in ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
