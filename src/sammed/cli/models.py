"""``sammed models list|info``: what models exist and where their weights come from."""

from __future__ import annotations

import argparse
from dataclasses import asdict


def register(commands) -> None:
    models = commands.add_parser("models", help="list registered models or show one")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION")
    actions.add_parser("list", help="list model names").set_defaults(handler=list_models)
    info = actions.add_parser("info", help="architecture, weights file, source and licence of a model")
    info.add_argument("name")
    info.set_defaults(handler=model_info)
    models.set_defaults(handler=list_models)


def list_models(args: argparse.Namespace) -> int:
    """One block per model: name, dimensionality, family, licence, then description and source."""
    from sammed.models import REGISTRY

    print(f"{'name':22s} {'dims':4s} {'family':10s} licence")
    for name, spec in REGISTRY.items():
        print(f"{name:22s} {spec.dims}D   {spec.family:10s} {spec.license or '-'}")
        print(f"    {spec.description}")
        print(f"    source: {spec.source_url or '-'}")
    return 0


def model_info(args: argparse.Namespace) -> int:
    from sammed.models import get_model_spec

    spec = get_model_spec(args.name)
    config = {k: v for k, v in asdict(spec.config).items() if k != "extra"}
    describe = getattr(spec.preprocessing, "describe", None)
    rows = [
        ("name", spec.name),
        ("family", f"{spec.family} ({spec.dims}D)"),
        ("description", spec.description),
        ("aliases", ", ".join(spec.aliases) or "-"),
        ("weights file", spec.checkpoint_file or "none released"),
        ("source", spec.source_url or "-"),
        ("licence", spec.license or "-"),
        ("sha256", spec.sha256 or "unknown"),
        ("input", describe() if describe else "-"),
        ("config", ", ".join(f"{k}={v}" for k, v in config.items())),
        ("cite", spec.citation or "-"),
    ]
    for key, value in rows:
        print(f"{key:12s} {value}")
    return 0
