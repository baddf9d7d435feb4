"""The MONAI Label protocol as 3D Slicer's and OHIF's MONAI Label clients speak it.

Slicer's MONAILabel module (through ``monailabel.client.MONAILabelClient``) checks ``/auth/``,
reads ``/info/``, uploads the volume it shows with ``PUT /session/`` and sends every click so far
to ``POST /infer/{model}`` as ``foreground`` / ``background`` voxel lists; with a datastore it
asks ``/activelearning/{strategy}`` for the next image, downloads it from ``/datastore/image`` and
submits finished labels with ``PUT /datastore/label``; "Submit Label" for a volume loaded in Slicer
first uploads it with ``PUT /datastore/?image=<node name>``. The served model is announced as a
``deepgrow`` model (point-driven). Because each call repeats all the points, the points a label
already has are remembered per session and only the new ones run the model, so a click costs
one decoder pass on the cached embedding with the previous logits fed back, as the official
iterative protocol does; ``reset_state`` (or a changed point list) starts the label over.

Errors are MONAI Label's: a JSON body ``{"detail": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import SimpleITK as sitk
from fastapi import APIRouter, Body, Depends, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from sammed import __version__
from sammed.errors import SammedError
from sammed.io import Image
from sammed.io.dicom_seg import looks_like_dicom_input, series_datasets, write_dicom_seg
from sammed.io.masks import read_mask
from sammed.io.readers import image_suffix, to_sitk
from sammed.io.slicer_seg import write_slicer_seg
from sammed.models.registry import spec_of
from sammed.server.context import ServerContext, context
from sammed.server.datastore import (
    FINAL,
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    DataImage,
    Datastore,
    check_tag,
    place_file,
    place_new,
    upload_stem,
    write_label_info,
)
from sammed.server.errors import CapacityError, ConflictError, ForbiddenError, NotFoundError, ServerError
from sammed.server.opening import admitted_image, new_session
from sammed.server.schemas import ErrorReply
from sammed.server.security import relative_to_root, resolve_in_root
from sammed.server.sessions import LiveSession
from sammed.server.volumes import DETACHED_HEADER_SUFFIXES, image_nifti, refuse_detached_data, staged_uploads

FILES = {
    "application/gzip": {},
    "application/octet-stream": {},
    "application/dicom": {},
}
router = APIRouter(
    tags=["MONAI Label"], responses={code: {"model": ErrorReply} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503)}
)
Ctx = Annotated[ServerContext, Depends(context)]
LABEL = "foreground"
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")
RESULT_DTYPES = ("uint8", "uint16")
STRATEGIES = {
    "random": "a random image without a final label",
    "first": "the first image (by id) without a final label",
}


def media_type(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".gz"):
        return "application/gzip"
    if lower.endswith(".dcm"):
        return "application/dicom"
    return "application/octet-stream"


# ------------------------------------------------------------------------------ auth, info, train


@router.get("/auth/", summary="is authentication enabled (MONAI Label): yes when the server runs with --token")
def monai_auth(ctx: Ctx) -> dict:
    enabled = ctx.config.token is not None
    return {"enabled": enabled, "client_id": "sammed" if enabled else None, "realm": None}


@router.post(
    "/auth/token",
    summary="exchange the server's --token (typed as the password) for a bearer token, as Slicer's login dialog does",
)
def monai_auth_token(
    ctx: Ctx,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> dict:
    token = ctx.config.token
    if token is None:
        return {"access_token": None, "token_type": None}
    if not secrets.compare_digest(password.encode(), token.encode()):
        raise _Unauthorized("wrong password: type this server's --token as the password (any user name)")
    return {"access_token": token, "token_type": "Bearer"}


class _Unauthorized(ServerError):
    status = 401


@router.get("/auth/token/valid", summary="is the bearer token valid (the token guard has already checked it)")
def monai_auth_valid(ctx: Ctx) -> dict:
    return {"username": "sammed", "email": None, "name": "sammed", "roles": ["monailabel-user", "monailabel-annotator"]}


def _datastore(ctx: ServerContext) -> Datastore | None:
    return Datastore(ctx.config.data_root) if ctx.config.data_root is not None else None


@router.get("/info/", summary="MONAI Label app description: the served model as a deepgrow model")
def monai_info(ctx: Ctx) -> dict:
    spec = spec_of(ctx.worker.model)
    description = spec.description if spec else ctx.worker.name
    if ctx.worker.random_weights:
        description += " [UNTRAINED RANDOM WEIGHTS: results are meaningless]"
    store = _datastore(ctx)
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
        "strategies": {name: {"description": text} for name, text in STRATEGIES.items()},
        "scoring": {},
        "train_stats": {},
        "datastore": store.status() if store else {"total": 0, "completed": 0, "label_tags": {}},
        "config": {},
    }


@router.get("/train/", summary="training status: this server does not train (404, as MONAI Label answers with no task)")
def monai_train_status(all: bool = False, check_if_running: bool = False) -> dict:
    raise NotFoundError("No Train Tasks are currently Running" if check_if_running else "No Train Tasks Found")


# ------------------------------------------------------------------------------ sessions


def _session_reply(live: LiveSession) -> dict:
    image = live.session.image
    return {
        "session_id": live.id,
        "session_info": {
            "name": live.name,
            "image": live.id,
            "shape": list(image.shape),
            "dicom": live.dicom is not None,
            "expiry": live.expiry_s,
            "last_access_ts": int(time.time()),
        },
    }


def _dicom_headers(target: Path) -> list | None:
    """The series' headers when ``target`` is DICOM (kept for DICOM-SEG replies), else None."""
    if not looks_like_dicom_input(target):
        return None
    try:
        return series_datasets(target)
    except SammedError:
        return None  # readable as a volume but not referencable: no DICOM-SEG for it


@router.put("/session/", summary="upload an image (one file, or the files of one DICOM series) for later /infer calls")
async def monai_put_session(
    ctx: Ctx,
    files: Annotated[list[UploadFile], File(description="image file(s)")],
    uncompress: Annotated[bool, Form()] = False,
    expiry: Annotated[int, Form(ge=1, description="seconds of inactivity before the session closes")] = 3600,
    client_id: Annotated[str | None, Form()] = None,
) -> dict:
    if uncompress:
        raise ServerError("uncompress=true is not supported: upload the image file(s) themselves")
    ctx.store.reserve()
    name = files[0].filename or "upload"
    async with staged_uploads(files) as target, admitted_image(ctx, target, name) as (image, charge):
        session = await new_session(ctx, image)
        dicom = await run_in_threadpool(_dicom_headers, target)
        live = ctx.store.add(session, None, name, with_key=False, expiry_s=expiry, charge=charge)
        live.dicom = dicom
    return _session_reply(live)


def _download_name(name: str, suffix: str) -> str:
    """A client's file name reduced to a header-safe stem plus ``suffix``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base[: len(base) - len(image_suffix(base))] if image_suffix(base) else base
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image") + suffix


@router.get(
    "/session/{session_id}",
    summary="describe an uploaded session; image=true downloads its image (as NIfTI)",
    response_model=None,
    responses={200: {"content": {"application/json": {}, "application/gzip": {}}}},
)
async def monai_get_session(ctx: Ctx, session_id: str, update_ts: bool = False, image: bool = False) -> Response | dict:
    live = ctx.store.get(session_id, None)  # also renews its expiry, as update_ts asks
    if not image:
        return _session_reply(live)
    data = await run_in_threadpool(image_nifti, live.session.image)
    filename = _download_name(live.name, ".nii.gz")
    return Response(data, media_type="application/gzip", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.delete("/session/{session_id}", summary="close an uploaded session")
def monai_delete_session(ctx: Ctx, session_id: str) -> dict:
    reply = _session_reply(ctx.store.get(session_id, None))
    ctx.store.close(session_id, None)
    return reply


# ------------------------------------------------------------------------------ infer: parameters


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


@dataclass(frozen=True)
class InferRequest:
    """What one /infer call asks for, checked before any model work."""

    label: str
    foreground: list
    background: list
    roi: tuple[tuple[int, int], ...] | None
    reset: bool
    client_id: str
    extension: str
    dtype: str
    compress: bool


def json_object(raw: str | None) -> dict:
    """A ``params`` form field as a JSON object, or a one-line 400."""
    try:
        params = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise ServerError(f"params is not valid JSON ({exc.msg})") from None
    if not isinstance(params, dict):
        raise ServerError("params must be a JSON object")
    return params


def _parse_params(raw: str) -> InferRequest:
    params = json_object(raw)
    foreground, background = _voxel_list(params, "foreground"), _voxel_list(params, "background")
    if not foreground:
        raise ServerError("params.foreground needs at least one [x, y, z] click: this model is prompt-driven")
    label = params.get("label") or LABEL
    if not isinstance(label, str) or len(label) > 64 or any(ord(c) < 32 for c in label):
        raise ServerError("params.label must be a segment name (one line, at most 64 characters)")
    roi = params.get("roi") or None
    if roi is not None:
        if not isinstance(roi, list) or len(roi) != 6 or not all(_is_number(v) for v in roi):
            raise ServerError("params.roi must be [i0, i1, j0, j1, k0, k1] (six voxel indices, as Slicer sends it)")
        roi = tuple((int(round(min(a, b))), int(round(max(a, b)))) for a, b in zip(roi[0::2], roi[1::2]))
    extension = params.get("result_extension") or ".nii.gz"
    if extension not in RESULT_EXTENSIONS:
        raise ServerError(f"params.result_extension must be one of {', '.join(RESULT_EXTENSIONS)}")
    dtype = params.get("result_dtype") or "uint8"
    if dtype not in RESULT_DTYPES:
        raise ServerError(f"params.result_dtype must be one of {', '.join(RESULT_DTYPES)}")
    for key in ("reset_state", "result_compress"):
        if params.get(key) is not None and not isinstance(params.get(key), bool):
            raise ServerError(f"params.{key} must be true or false")
    client = params.get("client_id")
    return InferRequest(
        label=label,
        foreground=foreground,
        background=background,
        roi=roi,
        reset=bool(params.get("reset_state")),
        client_id=client if isinstance(client, str) else "",
        extension=extension,
        dtype=dtype,
        compress=bool(params.get("result_compress", False)),
    )


def _check_inside(request: InferRequest, shape: tuple[int, ...]) -> None:
    for kind, points in (("foreground", request.foreground), ("background", request.background)):
        for point in points:
            if any(not -0.5 <= v <= n - 0.5 for v, n in zip(point, shape)):
                raise ServerError(
                    f"{kind} point {list(point)} is outside the image of {list(shape)} voxels (IJK indices from 0)"
                )
    if request.roi is not None and any(hi < 0 or lo > n - 1 for (lo, hi), n in zip(request.roi, shape)):
        raise ServerError(f"params.roi {[v for pair in request.roi for v in pair]} lies outside the image of {list(shape)} voxels")


# ------------------------------------------------------------------------------ infer: refinement


@dataclass
class Track:
    """One label's object in a session and the points it has received (in the client's order)."""

    object_id: int
    foreground: list = field(default_factory=list)
    background: list = field(default_factory=list)


def _refine(live: LiveSession, request: InferRequest) -> np.ndarray:
    """Bring the label's object up to the points in ``request``; returns its mask (model thread).

    The client repeats every point at each call. If the points the object has are where the new
    lists start, only the new points are added (cached embedding, previous logits fed back);
    otherwise (a point moved or removed, ``reset_state``) the object starts over.
    """
    session = live.session
    track = live.tracks.get(request.label)
    if track is None:
        if not live.tracks and not session.object_ids:
            object_id = 1
            session.set_name(1, request.label)
        else:
            object_id = session.new_object(name=request.label)
        track = live.tracks[request.label] = Track(object_id)
    known_fg, known_bg = len(track.foreground), len(track.background)
    incremental = (
        not request.reset
        and (known_fg or known_bg)
        and request.foreground[:known_fg] == track.foreground
        and request.background[:known_bg] == track.background
    )
    if incremental:
        new_fg, new_bg = request.foreground[known_fg:], request.background[known_bg:]
    else:
        if not session.state(track.object_id).is_empty:
            session.reset(track.object_id)
        track.foreground, track.background = [], []
        new_fg, new_bg = request.foreground, request.background
    try:
        for point in new_fg:
            session.add_point(point, positive=True, object_id=track.object_id)
            track.foreground.append(point)
        for point in new_bg:
            session.add_point(point, positive=False, object_id=track.object_id)
            track.background.append(point)
    except BaseException:
        session.reset(track.object_id)  # never leave an object half-way between two requests
        track.foreground, track.background = [], []
        raise
    mask = session.mask(track.object_id)
    if request.roi is not None:
        inside = np.zeros_like(mask)
        inside[tuple(slice(max(lo, 0), hi + 1) for lo, hi in request.roi)] = True
        mask &= inside
    return mask


def _encode(mask: np.ndarray, reference: Image, request: InferRequest, dicom: list | None, dicom_seg: bool, algorithm) -> tuple[bytes, str]:
    """The label file a client asked for, as (bytes, file name)."""
    extension = ".dcm" if dicom_seg else request.extension
    name = f"sammed_{secrets.token_hex(4)}{extension}"
    with tempfile.TemporaryDirectory(prefix="sammed-reply-") as tmp:
        target = Path(tmp) / name
        if dicom_seg:
            write_dicom_seg(mask.astype(np.uint8), reference, dicom, target, names={1: request.label}, algorithm=algorithm)
        elif extension == ".seg.nrrd":
            write_slicer_seg(mask.astype(np.uint8), reference, target, names={1: request.label})
        else:
            labels = Image(np.asfortranarray(mask.astype(request.dtype)), reference.geometry)
            compress = extension == ".nii.gz" or (request.compress and extension == ".nrrd")
            sitk.WriteImage(to_sitk(labels), str(target), useCompression=compress)
        return target.read_bytes(), name


def _multipart(params: dict, payload: bytes, filename: str) -> Response:
    boundary = secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'.encode()
        + json.dumps(params).encode()
        + b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: {media_type(filename)}\r\n\r\n".encode()
        + payload
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return Response(b"".join(parts), media_type=f"multipart/form-data; boundary={boundary}")


async def _image_session(ctx: ServerContext, image_id: str, client_id: str) -> LiveSession:
    """The session that /infer?image=ID calls of one client share (opened on first use)."""
    root = ctx.config.data_root
    store = _datastore(ctx)
    if store is None:
        raise NotFoundError("this server has no --data-root: upload the image (PUT /session/) instead")
    try:
        entry = store.image(image_id)
        target, shown = entry.path, entry.id
    except NotFoundError:
        target = resolve_in_root(root, image_id)  # also a plain path inside the root, as before
        shown = relative_to_root(root, target)
    key = (shown, client_id)
    known = ctx.image_sessions.get(key)
    if known is not None:
        with contextlib.suppress(NotFoundError):
            return ctx.store.get(known, None)
    ctx.store.reserve()
    async with admitted_image(ctx, target, shown) as (image, charge):
        session = await new_session(ctx, image)
        dicom = await run_in_threadpool(_dicom_headers, target)
        live = ctx.store.add(session, target, shown, with_key=False, charge=charge)
        live.dicom = dicom
    ctx.image_sessions[key] = live.id
    return live


@router.post(
    "/infer/{model}",
    summary="segment from foreground/background voxel clicks (all so far at each call); multipart params + label file by default",
    response_class=Response,
    responses={
        200: {
            "content": {**FILES, "application/json": {}, "multipart/form-data": {}},
            "description": "output=all: multipart 'params' (JSON) + 'image' (the label file); image: the file; json: the params",
        }
    },
)
async def monai_infer(
    ctx: Ctx,
    model: str,
    image: Annotated[str, Query(description="datastore image id (or path in --data-root); ignored with session_id")] = "",
    session_id: Annotated[str, Query(description="id from PUT /session/")] = "",
    output: Annotated[Literal["image", "json", "all", "dicom_seg"] | None, Query()] = None,
    params: Annotated[str, Form(description='JSON, e.g. {"foreground": [[i, j, k]], "background": [], "label": "liver"}')] = "{}",
    file: Annotated[UploadFile | None, File(description="the image itself, instead of image= or session_id=")] = None,
    label: Annotated[UploadFile | None, File(description="accepted for compatibility; deepgrow models do not read it")] = None,
) -> Response:
    if model != ctx.worker.name:
        raise NotFoundError(f"unknown model '{model}': this server serves '{ctx.worker.name}'")
    request = _parse_params(params)
    output = output or "all"
    start = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        if session_id:
            live = ctx.store.get(session_id, None)
        elif file is not None:
            target = await stack.enter_async_context(staged_uploads([file]))
            shown = file.filename or "upload"
            reference, charge = await stack.enter_async_context(admitted_image(ctx, target, shown))
            live = LiveSession(id="", key=None, session=await new_session(ctx, reference), source=None, name=shown, expiry_s=0)
            live.dicom = await run_in_threadpool(_dicom_headers, target)
        elif image:
            live = await _image_session(ctx, image, request.client_id)
        else:
            raise ServerError("give image=<datastore image id>, session_id=<from PUT /session/> or upload a file")
        reference = live.session.image
        _check_inside(request, reference.shape)
        if output == "dicom_seg" and live.dicom is None:
            raise ServerError("output=dicom_seg needs a DICOM input: this image did not come from a DICOM series")
        async with live.lock:
            mask = await ctx.worker.run(_refine, live, request)
        live.touch()
        result = {
            "label_names": {request.label: 1},
            "latencies": {"infer": round(time.perf_counter() - start, 4)},
            "voxels": int(mask.sum()),
        }
        if output == "json":
            return Response(json.dumps(result), media_type="application/json")
        payload, filename = await run_in_threadpool(
            _encode, mask, reference, request, live.dicom, output == "dicom_seg", live.session.algorithm
        )
    if output == "all":
        return _multipart(result, payload, filename)
    return Response(
        payload,
        media_type=media_type(filename),
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Params": json.dumps(result)},
    )


# ------------------------------------------------------------------------------ datastore


def _store_or_404(ctx: ServerContext) -> Datastore:
    store = _datastore(ctx)
    if store is None:
        raise NotFoundError("this server has no --data-root, so no datastore: start it with --data-root FOLDER")
    return store


@router.get("/datastore/", summary="the datastore: stats (default) or every image with its labels (output=all)")
def monai_datastore(ctx: Ctx, output: Literal["stats", "all", "train"] | None = None) -> Response:
    store = _datastore(ctx)
    if output == "all":
        body = store.describe() if store else {"name": "", "description": "no --data-root", "objects": {}}
    elif output == "train":
        body = [
            {"image": image.relative, "label": relative_to_root(store.root, image.labels[FINAL])}
            for image in (store.scan().values() if store else [])
            if FINAL in image.labels
        ]
    else:
        body = store.status() if store else {"total": 0, "completed": 0, "label_tags": {}}
    return Response(json.dumps(body), media_type="application/json")


@router.get(
    "/datastore/image",
    summary="download an image of the datastore (a DICOM series comes as NIfTI)",
    response_class=Response,
    responses={200: {"content": FILES}},
)
async def monai_datastore_image(ctx: Ctx, image: str) -> Response:
    entry = _store_or_404(ctx).image(image)
    if not entry.is_series:
        return FileResponse(entry.path, media_type=media_type(entry.path.name), filename=entry.download_name)
    async with admitted_image(ctx, entry.path, entry.id) as (volume, _):
        data = await run_in_threadpool(image_nifti, volume)
    return Response(data, media_type="application/gzip", headers={"Content-Disposition": f'attachment; filename="{entry.download_name}"'})


def _checksum_matches(path: Path, check_sum: str) -> bool:
    """MONAI Label's ``check_sum``: ``ALGO:digest`` or a bare SHA-256 digest of the image file."""
    algo, _, digest = check_sum.rpartition(":")
    algo = (algo or "sha256").lower()
    if algo not in hashlib.algorithms_guaranteed or algo.startswith("shake"):
        raise ServerError(f"check_sum algorithm '{algo}' is not known: use SHA256:<hex digest>")
    if not path.is_file():
        return False  # a DICOM series folder has no single file to compare
    hasher = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    return secrets.compare_digest(hasher.hexdigest(), digest.lower())


@router.head("/datastore/image", summary="does the image exist (and match check_sum): 200 or 404, no body")
async def monai_check_image(ctx: Ctx, image: str, check_sum: str | None = None) -> dict:
    entry = _store_or_404(ctx).image(image)
    if check_sum and not await run_in_threadpool(_checksum_matches, entry.path, check_sum):
        raise NotFoundError("Image NOT Found (checksum failed)")
    return {}


@router.head("/datastore/label", summary="does the image have a label for the tag: 200 or 404, no body")
def monai_check_label(ctx: Ctx, image: str, tag: str = FINAL) -> dict:
    entry = _store_or_404(ctx).image(image)
    if check_tag(tag) not in entry.labels:
        raise NotFoundError(f"Label NOT Found: image '{entry.id}' has no label with tag '{tag}'")
    return {}


def _upload_suffix(filename: str) -> str:
    """The format of an image to keep, from its name: only self-contained volume files."""
    lower = filename.lower()
    if lower.endswith(".seg.nrrd"):
        return ".nrrd"  # Slicer names every upload with its file extension, a volume too; kept as .nrrd
    if image_suffix(lower) in DETACHED_HEADER_SUFFIXES:
        raise ServerError(f"'{filename}' is a header whose voxels live in another file: upload a self-contained image")
    return _known_suffix(filename, IMAGE_SUFFIXES, "an image file the datastore keeps")


def _refuse_segmentation(staged: Path, shown: str) -> None:
    """A Slicer segmentation (segment fields in its NRRD header) is a label, not an image to keep."""
    with open(staged, "rb") as fh:
        head = fh.read(1 << 16)
    if head.startswith(b"NRRD") and b"Segment0_" in head.split(b"\n\n", 1)[0]:
        raise ServerError(f"'{shown}' is a segmentation, not an image: upload the volume itself")


async def _same_image(ctx: ServerContext, existing: Path, staged: Path, upload: Image, root: Path) -> bool:
    """Does ``existing`` hold the uploaded image: the same bytes, or the same grid and voxel values?"""
    real = Path(os.path.realpath(existing))
    if not real.is_file() or not real.is_relative_to(root):
        return False
    if await run_in_threadpool(filecmp.cmp, real, staged, False):
        return True
    try:
        async with admitted_image(ctx, real, real.name) as (image, _):
            return image.geometry.same_grid(upload.geometry) and bool(np.array_equal(image.array, upload.array))
    except CapacityError:
        raise
    except ServerError:
        return False  # unreadable or over the limits: not known to be the same, so not replaced


@router.put("/datastore/", include_in_schema=False)  # the older path Slicer's client calls, unlisted as in MONAI Label
@router.put(
    "/datastore/image",
    summary="upload an image into the datastore (also PUT /datastore/?image=ID, as Slicer's Submit Label calls it); never replaces another",
)
async def monai_add_image(
    ctx: Ctx,
    file: Annotated[UploadFile, File(description="the image (.nii.gz, .nii, .nrrd, .mha)")],
    image: Annotated[str, Query(description="the id to keep it under (Slicer: the volume's name); default: the file name")] = "",
    params: Annotated[str, Form(description="JSON; accepted for compatibility")] = "{}",
) -> dict:
    store = _store_or_404(ctx)
    json_object(params)
    shown = file.filename or "upload.nii.gz"
    suffix = _upload_suffix(shown)
    image_id = image or _download_name(shown, "")
    stem = upload_stem(image_id)
    file.filename = f"upload{suffix}"  # staged under the format kept, never the client's name
    async with staged_uploads([file]) as staged:
        await run_in_threadpool(_refuse_segmentation, staged, shown)
        async with admitted_image(ctx, staged, shown) as (volume, _):
            return await _keep_upload(ctx, store, staged, volume, image_id, stem, suffix)


async def _keep_upload(ctx: ServerContext, store: Datastore, staged: Path, volume: Image, image_id: str, stem: str, suffix: str) -> dict:
    """Place the checked upload as ``<stem><suffix>``, or find it already there; 409 for a different image."""
    for _attempt in range(2):
        clashes = await run_in_threadpool(store.upload_clashes, image_id, stem)
        if not clashes:
            if await run_in_threadpool(place_new, staged, store.root / f"{stem}{suffix}"):
                return {"image": stem}
            continue  # created meanwhile by another request: compare with it
        if len(clashes) == 1 and await _same_image(ctx, clashes[0], staged, volume, store.root):
            return {"image": _id_of(store, clashes[0])}
        break
    raise ConflictError(f"the datastore already has a different image '{image_id}': rename the volume and submit again")


def _id_of(store: Datastore, path: Path) -> str:
    """The datastore id of an image file found by path."""
    real = Path(os.path.realpath(path))
    return next((entry.id for entry in store.scan().values() if entry.path == real), real.name)


@router.get(
    "/datastore/label",
    summary="download an image's label for a tag",
    response_class=Response,
    responses={200: {"content": FILES}},
)
def monai_datastore_label(ctx: Ctx, label: str, tag: str = FINAL) -> Response:
    entry = _store_or_404(ctx).image(label)
    path = entry.labels.get(check_tag(tag))
    if path is None:
        raise NotFoundError(f"Label NOT Found: image '{entry.id}' has no label with tag '{tag}'")
    return FileResponse(path, media_type=media_type(path.name), filename=path.name)


def _known_suffix(filename: str, suffixes: tuple[str, ...], what: str) -> str:
    """The first of ``suffixes`` (longest first) that ``filename`` ends with, or a 400 naming them."""
    lower = filename.lower()
    suffix = next((s for s in suffixes if lower.endswith(s)), None)
    if suffix is None:
        raise ServerError(f"'{filename}' is not {what}: send one of {', '.join(suffixes)}")
    return suffix


def _spool(upload: UploadFile, target: Path) -> None:
    with open(target, "wb") as fh:
        shutil.copyfileobj(upload.file, fh, 1 << 20)


def _checked_label(staged: Path, entry: DataImage, reference: Image, shown: str) -> None:
    """The submitted label must be a label map on the image's grid (read as the server reads uploads)."""
    refuse_detached_data(staged, shown)
    try:
        read_mask(staged, reference, external_data="refuse")
    except SammedError as exc:
        raise ServerError(str(exc).replace(str(staged), shown)) from None


@router.put("/datastore/label", summary="save a label for an image (beside it, atomically, one file per tag)")
async def monai_save_label(
    ctx: Ctx,
    image: str,
    label: Annotated[UploadFile, File(description="the label file (.nii.gz, .nii, .nrrd, .seg.nrrd, .mha, .dcm)")],
    tag: str = FINAL,
    params: Annotated[str, Form(description='JSON, e.g. {"label_info": [{"name": "liver", "idx": 1}]}')] = "{}",
) -> dict:
    store = _store_or_404(ctx)
    entry = store.image(image)
    tag = check_tag(tag)
    extra = json_object(params)
    info = extra.get("label_info")
    if info is not None and (not isinstance(info, list) or not all(isinstance(item, dict) for item in info)):
        raise ServerError('params.label_info must be a list of {"name": ..., "idx": ...} objects')
    shown = label.filename or "label"
    suffix = _known_suffix(shown, LABEL_SUFFIXES, "a label file")
    target = entry.label_path(tag, suffix)
    link = entry.path.parent / target.name
    if link.is_symlink() or target.is_dir():
        raise ForbiddenError(f"'{target.name}' beside the image is a link or a folder: not written")
    if not target.resolve().is_relative_to(store.root) or target.resolve() == entry.path:
        raise ForbiddenError("refusing to write a label outside the data root or over the image")
    with tempfile.TemporaryDirectory(prefix="sammed-label-") as tmp:
        staged = Path(tmp) / f"label{suffix}"  # the client's name never touches the file system
        await run_in_threadpool(_spool, label, staged)
        async with admitted_image(ctx, entry.path, entry.id) as (reference, _):
            await run_in_threadpool(_checked_label, staged, entry, reference, shown)
        await run_in_threadpool(place_file, staged, target)
    await run_in_threadpool(write_label_info, target, extra)
    return {"image": entry.id, "label": entry.id, "tag": tag, "file": relative_to_root(store.root, target)}


@router.post("/activelearning/{strategy}", summary="the next image to label: one without a final label (random or first)")
def monai_next_sample(ctx: Ctx, strategy: str, params: Annotated[dict | None, Body()] = None) -> dict:
    if strategy not in STRATEGIES:
        raise NotFoundError(f"unknown strategy '{strategy}': this server has {', '.join(STRATEGIES)}")
    store = _datastore(ctx)
    candidates = store.unlabeled() if store else []
    if not candidates:
        return {}
    chosen = candidates[0] if strategy == "first" else random.choice(candidates)
    return {
        "id": chosen.id,
        "name": chosen.download_name,
        "ts": int(chosen.path.stat().st_mtime),
        "weight": 1,
        "strategy": {strategy: {"ts": int(time.time()), "client_id": (params or {}).get("client_id")}},
    }
