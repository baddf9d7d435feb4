"""Console, progress display and exit codes shared by the subcommands."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console

EXIT_USAGE = 2
console = Console(stderr=True, highlight=False)


@contextmanager
def step(message: str):
    """Spinner while a step runs (shown only on a terminal), then its duration."""
    start = time.perf_counter()
    with console.status(message):
        yield
    console.print(f"[dim]{message} done in {time.perf_counter() - start:.1f} s[/dim]")


def add_model_arguments(parser, random_weights_help: str) -> None:
    """--model, --checkpoint, --trust-checkpoint and --allow-random-weights, shared by subcommands."""
    parser.add_argument("--model", "-m", default="sam-med3d-turbo", help="model name (see 'sammed models list')")
    parser.add_argument(
        "--checkpoint", "-c", metavar="PTH", help="model weights file (required unless --allow-random-weights)"
    )
    parser.add_argument(
        "--trust-checkpoint", action="store_true", help="allow a checkpoint that needs arbitrary code to unpickle"
    )
    parser.add_argument("--allow-random-weights", action="store_true", help=random_weights_help)
