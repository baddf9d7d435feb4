"""Reading a ``Session`` for replies: object summaries and the region an action changed.

``Session.state(oid)`` makes ``oid`` the active object, so every read here restores the
active object afterwards: looking must not change where the next click goes.
"""

from __future__ import annotations

import numpy as np

from sammed.inference import ObjectState, Session
from sammed.server.errors import ServerError
from sammed.server.schemas import Click, ObjectInfo, Region


def snapshot(session: Session) -> dict[int, ObjectState]:
    """The current state of every object that has prompts, and of the active one."""
    active = session.active_object
    ids = set(session.object_ids) | {active}
    states = {oid: session.state(oid) for oid in sorted(ids)}
    session.active_object = active
    return states


def changed_region(session: Session, before: dict[int, ObjectState], after: dict[int, ObjectState]) -> Region | None:
    """Bounding box of the windows of every object whose state changed (None if nothing did)."""
    lows, highs = [], []
    for oid in set(before) | set(after):
        old, new = before.get(oid, ObjectState()), after.get(oid, ObjectState())
        if old is new:
            continue
        for state in (old, new):
            if state.region is not None:
                lows.append([s.start for s in state.region])
                highs.append([s.stop for s in state.region])
    if not lows:
        return None
    low = np.min(lows, axis=0)
    high = np.max(highs, axis=0)
    return Region(offset=tuple(int(v) for v in low), shape=tuple(int(v) for v in high - low))


def object_voxels(state: ObjectState) -> int:
    return int(state.region_mask.sum()) if state.region_mask is not None else 0


def objects_info(session: Session) -> list[ObjectInfo]:
    geometry = session.image.geometry
    infos = []
    for oid, state in snapshot(session).items():
        clicks = [
            Click(object_id=oid, voxel=tuple(float(v) for v in geometry.world_to_index(world)), positive=bool(label))
            for world, label in state.clicks
        ]
        infos.append(
            ObjectInfo(
                object_id=oid,
                name=session.object_name(oid),
                voxels=object_voxels(state),
                clicks=clicks,
                has_box=state.box_corners is not None,
                iou=state.iou,
            )
        )
    return infos


def parse_region(offset: str | None, shape: str | None, image_shape: tuple[int, ...]) -> tuple[slice, ...]:
    """'i,j,k' offset and 'a,b,c' shape query values -> slices, clipped to the image."""
    if offset is None and shape is None:
        return tuple(slice(0, n) for n in image_shape)
    try:
        low = [int(v) for v in (offset or "0,0,0").split(",")]
        size = [int(v) for v in shape.split(",")] if shape else [n - o for n, o in zip(image_shape, low)]
    except ValueError:
        raise ServerError("offset and shape must be three integers each, like 10,20,5") from None
    if len(low) != 3 or len(size) != 3 or min(low) < 0 or min(size) <= 0:
        raise ServerError("offset needs three non-negative integers and shape three positive ones")
    if any(o + s > n for o, s, n in zip(low, size, image_shape)):
        raise ServerError(f"region offset {low} shape {size} exceeds the image of size {list(image_shape)}")
    return tuple(slice(o, o + s) for o, s in zip(low, size))
