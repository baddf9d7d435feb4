"""The one terminal every part of sammed reports progress on: rich, on standard error.

Standard output stays free for results (``sammed models list`` and the like); the command line,
evaluation and training share this console so their progress bars and messages never interleave.
"""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)
