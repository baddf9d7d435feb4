"""Console, progress display and exit codes shared by the subcommands."""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

from sammed.console import console

EXIT_USAGE = 2


@contextmanager
def step(message: str):
    """Spinner while a step runs (shown only on a terminal), then its duration."""
    start = time.perf_counter()
    with console.status(message):
        yield
    console.print(f"[dim]{message} done in {time.perf_counter() - start:.1f} s[/dim]")


CHECKPOINT_HELP = (
    "model weights file, or a model name for its weights (default: --model's bundled or cached file, "
    "downloaded on first use)"
)


def add_command(commands, name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows its examples (``epilog``) as written."""
    return commands.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_offline_argument(parser) -> None:
    """--offline: use only bundled or cached weights (as SAMMED_OFFLINE=1)."""
    parser.add_argument(
        "--offline", action="store_true", help="never download weights (same as SAMMED_OFFLINE=1); use bundled or cached files"
    )


def model_name(text: str) -> str:
    """argparse type: a registered model name or alias, checked when the command line is parsed."""
    from sammed.errors import UnknownModelError
    from sammed.models.registry import get_model_spec

    try:
        get_model_spec(text)
    except UnknownModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_model_arguments(
    parser,
    random_weights_help: str | None = None,
    *,
    default: str | None = "sam-med3d-turbo",
    required: bool = False,
    model_help: str = "model name (see 'sammed models list')",
    checkpoint_help: str = CHECKPOINT_HELP,
    trust_flag: bool = True,
) -> None:
    """The one declaration of the model flags: --model, --checkpoint, --trust-checkpoint, --offline,
    and --allow-random-weights where ``random_weights_help`` says what it means for the command."""
    parser.add_argument("--model", "-m", type=model_name, default=None if required else default,
                        required=required, help=model_help)
    parser.add_argument("--checkpoint", "-c", metavar="PTH", help=checkpoint_help)
    if trust_flag:
        parser.add_argument(
            "--trust-checkpoint",
            action="store_true",
            help="allow a checkpoint that needs arbitrary code to unpickle (only for files you trust)",
        )
    if random_weights_help is not None:
        parser.add_argument("--allow-random-weights", action="store_true", help=random_weights_help)
    add_offline_argument(parser)


def weights_notice(message: str) -> None:
    """Download notices on stderr, one unwrapped line each (paths and URLs stay copyable)."""
    console.print(message, markup=False, soft_wrap=True)


def resolve_checkpoint(args: argparse.Namespace, model: str, random_weights: bool = False) -> Path | None:
    """The weights file a command loads for ``model``.

    ``--checkpoint PATH`` wins (a registered model name there means that model's weights, for
    fine-tuning from a named model); otherwise the bundled file, else the cache, else a download on
    first use (refused offline). ``random_weights`` (--allow-random-weights) skips the cache and the
    network: only a bundled file is used, and None means untrained weights.
    """
    from sammed.models import get_model_spec
    from sammed.models.weights import OfflineError, WeightsError, bundled_weights, require_weights

    offline = getattr(args, "offline", False)
    if args.checkpoint is not None:
        path = Path(args.checkpoint).expanduser()
        if path.exists() or not _is_model_name(args.checkpoint):
            return path
        model = args.checkpoint
    spec = get_model_spec(model)
    if random_weights and args.checkpoint is None:
        return bundled_weights(spec)
    try:
        path = require_weights(spec, offline=offline, notice=weights_notice)
    except OfflineError:
        raise
    except WeightsError as exc:  # no released file: say how to go on without one where a command can
        if not hasattr(args, "allow_random_weights"):
            raise
        raise WeightsError(f"{exc} (or --allow-random-weights for untrained weights)") from None
    console.print(f"{spec.name} weights: {path}", style="dim", markup=False, soft_wrap=True)
    return path


def _is_model_name(text: str) -> bool:
    from sammed.errors import UnknownModelError
    from sammed.models import get_model_spec

    try:
        get_model_spec(text)
    except UnknownModelError:
        return False
    return True
