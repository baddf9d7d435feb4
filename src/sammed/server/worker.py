"""One worker thread per model: model calls queue up there and never block the event loop.

A model is a single set of weights on one device; running two forward passes on it at once
would only contend for the same cores (or GPU) and make every request slower, so requests
from all sessions are serialised here while the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable

from torch import nn


class ModelWorker:
    """A model plus the single thread that is allowed to run it."""

    def __init__(self, model: nn.Module, name: str, random_weights: bool) -> None:
        self.model = model
        self.name = name
        self.random_weights = random_weights
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sammed-model-{name}")

    async def run(self, function: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``function(*args, **kwargs)`` on the model thread and wait for it without blocking."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(function, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
