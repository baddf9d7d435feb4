"""What every request handler reaches through ``request.app.state.sammed``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from sammed.server.config import ServerConfig
from sammed.server.sessions import SessionStore
from sammed.server.worker import ModelWorker


@dataclass
class ServerContext:
    config: ServerConfig
    worker: ModelWorker
    store: SessionStore


def context(request: Request) -> ServerContext:
    return request.app.state.sammed
