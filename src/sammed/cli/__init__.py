"""The ``sammed`` command line: one command, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``; add new ones to ``SUBCOMMANDS``.
User mistakes (bad file, prompt outside the image, wrong checkpoint...) print one line
``sammed: error: ...`` and exit with status 2; no output file is created or overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from sammed import __version__
from sammed.cli.common import EXIT_USAGE, console
from sammed.errors import SammedError

# Subcommand modules, in the order --help lists them.
SUBCOMMANDS = ["sammed.cli.segment", "sammed.cli.models", "sammed.cli.serve", "sammed.cli.export", "sammed.cli.eval", "sammed.cli.train"]


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes print one line (and where to find help), not the whole usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"sammed: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sammed",
        description="Promptable segmentation of medical images with SAM-Med3D, SAM-Med2D, SAM-UNet and SAM.",
    )
    parser.add_argument("--version", action="version", version=f"sammed {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(commands)
    return parser


# Options whose value may start with '-' (a negative coordinate): argparse would take
# "--point -60.5,12,80" for two options, so such values are attached to their option first.
_COORDINATE_OPTIONS = ("--point", "-p", "--box", "-b")
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def attach_negative_values(argv: list[str]) -> list[str]:
    """``["--point", "-60.5,12,80"]`` -> ``["--point=-60.5,12,80"]`` (``-p-60.5,...`` for short options)."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in _COORDINATE_OPTIONS and index + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[index + 1]):
            value = argv[index + 1]
            joined.append(f"{token}={value}" if token.startswith("--") else f"{token}{value}")
            index += 2
            continue
        if token == "--":
            joined.extend(argv[index:])
            break
        joined.append(token)
        index += 1
    return joined


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as exit_:  # --help, --version, or a usage error already printed in one line
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
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
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
