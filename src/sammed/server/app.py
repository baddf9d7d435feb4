"""``create_app``: the FastAPI application behind ``sammed serve``.

Guards, outermost first: trusted Host header (DNS-rebinding defence), optional CORS for
origins named on the command line (none by default), the access token, the upload limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from torch import nn

from sammed import __version__
from sammed.errors import SammedError
from sammed.server import api, monai
from sammed.server.config import ServerConfig
from sammed.server.context import ServerContext
from sammed.server.errors import ServerError
from sammed.server.security import BodySizeLimit, TokenGuard
from sammed.server.sessions import SessionStore
from sammed.server.worker import ModelWorker

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("sammed.server")


def load_model(config: ServerConfig) -> nn.Module:
    """The configured model with its weights (or untrained, when explicitly allowed)."""
    from sammed.models import build_model

    return build_model(config.model, checkpoint=config.checkpoint, trust_checkpoint=config.trust_checkpoint)


def _middleware(config: ServerConfig) -> list[Middleware]:
    stack = [Middleware(TrustedHostMiddleware, allowed_hosts=list(config.hosts_to_accept))]
    if config.allowed_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.allowed_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "X-Session-Key", "Content-Type"],
                expose_headers=["X-Offset", "X-Shape", "X-Dtype", "X-Params"],
            )
        )
    if config.token:
        stack.append(Middleware(TokenGuard, token=config.token))
    stack.append(Middleware(BodySizeLimit, limit=config.max_upload_bytes))
    return stack


def create_app(config: ServerConfig, model: nn.Module | None = None) -> FastAPI:
    """Build the app; ``model`` overrides loading from ``config`` (tests, notebooks)."""
    config = config.validated()
    if model is None:
        model = load_model(config)
    random_weights = config.checkpoint is None
    context = ServerContext(
        config=config,
        worker=ModelWorker(model.to(config.device).eval(), config.model, random_weights),
        store=SessionStore(config.max_sessions, config.session_timeout_s, config.memory_budget_bytes),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        reaper = asyncio.create_task(_expire_forever(context.store, min(30.0, config.session_timeout_s / 4)))
        try:
            yield
        finally:
            reaper.cancel()
            context.store.clear()
            context.worker.close()

    app = FastAPI(
        title="sammed server",
        version=__version__,
        description="Interactive 3D segmentation sessions, a MONAI-Label-compatible subset, and a web viewer.",
        middleware=_middleware(config),
        lifespan=lifespan,
    )
    app.state.sammed = context
    app.include_router(api.router)
    app.include_router(monai.router)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def viewer() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/healthz", summary="liveness probe")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


async def _expire_forever(store: SessionStore, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        dropped = store.expire()
        if dropped:
            log.info("closed %d idle session(s)", dropped)


def validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's list of field errors as one line: 'body.position.2: Field required; ...'."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, status_code=422)

    @app.exception_handler(ServerError)
    async def server_error(request: Request, exc: ServerError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(SammedError)
    async def user_error(request: Request, exc: SammedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server keeps running"}, status_code=500)
