"""The ``sammed`` command line: one command, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``; add new ones to ``SUBCOMMANDS``.
User mistakes (bad file, prompt outside the image, wrong checkpoint...) print one line
``sammed: error: ...`` and exit with status 2; no output file is created or overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sammed import __version__
from sammed.cli.common import EXIT_USAGE, console
from sammed.errors import SammedError

# Subcommand modules, in the order --help lists them.
SUBCOMMANDS = ["sammed.cli.segment", "sammed.cli.models", "sammed.cli.serve", "sammed.cli.export", "sammed.cli.eval", "sammed.cli.train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sammed",
        description="Promptable segmentation of medical images with SAM-Med3D, SAM-Med2D, SAM-UNet and SAM.",
    )
    parser.add_argument("--version", action="version", version=f"sammed {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except SammedError as exc:
        console.print(f"sammed: error: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("sammed: interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
