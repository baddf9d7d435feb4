"""What every request handler reaches through ``request.app.state.sammed``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from sammed.server.config import ServerConfig
from sammed.server.sessions import SessionStore
from sammed.server.worker import ModelWorker


@dataclass
class ServerContext:
    config: ServerConfig
    worker: ModelWorker
    store: SessionStore
    # MONAI Label /infer?image=ID without a session: (image id, client id) -> session id, so
    # repeated clicks on a datastore image refine one session instead of starting over
    image_sessions: dict[tuple[str, str], str] = field(default_factory=dict)


def context(request: Request) -> ServerContext:
    return request.app.state.sammed
