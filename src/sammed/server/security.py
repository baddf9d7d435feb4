"""Request guards: the access token, the upload size limit, and confinement to --data-root.

The guards are plain ASGI middleware so they run before any routing, body parsing or
multipart spooling: an oversize or unauthenticated request costs the server nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs

from sammed.server.errors import ForbiddenError, NotFoundError

TOKEN_COOKIE = "sammed_token"
# MONAI Label's login: a client asks whether auth is on, then trades a password (here: the
# token) for a bearer token. Both answer without the token; neither reveals anything else.
PUBLIC_ENDPOINTS = {("GET", "/auth/"), ("POST", "/auth/token")}


async def _send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _cookie(scope, name: str) -> str | None:
    raw = _header(scope, b"cookie") or ""
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class TokenGuard:
    """Every HTTP request must present the token: ``Authorization: Bearer T`` or the viewer's cookie.

    Opening ``/?token=T`` in a browser stores the token in an HttpOnly, SameSite=Strict cookie and
    redirects to ``/`` so the token leaves the address bar; other sites cannot ride that cookie.
    """

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = _header(scope, b"authorization") or ""
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if self._matches(bearer) or self._matches(_cookie(scope, TOKEN_COOKIE)):
            return await self.app(scope, receive, send)
        if (scope.get("method"), scope["path"]) in PUBLIC_ENDPOINTS:
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["path"] == "/" and self._matches((query.get("token") or [None])[0]):
            cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_json(
            send, 401, "this server needs its access token: header 'Authorization: Bearer TOKEN'", [(b"www-authenticate", b"Bearer")]
        )


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body larger than the server's upload limit of {self.limit / 2**20:.0f} MiB"
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, message, [(b"connection", b"close")])
        received = 0
        started = refused = False

        async def counting_receive():
            # Answer 413 at once: frameworks turn errors raised while reading a body into 400.
            nonlocal received, refused
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit and not refused:
                    refused = True
                    if not started:
                        await _send_json(send, 413, message, [(b"connection", b"close")])
                if refused:
                    raise _BodyTooLarge
            return event

        async def tracking_send(event):
            nonlocal started
            if refused:
                return  # the 413 has been sent; drop the app's own reply
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            pass


def resolve_in_root(root: Path | None, relative: str, *, must_exist: bool = True) -> Path:
    """``root / relative`` with every symlink resolved, refused unless it stays inside ``root``."""
    if root is None:
        raise NotFoundError("this server has no --data-root: upload the image instead")
    if not relative or "\x00" in relative:
        raise ForbiddenError("give a path relative to the data root")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (os.name == "nt" and ":" in relative):
        raise ForbiddenError(f"'{relative}' is not a path inside the data root (absolute paths and '..' are refused)")
    base = root.resolve()
    try:
        candidate = (base / pure).resolve(strict=False)
        exists = candidate.exists()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long for the file system
        raise NotFoundError(f"'{relative}' cannot be opened in the data root ({getattr(exc, 'strerror', None) or 'symbolic link loop'})") from None
    if not candidate.is_relative_to(base):
        raise ForbiddenError(f"'{relative}' leads outside the data root (through a symbolic link)")
    if must_exist and not exists:
        raise NotFoundError(f"'{relative}' does not exist in the data root")
    return candidate


def relative_to_root(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()
