"""Live interactive sessions: creation, lookup with the owner's key, idle expiry.

Each session gets a public id (in URLs) and a secret key that every request on it must send
(``X-Session-Key``), like nnInteractive's lease token: knowing another user's session id is not
enough to read their image or change their mask. A per-session lock keeps one user's clicks in
order and stops a mask read from seeing an object half-updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sammed.inference import Session
from sammed.server.errors import CapacityError, ForbiddenError, NotFoundError


@dataclass
class LiveSession:
    """A ``Session`` as the server holds it. ``key`` None means the id alone grants access (MONAI Label)."""

    id: str
    key: str | None
    session: Session
    source: Path | None  # resolved path inside the data root, None for uploads
    name: str
    expiry_s: float
    charge: int = 0  # bytes counted against the memory budget (see config.session_charge)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    dicom: list | None = None  # headers of the source DICOM series (for DICOM-SEG), None otherwise
    tracks: dict = field(default_factory=dict)  # MONAI Label: label name -> the points applied so far

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def expired(self, now: float) -> bool:
        return not self.lock.locked() and now - self.last_used > self.expiry_s


class SessionStore:
    """At most ``max_sessions`` sessions, charged at most ``memory_budget`` bytes together.

    Idle sessions are closed after their expiry. Images being opened hold their charge from
    the moment their header is read (``admission``), so concurrent uploads cannot overshoot
    the budget together. Called from the event loop only, so no lock is needed.
    """

    def __init__(self, max_sessions: int, default_expiry_s: float, memory_budget: int = 2**63) -> None:
        self.max_sessions = max_sessions
        self.default_expiry_s = default_expiry_s
        self.memory_budget = memory_budget
        self._sessions: dict[str, LiveSession] = {}
        self._opening = 0  # bytes held by images being read, not yet sessions

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def charged(self) -> int:
        """Bytes charged by open sessions and by images being opened."""
        return self._opening + sum(live.charge for live in self._sessions.values())

    @contextlib.contextmanager
    def admission(self, charge: int) -> Iterator[None]:
        """Hold ``charge`` bytes of the budget while an image is read (503 when it does not fit)."""
        self.expire()
        if self.charged + charge > self.memory_budget:
            raise CapacityError(
                f"the server's memory budget is full ({self.charged / 2**20:.0f} of {self.memory_budget / 2**20:.0f} MiB "
                f"charged; this image needs {charge / 2**20:.0f} MiB): close a session or wait for idle ones to expire"
            )
        self._opening += charge
        try:
            yield
        finally:
            self._opening -= charge

    def reserve(self) -> None:
        """Refuse early (before reading an upload) when the server is full."""
        self.expire()
        if len(self._sessions) >= self.max_sessions:
            raise CapacityError(
                f"the server already holds {self.max_sessions} sessions: close one (DELETE) or wait for idle ones to expire"
            )

    def add(
        self,
        session: Session,
        source: Path | None,
        name: str,
        with_key: bool = True,
        expiry_s: float | None = None,
        charge: int = 0,
    ) -> LiveSession:
        self.reserve()
        live = LiveSession(
            id=secrets.token_urlsafe(16),
            key=secrets.token_urlsafe(24) if with_key else None,
            session=session,
            source=source,
            name=name,
            expiry_s=min(expiry_s or self.default_expiry_s, self.default_expiry_s),
            charge=charge,
        )
        self._sessions[live.id] = live
        return live

    def get(self, session_id: str, key: str | None) -> LiveSession:
        live = self._sessions.get(session_id)
        if live is None or live.expired(time.monotonic()):
            self._sessions.pop(session_id, None)
            raise NotFoundError(f"no session '{session_id}' (closed, expired, or never created)")
        if live.key is not None and (key is None or not secrets.compare_digest(key.encode(), live.key.encode())):
            raise ForbiddenError("this session belongs to another client: send its X-Session-Key")
        live.touch()
        return live

    def close(self, session_id: str, key: str | None) -> None:
        self.get(session_id, key)
        self._sessions.pop(session_id, None)

    def expire(self) -> int:
        """Drop sessions idle for longer than their expiry; returns how many were dropped."""
        now = time.monotonic()
        stale = [sid for sid, live in self._sessions.items() if live.expired(now)]
        for sid in stale:
            del self._sessions[sid]
        return len(stale)

    def clear(self) -> None:
        self._sessions.clear()
