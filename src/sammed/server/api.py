"""The session API under /api: open a volume, click, scribble, lasso, start from a mask, undo/redo, fetch and save masks.

Model calls run on the model's worker thread, other work on the thread pool; a session's
lock keeps its requests in order while other sessions proceed.
"""

from __future__ import annotations

import re
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Callable
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as FastPath
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from sammed import __version__
from sammed.inference import Session
from sammed.io.dicom_seg import looks_like_dicom_input
from sammed.io.readers import READ_SUFFIXES, image_suffix
from sammed.io.writers import WRITE_SUFFIXES, segmentation_suffix
from sammed.models.registry import spec_of
from sammed.server.context import ServerContext, context
from sammed.server.errors import ConflictError, ForbiddenError, InvalidFieldError, NotFoundError, ServerError
from sammed.server.opening import admitted_image, admitted_mask, new_session
from sammed.server.schemas import (
    MAX_LABEL,
    MAX_OBJECT_ID,
    ActionReply,
    BoxPrompt,
    CreatedSession,
    ErrorReply,
    FileEntry,
    FileList,
    LassoPrompt,
    NewObjectReply,
    NewObjectRequest,
    PointPrompt,
    RenameRequest,
    ResetRequest,
    SaveReply,
    SaveRequest,
    ScribblePrompt,
    ServerInfo,
    SessionInfo,
)
from sammed.server.security import relative_to_root, resolve_in_root
from sammed.server.sessions import LiveSession
from sammed.server.state import changed_region, object_voxels, objects_info, parse_region, snapshot
from sammed.server.volumes import image_name, image_nifti, mask_nifti, staged_uploads

ERRORS = {code: {"model": ErrorReply} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503)}
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


def checked_object(session: Session, object_id: int | None) -> int | None:
    """An object id must name one of the session's objects or the next new one.

    A stray id (70000) would otherwise become an object no label map can hold, and every
    later mask, label or save request would fail until it was undone.
    """
    if object_id is None:
        return None
    next_id = max([0, *session.object_ids, session.active_object]) + 1
    highest = min(next_id, MAX_OBJECT_ID)
    if not 1 <= object_id <= highest:
        raise NotFoundError(f"object_id {object_id} is not an object of this session (use 1 to {highest})")
    return object_id


def attachment(filename: str) -> str:
    """A Content-Disposition value for any name: an ASCII fallback plus the UTF-8 name (RFC 6266/5987).

    HTTP headers are Latin-1; a non-ASCII or quote-bearing upload name must not break the reply.
    """
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


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


async def _prompt(
    ctx: ServerContext, live: LiveSession, object_id: int | None, add: Callable[..., object]
) -> ActionReply:
    """A prompt for one object: ``add(object_id=checked id)`` on the model thread, in the session's order.

    The id is checked there, under the session lock, so a refused id leaves the session as it was.
    """
    return await _model_action(ctx, live, lambda: add(object_id=checked_object(live.session, object_id)))


async def _quick_action(live: LiveSession, operation: Callable[[], object]) -> ActionReply:
    async with live.lock:
        reply = await run_in_threadpool(_act, live.session, operation)
    live.touch()
    return reply


@router.get("/info", response_model=ServerInfo, summary="server, model and limits")
def info(ctx: Ctx) -> ServerInfo:
    spec = spec_of(ctx.worker.model)
    return ServerInfo(
        name="sammed",
        version=__version__,
        model=ctx.worker.name,
        model_description=spec.description if spec else ctx.worker.name,
        random_weights=ctx.worker.random_weights,
        data_root=ctx.config.data_root is not None,
        max_upload_bytes=ctx.config.max_upload_bytes,
        max_image_bytes=ctx.config.max_image_bytes,
        memory_budget_bytes=ctx.config.memory_budget_bytes,
        memory_charged_bytes=ctx.store.charged,
        largest_session_bytes=ctx.config.largest_session_charge,
        sessions=len(ctx.store),
        max_sessions=ctx.config.max_sessions,
    )


def _entry(base: Path, child: Path) -> FileEntry | None:
    """How ``child`` is listed, or None: hidden, broken, looping, or leading out of the root."""
    if child.name.startswith("."):
        return None
    try:
        real = child.resolve(strict=True)
        is_dir = real.is_dir()
    except (OSError, RuntimeError):  # a dangling link or a symlink loop: nothing to open there
        return None
    if not real.is_relative_to(base):
        return None  # a link leading out of the data root is not shown (and could not be opened)
    relative = child.relative_to(base).as_posix() if child.is_relative_to(base) else real.relative_to(base).as_posix()
    if is_dir:
        return FileEntry(path=relative, kind="folder")
    if image_suffix(child) in READ_SUFFIXES:
        return FileEntry(path=relative, kind="image")
    return None


@router.get("/files", response_model=FileList, summary="images and folders in a folder of --data-root")
def list_files(ctx: Ctx, folder: str = "") -> FileList:
    root = ctx.config.data_root
    target = resolve_in_root(root, folder if folder not in ("", ".") else ".")
    if not target.is_dir():
        raise ServerError(f"'{folder}' is not a folder")
    base = root.resolve()
    try:
        children = sorted(target.iterdir())
    except OSError as exc:
        raise ForbiddenError(f"cannot list '{folder}': {exc.strerror or 'not readable'}") from None
    entries = [entry for entry in (_entry(base, child) for child in children) if entry is not None]
    shown = target.relative_to(base).as_posix()
    return FileList(folder="" if shown == "." else shown, entries=entries)


_PATH_FIELD = {"type": "string", "minLength": 1, "description": "image file or DICOM folder, relative to --data-root"}
_FILE_FIELD = {"type": "string", "format": "binary", "description": "an image file (NIfTI, NRRD, MHA, DICOM)"}
OPEN_BODY = {
    "requestBody": {
        "required": True,
        "description": "exactly one of 'file' (an upload) or 'path' (an image in --data-root)",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "oneOf": [
                        {"title": "Upload", "type": "object", "properties": {"file": _FILE_FIELD}, "required": ["file"], "additionalProperties": False},
                        {"title": "DataRootImage", "type": "object", "properties": {"path": _PATH_FIELD}, "required": ["path"], "additionalProperties": False},
                    ]
                }
            },
            "application/x-www-form-urlencoded": {
                "schema": {"title": "DataRootImage", "type": "object", "properties": {"path": _PATH_FIELD}, "required": ["path"], "additionalProperties": False}
            },
        },
    }
}


async def _open(ctx: ServerContext, target: Path, name: str, source: Path | None) -> CreatedSession:
    async with admitted_image(ctx, target, name) as (image, charge):
        session = await new_session(ctx, image)
        live = ctx.store.add(session, source, name, charge=charge)
    return session_info(ctx, live, key=True)


@router.post(
    "/sessions",
    response_model=CreatedSession,
    status_code=201,
    summary="open an image: upload it or name a file in --data-root",
    openapi_extra=OPEN_BODY,
)
async def create_session(ctx: Ctx, request: Request) -> CreatedSession:
    # The form is parsed here (not as FastAPI parameters) so the schema can say "file or path" (OPEN_BODY).
    async with request.form(max_files=1, max_fields=4) as form:
        fields = set(form.keys())
        if fields - {"file", "path"} or len(fields) != 1 or len(form.getlist(next(iter(fields)))) != 1:
            raise ServerError("give exactly one of 'file' (an upload) or 'path' (relative to the data root), and nothing else")
        file, path = form.get("file"), form.get("path")
        ctx.store.reserve()
        if file is not None:
            if not isinstance(file, UploadFile):
                raise ServerError("'file' must be an uploaded file (multipart/form-data), not a text field")
            name = file.filename or "upload"
            async with staged_uploads([file]) as target:
                return await _open(ctx, target, name, None)
        if not isinstance(path, str):
            raise ServerError("'path' must be text: an image path relative to the data root")
        source = resolve_in_root(ctx.config.data_root, path)
        return await _open(ctx, source, relative_to_root(ctx.config.data_root, source), source)


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
    add = partial(live.session.add_point, prompt.position, prompt.positive, space=prompt.space, convention=prompt.convention)
    return await _prompt(ctx, live, prompt.object_id, add)


@router.post("/sessions/{session_id}/boxes", response_model=ActionReply, summary="add a 3D box (two opposite corners)")
async def add_box(ctx: Ctx, live: Live, prompt: BoxPrompt) -> ActionReply:
    add = partial(live.session.add_box, prompt.corner_a, prompt.corner_b, space=prompt.space, convention=prompt.convention)
    return await _prompt(ctx, live, prompt.object_id, add)


@router.post("/sessions/{session_id}/scribbles", response_model=ActionReply, summary="add a scribble (a polyline of voxels)")
async def add_scribble(ctx: Ctx, live: Live, prompt: ScribblePrompt) -> ActionReply:
    return await _prompt(ctx, live, prompt.object_id, partial(live.session.add_scribble, prompt.voxels, prompt.positive))


@router.post("/sessions/{session_id}/lassos", response_model=ActionReply, summary="add or cut a filled polygon on one slice")
async def add_lasso(ctx: Ctx, live: Live, prompt: LassoPrompt) -> ActionReply:
    add = partial(live.session.add_lasso, prompt.polygon, prompt.axis, prompt.index, prompt.positive)
    return await _prompt(ctx, live, prompt.object_id, add)


_MASK_FIELDS = {
    "label": {"type": "integer", "minimum": 1, "maximum": MAX_LABEL, "description": "the label value to use; default: every non-zero voxel"},
    "object_id": {"type": "integer", "minimum": 1, "maximum": MAX_OBJECT_ID, "description": "an existing object or the next one; default: the active object"},
}
_MASK_FILE = {"type": "string", "format": "binary", "description": "a label file on the image's grid (NIfTI, NRRD, MHA, .seg.nrrd, DICOM-SEG)"}
_MASK_PATH = {"type": "string", "minLength": 1, "description": "a label file relative to --data-root"}
_DATA_ROOT_MASK = {
    "title": "DataRootMask", "type": "object", "properties": {"path": _MASK_PATH, **_MASK_FIELDS}, "required": ["path"], "additionalProperties": False,
}
INITIAL_MASK_BODY = {
    "requestBody": {
        "required": True,
        "description": "exactly one of 'file' (an upload) or 'path' (a label file in --data-root); optional 'label' and 'object_id'",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "oneOf": [
                        {"title": "MaskUpload", "type": "object", "properties": {"file": _MASK_FILE, **_MASK_FIELDS}, "required": ["file"], "additionalProperties": False},
                        _DATA_ROOT_MASK,
                    ]
                }
            },
            "application/x-www-form-urlencoded": {"schema": _DATA_ROOT_MASK},
        },
    }
}


def _form_int(form: FormData, name: str, highest: int) -> int | None:
    """An optional integer form field in 1..highest (422 otherwise, as a JSON body's schema would give)."""
    values = form.getlist(name)
    if not values:
        return None
    text = values[0]
    if len(values) > 1 or not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,6}", text.strip()) or not 1 <= int(text) <= highest:
        raise InvalidFieldError(f"{name}: give one integer from 1 to {highest}")
    return int(text)


@router.post(
    "/sessions/{session_id}/initial-mask",
    response_model=ActionReply,
    summary="start an object from a label file: upload it or name one in --data-root",
    openapi_extra=INITIAL_MASK_BODY,
)
async def add_initial_mask(ctx: Ctx, live: Live, request: Request) -> ActionReply:
    session = live.session
    async with request.form(max_files=1, max_fields=4) as form:
        fields = set(form.keys())
        sources = fields & {"file", "path"}
        if fields - {"file", "path", "label", "object_id"} or len(sources) != 1 or len(form.getlist(next(iter(sources)))) != 1:
            raise ServerError("give exactly one of 'file' (an upload) or 'path' (relative to the data root), optionally 'label' and 'object_id'")
        label = _form_int(form, "label", MAX_LABEL)
        object_id = _form_int(form, "object_id", MAX_OBJECT_ID)
        file, path = form.get("file"), form.get("path")
        if file is not None:
            if not isinstance(file, UploadFile):
                raise ServerError("'file' must be an uploaded file (multipart/form-data), not a text field")
            async with staged_uploads([file]) as target:
                mask = await admitted_mask(ctx, target, file.filename or "upload", session.image)
        else:
            if not isinstance(path, str):
                raise ServerError("'path' must be text: a label file relative to the data root")
            source = resolve_in_root(ctx.config.data_root, path)
            mask = await admitted_mask(ctx, source, relative_to_root(ctx.config.data_root, source), session.image)
    return await _prompt(ctx, live, object_id, partial(session.add_initial_mask, mask, label=label))


@router.post("/sessions/{session_id}/undo", response_model=ActionReply, summary="revert the last interaction")
async def undo(live: Live) -> ActionReply:
    return await _quick_action(live, live.session.undo)


@router.post("/sessions/{session_id}/redo", response_model=ActionReply, summary="re-apply the last undone interaction")
async def redo(live: Live) -> ActionReply:
    return await _quick_action(live, live.session.redo)


@router.post("/sessions/{session_id}/reset", response_model=ActionReply, summary="clear one object, or everything")
async def reset(live: Live, request: ResetRequest) -> ActionReply:
    return await _quick_action(live, lambda: live.session.reset(checked_object(live.session, request.object_id)))


@router.post("/sessions/{session_id}/objects", response_model=NewObjectReply, summary="start a new object (optionally named)")
async def new_object(live: Live, request: NewObjectRequest | None = None) -> NewObjectReply:
    async with live.lock:
        session = live.session
        if max([0, *session.object_ids, session.active_object]) >= MAX_OBJECT_ID:
            raise ConflictError(f"this session has reached the largest object id, {MAX_OBJECT_ID}")
        name = _checked_name(request.name) if request is not None else None
        object_id = session.new_object(name=name)
        return NewObjectReply(object_id=object_id, name=session.object_name(object_id))


def _checked_name(name: str | None) -> str | None:
    if name is not None and (not name.strip() or any(ord(c) < 32 for c in name)):
        raise ServerError("an object name is one non-empty line")
    return name


@router.put("/sessions/{session_id}/objects/{object_id}", response_model=NewObjectReply, summary="rename an object")
async def rename_object(
    live: Live, object_id: Annotated[int, FastPath(ge=1, le=MAX_OBJECT_ID)], request: RenameRequest
) -> NewObjectReply:
    async with live.lock:
        session = live.session
        checked_object(session, object_id)
        session.set_name(object_id, _checked_name(request.name) or "")
        return NewObjectReply(object_id=object_id, name=session.object_name(object_id))


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
    live: Live,
    object_id: Annotated[int | None, Query(ge=1, le=MAX_OBJECT_ID, description="one object as 0/1; default: the label map")] = None,
) -> Response:
    async with live.lock:
        checked_object(live.session, object_id)
        array = await run_in_threadpool(_mask_array, live.session, object_id)
    data = await run_in_threadpool(mask_nifti, array, live.session.image)
    filename = f"{Path(live.name).name.split('.')[0] or 'mask'}_seg.nii.gz"
    return Response(data, media_type="application/gzip", headers={"Content-Disposition": attachment(filename)})


def _save_target(ctx: ServerContext, live: LiveSession, filename: str | None) -> Path:
    if live.source is None:
        raise ConflictError("this image was uploaded, so it has no folder on the server: download the mask instead")
    dicom = looks_like_dicom_input(live.source)
    name = filename or f"{image_name(live.source)}_seg{'.dcm' if dicom else '.nii.gz'}"
    if "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ForbiddenError(f"'{name}' is not a plain file name")
    allowed = (*WRITE_SUFFIXES, ".seg.nrrd", *((".dcm",) if dicom else ()))
    kind = segmentation_suffix(name)
    if image_suffix(name) not in WRITE_SUFFIXES and kind is None:
        raise ServerError(f"cannot write '{name}': use one of {', '.join(allowed)}")
    if kind == ".dcm" and not dicom:
        raise ServerError(f"cannot write '{name}': a DICOM-SEG (.dcm) needs a DICOM series; this image is not one")
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
        checked_object(live.session, request.object_id)
        written = await run_in_threadpool(partial(live.session.save, target, request.object_id, dicom_source=live.dicom or live.source))
        voxels = int(np.count_nonzero(await run_in_threadpool(_mask_array, live.session, request.object_id)))
    return SaveReply(path=relative_to_root(ctx.config.data_root, written), voxels=voxels)
