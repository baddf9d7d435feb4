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
