"""One worker thread per model: model calls queue up there and never block the event loop.

A model is a single set of weights on one device; running two forward passes on it at once
would only contend for the same cores (or GPU) and make every request slower, so requests
from all sessions are serialised here while the event loop keeps answering.

The queue has two classes. A call on a session that has already run a model call (its window
is encoded and cached, so a refinement click runs only the prompt encoder and decoder) goes
ahead of calls on sessions that have not (a first click, which encodes a window: seconds on a
CPU). An encode in progress also gives way: before each block of the image encoder, the
thread runs the decoder-class calls of other sessions that were waiting when the block came,
so a refinement waits for at most one encoder block, never for another session's whole encode.
Encodes cannot starve: the decoder calls waiting when an encode is first passed over may go
before it, later ones run inside it, at its blocks. A session's own calls keep their order (the
server holds the session's lock across a call, and the queue never runs a session's call before
an earlier one of the same session); calls of one class run first come, first served. Nothing
about a call's computation changes, only when it runs: each runs as it would alone (a nested
call starts with autocast off and enters its session's own precision).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from sammed.inference import Session


@dataclass
class _Call:
    seq: int
    decoder: bool  # the owner's window is already encoded: decoder-only work, most likely
    owner: Session | None  # the session the call works on, None when it names none
    function: Callable[[], Any]
    future: Future = field(default_factory=Future)


class ModelWorker:
    """A model plus the single thread that is allowed to run it."""

    def __init__(self, model: nn.Module, name: str, random_weights: bool) -> None:
        self.model = model
        self.name = name
        self.random_weights = random_weights
        self._pending: list[_Call] = []  # in arrival order
        self._ready = threading.Condition()
        self._closed = False
        self._seq = itertools.count()
        self._issued = 0  # sequence number of the next call
        self._barrier: int | None = None  # decoder calls before it may still overtake the oldest encode
        self._encoded: weakref.WeakSet[Session] = weakref.WeakSet()  # sessions with a window encoded
        self._running: Session | None = None  # owner of the call on the thread (outermost)
        self._nested = False
        self._device_type = next((p.device.type for p in model.parameters()), "cpu") if isinstance(model, nn.Module) else "cpu"
        self._hooks = [
            block.register_forward_pre_hook(self._between_encoder_blocks)
            for block in getattr(getattr(model, "image_encoder", None), "blocks", ())
        ]
        self._thread = threading.Thread(target=self._serve, name=f"sammed-model-{name}", daemon=True)
        self._thread.start()

    async def run(self, function: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``function(*args, **kwargs)`` on the model thread and wait for it without blocking.

        The session it works on (a ``Session`` argument, an argument's ``.session``, or the
        ``Session`` a bound method belongs to) decides its class: decoder work once that
        session has run a model call, encoder work before.
        """
        owner = _session_in((function, *args, *kwargs.values()))
        with self._ready:
            if self._closed:
                raise RuntimeError(f"the model worker of {self.name} is closed")
            self._issued = next(self._seq) + 1
            call = _Call(self._issued - 1, owner is not None and owner in self._encoded, owner, partial(function, *args, **kwargs))
            self._pending.append(call)
            self._ready.notify()
        return await asyncio.wrap_future(call.future)

    def queued(self) -> tuple[int, int]:
        """(decoder-class, encoder-class) calls waiting, for monitoring and tests."""
        with self._ready:
            decoder = sum(call.decoder for call in self._pending)
            return decoder, len(self._pending) - decoder

    def close(self) -> None:
        with self._ready:
            self._closed = True
            for call in self._pending:
                call.future.cancel()
            self._pending.clear()
            self._ready.notify_all()
        for hook in self._hooks:
            hook.remove()

    # ------------------------------------------------------------------ the model thread
    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._closed and (index := self._pick()) is None:
                    self._ready.wait()
                if self._closed:
                    return
                call = self._pending.pop(index)
                self._running = call.owner
            try:
                self._execute(call)
            finally:
                self._running = None

    def _pick(self) -> int | None:
        """Index of the next call at the top level: a decoder-class call, unless an encoder-class
        call waits and every decoder call that was waiting when it was first passed over has run."""
        decoders, encoders = self._heads()
        if not encoders:
            return decoders[0] if decoders else None
        if self._barrier is None:
            self._barrier = self._issued
        for index in decoders:
            if self._pending[index].seq < self._barrier:
                return index
        self._barrier = None
        return encoders[0]

    def _heads(self, other_than: Session | None = None, before: int | None = None) -> tuple[list[int], list[int]]:
        """Indices of the calls that may run now, (decoder class, encoder class), in arrival order:
        each session's earliest waiting call, none of ``other_than``'s, none from ``before`` on."""
        seen: set[int] = set()
        decoders: list[int] = []
        encoders: list[int] = []
        for index, call in enumerate(self._pending):
            if call.owner is not None:
                if id(call.owner) in seen:
                    continue
                seen.add(id(call.owner))
            if (other_than is not None and call.owner is other_than) or (before is not None and call.seq >= before):
                continue
            (decoders if call.decoder else encoders).append(index)
        return decoders, encoders

    def _execute(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            result = call.function()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            call.future.set_exception(exc)
        else:
            if call.owner is not None:
                with self._ready:
                    self._encoded.add(call.owner)
            call.future.set_result(result)

    def _between_encoder_blocks(self, module: nn.Module, inputs: Any) -> None:
        """Forward pre-hook of each encoder block: let waiting decoder work of other sessions run."""
        if self._nested or self._running is None or threading.current_thread() is not self._thread:
            return  # a nested call, or a call naming no session (it could touch any): no nesting
        self._nested = True
        with self._ready:
            before = self._issued  # the calls waiting now; later ones wait for the next block
        try:
            while True:
                with self._ready:
                    decoders = self._heads(self._running, before)[0]
                    if not decoders or self._closed:
                        return
                    call = self._pending.pop(decoders[0])
                with torch.autocast(self._device_type, enabled=False):
                    self._execute(call)
        finally:
            self._nested = False


def _session_in(values) -> Session | None:
    for value in values:
        for candidate in (value, getattr(value, "session", None), getattr(value, "__self__", None)):
            if isinstance(candidate, Session):
                return candidate
    return None
