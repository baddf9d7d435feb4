"""The session API under /api: open a volume, click, undo/redo, fetch and save masks.

Model calls run on the model's worker thread, other work on the thread pool; a session's
lock keeps its requests in order while other sessions proceed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Header, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from sammed import __version__
from sammed.inference import Session
from sammed.io.readers import READ_SUFFIXES, image_suffix
from sammed.io.writers import WRITE_SUFFIXES
from sammed.server.context import ServerContext, context
from sammed.server.errors import ConflictError, ForbiddenError, ServerError
from sammed.server.schemas import (
    ActionReply,
    BoxPrompt,
    CreatedSession,
    ErrorReply,
    FileEntry,
    FileList,
    NewObjectReply,
    PointPrompt,
    ResetRequest,
    SaveReply,
    SaveRequest,
    ServerInfo,
    SessionInfo,
)
from sammed.server.security import relative_to_root, resolve_in_root
from sammed.server.sessions import LiveSession
from sammed.server.state import changed_region, object_voxels, objects_info, parse_region, snapshot
from sammed.server.volumes import image_name, image_nifti, mask_nifti, read_path, read_uploads

ERRORS = {code: {"model": ErrorReply} for code in (400, 401, 403, 404, 409, 413, 500, 503)}
NIFTI = {200: {"content": {"application/gzip": {}}, "description": "a .nii.gz file"}}
RAW = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "label values, i fastest (NIfTI order); headers X-Offset, X-Shape, X-Dtype describe them",
    }
}

router = APIRouter(prefix="/api", responses=ERRORS)
Ctx = Annotated[ServerContext, Depends(context)]


def live_session(
    session_id: str,
    ctx: Ctx,
    x_session_key: Annotated[str | None, Header(description="the session_key returned at creation")] = None,
) -> LiveSession:
    return ctx.store.get(session_id, x_session_key)


Live = Annotated[LiveSession, Depends(live_session)]


def session_info(ctx: ServerContext, live: LiveSession, key: bool = False) -> SessionInfo:
    session = live.session
    geometry = session.image.geometry
    fields = dict(
        session_id=live.id,
        name=live.name,
        shape=geometry.size,
        spacing=geometry.spacing,
        origin_lps=geometry.origin,
        direction=geometry.direction.tolist(),
        from_data_root=relative_to_root(ctx.config.data_root, live.source) if live.source else None,
        active_object=session.active_object,
        objects=objects_info(session),
        can_undo=session.can_undo,
        can_redo=session.can_redo,
        expires_in_s=live.expiry_s,
    )
    return CreatedSession(session_key=live.key or "", **fields) if key else SessionInfo(**fields)


def _act(session: Session, operation: Callable[[], object]) -> ActionReply:
    """Run one interaction and describe its effect (runs on a worker thread, under the session lock)."""
    start = time.perf_counter()
    before = snapshot(session)
    result = operation()
    after = snapshot(session)
    oid = session.active_object
    state = after[oid]
    return ActionReply(
        applied=result is not False,
        object_id=oid,
        active_object=session.active_object,
        changed=changed_region(session, before, after),
        object_voxels=object_voxels(state),
        iou=state.iou,
        seconds=time.perf_counter() - start,
        can_undo=session.can_undo,
        can_redo=session.can_redo,
    )


async def _model_action(ctx: ServerContext, live: LiveSession, operation: Callable[[], object]) -> ActionReply:
    async with live.lock:
        reply = await ctx.worker.run(_act, live.session, operation)
    live.touch()
    return reply


async def _quick_action(live: LiveSession, operation: Callable[[], object]) -> ActionReply:
    async with live.lock:
        reply = await run_in_threadpool(_act, live.session, operation)
    live.touch()
    return reply


@router.get("/info", response_model=ServerInfo, summary="server, model and limits")
def info(ctx: Ctx) -> ServerInfo:
    spec = getattr(ctx.worker.model, "spec", None)
    return ServerInfo(
        name="sammed",
        version=__version__,
        model=ctx.worker.name,
        model_description=spec.description if spec else ctx.worker.name,
        random_weights=ctx.worker.random_weights,
        data_root=ctx.config.data_root is not None,
        max_upload_bytes=ctx.config.max_upload_bytes,
        sessions=len(ctx.store),
        max_sessions=ctx.config.max_sessions,
    )


@router.get("/files", response_model=FileList, summary="images and folders in a folder of --data-root")
def list_files(ctx: Ctx, folder: str = "") -> FileList:
    root = ctx.config.data_root
    target = resolve_in_root(root, folder) if folder not in ("", ".") else resolve_in_root(root, ".")
    if not target.is_dir():
        raise ServerError(f"'{folder}' is not a folder")
    base = root.resolve()
    entries = []
    for child in sorted(target.iterdir()):
        if child.name.startswith("."):
            continue
        real = child.resolve()
        if not real.is_relative_to(base):
            continue  # a link leading out of the data root is not shown (and could not be opened)
        relative = child.relative_to(base).as_posix() if child.is_relative_to(base) else relative_to_root(root, real)
        if real.is_dir():
            entries.append(FileEntry(path=relative, kind="folder"))
        elif image_suffix(child) in READ_SUFFIXES:
            entries.append(FileEntry(path=relative, kind="image"))
    shown = target.relative_to(base).as_posix()
    return FileList(folder="" if shown == "." else shown, entries=entries)


@router.post("/sessions", response_model=CreatedSession, status_code=201, summary="open an image: upload it or name a file in --data-root")
async def create_session(
    ctx: Ctx,
    file: Annotated[UploadFile | None, File(description="an image file (NIfTI, NRRD, MHA, DICOM)")] = None,
    path: Annotated[str | None, Form(description="image path relative to --data-root")] = None,
) -> CreatedSession:
    if (file is None) == (path is None):
        raise ServerError("give exactly one of 'file' (an upload) or 'path' (relative to the data root)")
    ctx.store.reserve()
    source = None
    if file is not None:
        image = await read_uploads([file])
        name = file.filename or "upload"
    else:
        source = resolve_in_root(ctx.config.data_root, path)
        image = await read_path(source)
        name = relative_to_root(ctx.config.data_root, source)
    session = await run_in_threadpool(Session, ctx.worker.model, image, ctx.config.device)
    live = ctx.store.add(session, source, name)
    return session_info(ctx, live, key=True)


@router.get("/sessions/{session_id}", response_model=SessionInfo, summary="geometry, objects and their clicks")
async def get_session(ctx: Ctx, live: Live) -> SessionInfo:
    async with live.lock:  # the model thread may be changing this session's objects
        return await run_in_threadpool(session_info, ctx, live)


@router.delete("/sessions/{session_id}", status_code=204, summary="close a session and free its memory")
def close_session(
    ctx: Ctx, session_id: str, x_session_key: Annotated[str | None, Header()] = None
) -> Response:
    ctx.store.close(session_id, x_session_key)
    return Response(status_code=204)


@router.get("/sessions/{session_id}/image", responses=NIFTI, response_class=Response, summary="the image as NIfTI (for viewers)")
async def get_image(live: Live) -> Response:
    data = await run_in_threadpool(image_nifti, live.session.image)
    return Response(data, media_type="application/gzip")


@router.post("/sessions/{session_id}/points", response_model=ActionReply, summary="add a positive or negative click")
async def add_point(ctx: Ctx, live: Live, prompt: PointPrompt) -> ActionReply:
    session = live.session
    return await _model_action(
        ctx,
        live,
        lambda: session.add_point(prompt.position, prompt.positive, prompt.object_id, prompt.space, prompt.convention),
    )


@router.post("/sessions/{session_id}/boxes", response_model=ActionReply, summary="add a 3D box (two opposite corners)")
async def add_box(ctx: Ctx, live: Live, prompt: BoxPrompt) -> ActionReply:
    session = live.session
    return await _model_action(
        ctx,
        live,
        lambda: session.add_box(prompt.corner_a, prompt.corner_b, prompt.object_id, prompt.space, prompt.convention),
    )


@router.post("/sessions/{session_id}/undo", response_model=ActionReply, summary="revert the last interaction")
async def undo(live: Live) -> ActionReply:
    return await _quick_action(live, live.session.undo)


@router.post("/sessions/{session_id}/redo", response_model=ActionReply, summary="re-apply the last undone interaction")
async def redo(live: Live) -> ActionReply:
    return await _quick_action(live, live.session.redo)


@router.post("/sessions/{session_id}/reset", response_model=ActionReply, summary="clear one object, or everything")
async def reset(live: Live, request: ResetRequest) -> ActionReply:
    return await _quick_action(live, lambda: live.session.reset(request.object_id))


@router.post("/sessions/{session_id}/objects", response_model=NewObjectReply, summary="start a new object")
async def new_object(live: Live) -> NewObjectReply:
    async with live.lock:
        return NewObjectReply(object_id=live.session.new_object())


def _labels(session: Session, region: tuple[slice, ...]) -> np.ndarray:
    return session.label_map()[region]


@router.get("/sessions/{session_id}/labels", responses=RAW, response_class=Response, summary="label map values, whole or a region")
async def get_labels(
    live: Live,
    offset: Annotated[str | None, Query(description="i,j,k of the region's first voxel")] = None,
    shape: Annotated[str | None, Query(description="size a,b,c of the region")] = None,
) -> Response:
    region = parse_region(offset, shape, live.session.image.shape)
    async with live.lock:
        labels = await run_in_threadpool(_labels, live.session, region)
    headers = {
        "X-Offset": ",".join(str(s.start) for s in region),
        "X-Shape": ",".join(str(n) for n in labels.shape),
        "X-Dtype": labels.dtype.name,
    }
    return Response(labels.tobytes(order="F"), media_type="application/octet-stream", headers=headers)


def _mask_array(session: Session, object_id: int | None) -> np.ndarray:
    return session.label_map() if object_id is None else session.mask(object_id).astype(np.uint8)


@router.get("/sessions/{session_id}/mask", responses=NIFTI, response_class=Response, summary="download the mask as NIfTI")
async def download_mask(
    live: Live, object_id: Annotated[int | None, Query(ge=1, description="one object as 0/1; default: the label map")] = None
) -> Response:
    async with live.lock:
        array = await run_in_threadpool(_mask_array, live.session, object_id)
    data = await run_in_threadpool(mask_nifti, array, live.session.image)
    filename = f"{Path(live.name).name.split('.')[0] or 'mask'}_seg.nii.gz"
    return Response(data, media_type="application/gzip", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _save_target(ctx: ServerContext, live: LiveSession, filename: str | None) -> Path:
    if live.source is None:
        raise ConflictError("this image was uploaded, so it has no folder on the server: download the mask instead")
    name = filename or f"{image_name(live.source)}_seg.nii.gz"
    if "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ForbiddenError(f"'{name}' is not a plain file name")
    if image_suffix(name) not in WRITE_SUFFIXES:
        raise ServerError(f"cannot write '{name}': use one of {', '.join(WRITE_SUFFIXES)}")
    root = ctx.config.data_root
    folder = relative_to_root(root, live.source.parent)
    target = resolve_in_root(root, f"{folder}/{name}" if folder != "." else name, must_exist=False)
    if target == live.source.resolve():
        raise ConflictError("refusing to write the mask over the image itself")
    return target


@router.post("/sessions/{session_id}/save", response_model=SaveReply, summary="write the mask next to the image (data-root images)")
async def save_mask(ctx: Ctx, live: Live, request: SaveRequest) -> SaveReply:
    target = _save_target(ctx, live, request.filename)
    unresolved = live.source.parent / target.name
    if unresolved.is_symlink():
        raise ForbiddenError(f"'{target.name}' is a symbolic link: choose another name")
    if target.exists() and not request.overwrite:
        raise ConflictError(f"'{relative_to_root(ctx.config.data_root, target)}' exists: send overwrite=true to replace it")
    async with live.lock:
        written = await run_in_threadpool(live.session.save, target, request.object_id)
        voxels = int(np.count_nonzero(await run_in_threadpool(_mask_array, live.session, request.object_id)))
    return SaveReply(path=relative_to_root(ctx.config.data_root, written), voxels=voxels)
