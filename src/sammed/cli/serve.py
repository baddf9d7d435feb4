"""``sammed serve``: the segmentation server and web viewer on one port."""

from __future__ import annotations

import argparse
from pathlib import Path

from sammed.cli.common import add_command, add_model_arguments, console, resolve_checkpoint
from sammed.cli.options import bounded, port_number, positive_int

# Sizes in MiB: finite, positive, and small enough that bytes stay an ordinary integer (< 1 PiB).
megabytes = bounded(float, 0, 2**30, low_open=True)
seconds = bounded(float, 0, 10 * 365 * 86400, low_open=True)

_SERVE_EPILOG = """\
examples:
  # local use: open http://127.0.0.1:8000/ in a browser
  sammed serve --checkpoint sam_med3d_turbo.pth --data-root ~/scans

  # reachable from other machines: a token is then required on every request
  sammed serve --checkpoint sam_med3d_turbo.pth --host 0.0.0.0 --token "$(python -c 'import secrets; print(secrets.token_urlsafe())')"

  # try the viewer without weights (the masks are meaningless)
  sammed serve --model sam-med3d-tiny --allow-random-weights

The session API is under /api (schema at /docs and /openapi.json); MONAI Label clients (3D
Slicer, OHIF) connect to the same address (GET /info/, PUT /session/, POST /infer/MODEL).
"""


def register(commands) -> None:
    serve = add_command(
        commands,
        "serve",
        "run the segmentation server and web viewer",
        "Serve interactive segmentation over HTTP: a session API, a MONAI-Label-compatible subset and a web viewer at /.",
        _SERVE_EPILOG,
    )
    add_model_arguments(
        serve,
        "start without --checkpoint, with untrained weights (for trying the viewer; masks are meaningless)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --token)")
    serve.add_argument("--port", type=port_number, default=8000, help="TCP port, 1-65535 (default 8000)")
    serve.add_argument("--data-root", metavar="DIR", help="folder whose images clients may open and save masks next to")
    serve.add_argument("--token", help="access token every request must carry (Authorization: Bearer TOKEN)")
    serve.add_argument("--max-upload-mb", type=megabytes, default=512, help="largest accepted request body, as sent (default 512)")
    serve.add_argument(
        "--max-image-mb",
        type=megabytes,
        default=512,
        help="largest image a session may open, counted decoded: voxels x bytes per voxel (default 512)",
    )
    serve.add_argument(
        "--memory-budget-mb",
        type=megabytes,
        default=8192,
        help="memory all sessions together may hold; a session is charged 3x its decoded image + 4 bytes/voxel (default 8192)",
    )
    serve.add_argument("--session-timeout", type=seconds, default=1800, metavar="SECONDS", help="close sessions idle this long")
    serve.add_argument("--max-sessions", type=positive_int, default=32, help="sessions held at once (default 32)")
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="let web pages from this origin call the API (CORS; closed by default); repeatable",
    )
    serve.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run the model")
    serve.set_defaults(handler=run_serve)


def config_from_args(args: argparse.Namespace):
    from sammed.server import ServerConfig

    return ServerConfig(
        model=args.model,
        checkpoint=resolve_checkpoint(args, args.model, random_weights=args.allow_random_weights),
        trust_checkpoint=args.trust_checkpoint,
        allow_random_weights=args.allow_random_weights,
        device=args.device,
        host=args.host,
        port=args.port,
        data_root=Path(args.data_root).expanduser() if args.data_root else None,
        token=args.token,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_image_bytes=int(args.max_image_mb * 2**20),
        memory_budget_bytes=int(args.memory_budget_mb * 2**20),
        session_timeout_s=args.session_timeout,
        max_sessions=args.max_sessions,
        allowed_origins=tuple(args.allow_origin),
    ).validated()


def memory_line(config) -> str:
    """The memory budget as the start line reports it (the same figures as GET /api/info)."""
    largest = config.largest_session_charge
    return (
        f"memory: sessions may hold {config.memory_budget_bytes / 2**20:.0f} MiB together; each image up to "
        f"{config.max_image_bytes / 2**20:.0f} MiB decoded (a session of the largest is charged "
        f"{largest / 2**20:.0f} MiB: {config.memory_budget_bytes // largest} fit)"
    )


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from sammed.models import get_model_spec
    from sammed.server import create_app

    config = config_from_args(args)
    get_model_spec(config.model)  # unknown names fail before the slow parts
    if config.device == "cuda" and not torch.cuda.is_available():
        from sammed.errors import SammedError

        raise SammedError("--device cuda requested but no CUDA device is available")
    app = create_app(config)
    if config.checkpoint is None:
        console.print(f"[bold yellow]warning:[/] {config.model} runs with untrained random weights: masks are meaningless")
    shown_host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{shown_host}:{config.port}/"
    console.print(f"viewer: {url}" + ("?token=<your token>" if config.token else ""), markup=False)
    console.print(memory_line(config), markup=False)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0
