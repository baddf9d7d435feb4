"""The plugin's model side, free of Qt: a queue of operations drained by one worker at a time.

The widget turns clicks, boxes and button presses into ``Op`` objects and ``submit``s them. The
first submit starts a worker (``napari.qt.threading``) that runs ``drain``: it pops operations
in order and yields one ``Result`` each, until the queue is empty. A click made while the
encoder runs is appended to the queue and handled next, never dropped; the ``Session`` is only
ever touched from the draining thread, one operation at a time.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sammed.errors import SammedError
from sammed.io import Image

_keys = itertools.count(1)
_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def load_model(name: str, device: str):
    """A registered model with its registry weights (bundled, cached, else fetched once), kept for reuse."""
    with _MODELS_LOCK:
        key = (name, device)
        if key not in _MODELS:
            from sammed.models import build_model

            _MODELS[key] = build_model(name, pretrained=True).to(device)
        return _MODELS[key]


@dataclass(eq=False)
class Target:
    """One image to segment with one model setting; a new ``Target`` means a new session."""

    image: Image
    model_name: str
    device: str = "cpu"
    precision: str = "fp32"
    model: Any = None  # a model object given directly (scripting, tests); else loaded by name
    key: int = field(default_factory=lambda: next(_keys))


@dataclass(eq=False)
class Op:
    """One user action: 'open', 'point', 'box', 'undo', 'redo', 'new_object' or 'reset'."""

    kind: str
    target: Target
    args: tuple = ()
    display: Any = None  # what the widget shows for it while queued (a click's display position)


@dataclass
class Result:
    """The session after one operation, as plain data the main thread can show."""

    op: Op
    labels: np.ndarray | None = None  # label map in display order [k, j, i]; None: unchanged
    active_object: int = 1
    clicks: list = field(default_factory=list)  # (object id, voxel (i, j, k), positive)
    boxes: list = field(default_factory=list)  # (object id, low (i, j, k), high (i, j, k))
    can_undo: bool = False
    can_redo: bool = False
    message: str = ""
    error: str | None = None
    seconds: float = 0.0
    encoder_calls: int = 0


class Engine:
    """Serialises operations on one ``Session`` at a time (see the module docstring)."""

    def __init__(self, loader: Callable[[str, str], Any] = load_model) -> None:
        self._loader = loader
        self._ops: deque[Op] = deque()
        self._lock = threading.Lock()
        self._running = False
        self._current: Op | None = None  # the operation the worker is running
        self._session = None
        self._session_key: int | None = None

    # ---------------------------------------------------------------- queue (main thread)
    def submit(self, op: Op) -> bool:
        """Queue ``op``; True when no worker is draining, so the caller must start one."""
        with self._lock:
            self._ops.append(op)
            if self._running:
                return False
            self._running = True
            return True

    @property
    def queued(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    @property
    def pending(self) -> list[Op]:
        """The operation being run (if any) and the queued ones, in order."""
        with self._lock:
            return ([self._current] if self._current is not None else []) + list(self._ops)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._running

    def clear_queue(self) -> None:
        with self._lock:
            self._ops.clear()

    # ---------------------------------------------------------------- worker thread
    def drain(self):
        """Generator run by the worker: one ``Result`` per queued operation until none is left."""
        while True:
            with self._lock:
                if not self._ops:
                    self._running = False
                    return
                op = self._ops.popleft()
                self._current = op
            result = self.run(op)
            with self._lock:
                self._current = None
            yield result

    def run(self, op: Op) -> Result:
        start = time.perf_counter()
        try:
            result = self._run(op)
        except SammedError as exc:
            result = self._snapshot(op, labels=False)
            result.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - shown in the viewer; the worker must go on
            result = self._snapshot(op, labels=False)
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        result.seconds = time.perf_counter() - start
        return result

    def _open(self, target: Target):
        if self._session_key != target.key:
            from sammed.inference import Session

            self._session = None
            model = target.model if target.model is not None else self._loader(target.model_name, target.device)
            self._session = Session(model, target.image, device=target.device, precision=target.precision)
            self._session_key = target.key
        return self._session

    def _run(self, op: Op) -> Result:
        opened = self._session_key == op.target.key
        session = self._open(op.target)
        kind = op.kind
        if kind == "open":
            result = self._snapshot(op, labels=False)
            result.message = "ready" if opened else f"{op.target.model_name} loaded"
            return result
        if kind == "point":
            position, positive = op.args
            session.add_point(tuple(float(v) for v in position), positive=bool(positive))
            message = f"{'positive' if positive else 'negative'} click on object {session.active_object}"
        elif kind == "box":
            low, high = op.args
            session.add_box(tuple(float(v) for v in low), tuple(float(v) for v in high))
            message = f"box on object {session.active_object}"
        elif kind == "lasso":
            polygon, axis, index, positive = op.args
            session.add_lasso(polygon, axis=axis, index=index, positive=positive)
            message = f"{'positive' if positive else 'negative'} lasso on object {session.active_object}"
        elif kind == "undo":
            message = "undone" if session.undo() else "nothing to undo"
        elif kind == "redo":
            message = "redone" if session.redo() else "nothing to redo"
        elif kind == "new_object":
            message = f"new object {session.new_object()}: the next prompts go to it"
        elif kind == "reset":
            session.reset()
            message = "reset: all objects and history cleared"
        else:
            raise ValueError(f"unknown operation {kind!r}")
        result = self._snapshot(op, labels=kind != "new_object")
        result.message = message
        if kind in ("point", "box"):
            timings = session.timings
            result.encoder_calls = timings.encoder_calls
            mask = session.mask()
            result.message += f": {int(np.count_nonzero(mask))} voxels"
        return result

    def _snapshot(self, op: Op, labels: bool) -> Result:
        session = self._session if self._session_key == op.target.key else None
        result = Result(op=op)
        if session is None:
            return result
        geometry = session.image.geometry
        result.active_object = session.active_object
        result.can_undo, result.can_redo = session.can_undo, session.can_redo
        ids = sorted(set(session.object_ids) | {session.active_object})
        for oid in ids:
            state = session.state(oid)
            for world, label in state.clicks:
                result.clicks.append((oid, geometry.world_to_index(np.asarray(world), "LPS"), bool(label)))
            if state.box_corners is not None:
                corners = geometry.world_to_index(np.asarray(state.box_corners), "LPS")
                result.boxes.append((oid, corners.min(axis=0), corners.max(axis=0)))
        if labels:
            result.labels = session.label_map().T  # F-ordered [i, j, k] -> C-ordered [k, j, i] view
        return result
