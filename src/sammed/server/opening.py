"""Opening an image as a session, or a mask for one: its decoded size is checked and charged before it is decoded."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from sammed.inference import Session
from sammed.io import Image
from sammed.server.config import session_charge
from sammed.server.context import ServerContext
from sammed.server.errors import ServerError, TooLargeError
from sammed.server.volumes import DecodedSize, decoded_size, read_checked, read_mask_checked


@contextlib.asynccontextmanager
async def admitted_image(ctx: ServerContext, target: Path, shown: str) -> AsyncIterator[tuple[Image, int]]:
    """Read ``target`` if its decoded size fits the per-image limit and the memory budget.

    Yields the image and its charge; the charge stays held in the budget until the block
    ends, so a session added to the store inside the block is never counted as free memory.
    """
    charge = await _checked_charge(ctx, target, shown)
    with ctx.store.admission(charge):
        image = await run_in_threadpool(read_checked, target, shown)
        yield image, charge


async def _checked_charge(ctx: ServerContext, target: Path, shown: str) -> int:
    """The memory-budget charge of decoding ``target``; 413 over the per-image limit (headers only)."""
    size: DecodedSize = await run_in_threadpool(decoded_size, target, shown)
    limit = ctx.config.max_image_bytes
    if size.bytes > limit:
        raise TooLargeError(
            f"'{shown}' decodes to {size.bytes / 2**20:.0f} MiB ({size.description}), over this server's "
            f"per-image limit of {limit / 2**20:.0f} MiB (--max-image-mb)"
        )
    return session_charge(size.voxels, size.bytes)


async def admitted_mask(ctx: ServerContext, target: Path, shown: str, reference: Image) -> np.ndarray:
    """A label file on ``reference``'s grid, counted like an image upload (a small .nii.gz may decode
    to gigabytes): per-image limit from its header, then the memory budget held while it is read."""
    if target.is_dir():
        raise ServerError(f"'{shown}' is a folder: a mask is one file (NIfTI, NRRD, MHA, .seg.nrrd or a DICOM-SEG)")
    charge = await _checked_charge(ctx, target, shown)
    with ctx.store.admission(charge):
        return await run_in_threadpool(read_mask_checked, target, shown, reference)


async def new_session(ctx: ServerContext, image: Image) -> Session:
    return await run_in_threadpool(Session, ctx.worker.model, image, ctx.config.device)
