"""The MONAI Label subset that interactive clients use: GET /info/, PUT /session/, POST /infer/{model}.

3D Slicer's and OHIF's MONAI Label clients list the models from ``/info/``, upload the volume
they show with ``PUT /session/`` and send ``foreground`` / ``background`` voxel lists to
``/infer/{model}``; the reply is the mask as NIfTI. Here the model is announced as a
``deepgrow`` model (point-driven, one label), and the clicks run as the official iterative
protocol: each point refines the previous mask.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import time
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from sammed import __version__
from sammed.inference import Session
from sammed.server.context import ServerContext, context
from sammed.server.errors import NotFoundError, ServerError
from sammed.server.opening import admitted_image, new_session
from sammed.server.schemas import ErrorReply
from sammed.server.security import relative_to_root, resolve_in_root
from sammed.server.volumes import mask_nifti, staged_uploads

router = APIRouter(tags=["MONAI Label"], responses={code: {"model": ErrorReply} for code in (400, 403, 404, 413, 422, 500, 503)})
Ctx = Annotated[ServerContext, Depends(context)]
LABEL = "foreground"


@router.get("/info/", summary="MONAI Label app description: the served model as a deepgrow model")
def monai_info(ctx: Ctx) -> dict:
    spec = getattr(ctx.worker.model, "spec", None)
    description = spec.description if spec else ctx.worker.name
    if ctx.worker.random_weights:
        description += " [UNTRAINED RANDOM WEIGHTS: results are meaningless]"
    return {
        "name": "sammed",
        "description": "Promptable 3D segmentation (segment anything) served by sammed",
        "version": __version__,
        "labels": [LABEL],
        "models": {
            ctx.worker.name: {
                "type": "deepgrow",
                "labels": {LABEL: 1},
                "dimension": 3,
                "description": description,
                "config": {},
            }
        },
        "trainers": {},
        "strategies": {},
        "scoring": {},
        "train_stats": {},
        "datastore": {"total": 0, "completed": 0},
    }


def _session_reply(live) -> dict:
    image = live.session.image
    return {
        "session_id": live.id,
        "session_info": {
            "name": live.name,
            "image": live.id,
            "shape": list(image.shape),
            "expiry": live.expiry_s,
            "last_access_ts": int(time.time()),
        },
    }


@router.put("/session/", summary="upload an image (one file, or the files of one DICOM series) for later /infer calls")
async def monai_put_session(
    ctx: Ctx,
    files: Annotated[list[UploadFile], File(description="image file(s)")],
    uncompress: Annotated[bool, Form()] = False,
    expiry: Annotated[int, Form(ge=1, description="seconds of inactivity before the session closes")] = 3600,
) -> dict:
    if uncompress:
        raise ServerError("uncompress=true is not supported: upload the image file(s) themselves")
    ctx.store.reserve()
    name = files[0].filename or "upload"
    async with staged_uploads(files) as target, admitted_image(ctx, target, name) as (image, charge):
        session = await new_session(ctx, image)
        live = ctx.store.add(session, None, name, with_key=False, expiry_s=expiry, charge=charge)
    return _session_reply(live)


@router.get("/session/{session_id}", summary="describe an uploaded session")
def monai_get_session(ctx: Ctx, session_id: str) -> dict:
    return _session_reply(ctx.store.get(session_id, None))


@router.delete("/session/{session_id}", summary="close an uploaded session")
def monai_delete_session(ctx: Ctx, session_id: str) -> dict:
    ctx.store.close(session_id, None)
    return {"session_id": session_id, "deleted": True}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _voxel_list(params: dict, key: str) -> list[tuple[float, float, float]]:
    """``params[key]`` as [x, y, z] voxel triples of finite numbers (JSON null, NaN, text are refused)."""
    points = params.get(key)
    if points is None:
        return []
    if not isinstance(points, list) or any(
        not isinstance(p, list) or len(p) != 3 or not all(_is_number(v) for v in p) for p in points
    ):
        raise ServerError(f"params.{key} must be a list of [x, y, z] voxel indices (three finite numbers each)")
    return [tuple(float(v) for v in p) for p in points]


def _infer(session: Session, foreground, background) -> np.ndarray:
    session.reset()
    for point in foreground:
        session.add_point(point, positive=True, object_id=1)
    for point in background:
        session.add_point(point, positive=False, object_id=1)
    return session.mask(1).astype(np.uint8)


def _multipart(params: dict, nifti: bytes, filename: str) -> Response:
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'.encode()
        + json.dumps(params).encode()
        + b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + nifti
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return Response(b"".join(parts), media_type=f"multipart/form-data; boundary={boundary}")


@router.post(
    "/infer/{model}",
    summary="segment from foreground/background voxel clicks; the mask comes back as NIfTI",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}, "application/json": {}, "multipart/form-data": {}}}},
)
async def monai_infer(
    ctx: Ctx,
    model: str,
    image: Annotated[str | None, Query(description="image path relative to --data-root")] = None,
    session_id: Annotated[str | None, Query(description="id from PUT /session/")] = None,
    output: Annotated[Literal["image", "json", "all"], Query()] = "image",
    params: Annotated[str, Form(description='JSON, e.g. {"foreground": [[x, y, z]], "background": []}')] = "{}",
    file: Annotated[UploadFile | None, File(description="the image itself, instead of image= or session_id=")] = None,
) -> Response:
    if model != ctx.worker.name:
        raise NotFoundError(f"unknown model '{model}': this server serves '{ctx.worker.name}'")
    try:
        request = json.loads(params or "{}")
    except json.JSONDecodeError as exc:
        raise ServerError(f"params is not valid JSON ({exc.msg})") from None
    if not isinstance(request, dict):
        raise ServerError("params must be a JSON object")
    foreground, background = _voxel_list(request, "foreground"), _voxel_list(request, "background")
    if not foreground:
        raise ServerError("params.foreground needs at least one [x, y, z] click: this model is prompt-driven")
    start = time.perf_counter()
    if session_id is not None:
        live = ctx.store.get(session_id, None)
        async with live.lock:
            mask = await ctx.worker.run(_infer, live.session, foreground, background)
        reference = live.session.image
    else:
        async with contextlib.AsyncExitStack() as stack:
            if file is not None:
                target, shown = await stack.enter_async_context(staged_uploads([file])), file.filename or "upload"
            elif image is not None:
                target = resolve_in_root(ctx.config.data_root, image)
                shown = relative_to_root(ctx.config.data_root, target)
            else:
                raise ServerError("give image=<path in the data root>, session_id=<from PUT /session/> or upload a file")
            reference, _ = await stack.enter_async_context(admitted_image(ctx, target, shown))
            session = await new_session(ctx, reference)
            mask = await ctx.worker.run(_infer, session, foreground, background)
    result = {
        "label_names": {LABEL: 1},
        "latencies": {"infer": round(time.perf_counter() - start, 4)},
        "voxels": int(mask.sum()),
    }
    if output == "json":
        return Response(json.dumps(result), media_type="application/json")
    nifti = await run_in_threadpool(mask_nifti, mask, reference)
    if output == "all":
        return _multipart(result, nifti, "label.nii.gz")
    return Response(
        nifti,
        media_type="application/gzip",
        headers={"Content-Disposition": 'attachment; filename="label.nii.gz"', "X-Params": json.dumps(result)},
    )
