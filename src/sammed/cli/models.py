"""``sammed models list|info|download``: what models exist, where their weights are, and fetching them."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from sammed.cli.common import weights_notice


def register(commands) -> None:
    models = commands.add_parser("models", help="list registered models, show one, or download its weights")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION")
    actions.add_parser("list", help="list model names (and which are bundled or cached)").set_defaults(
        handler=list_models
    )
    info = actions.add_parser("info", help="architecture, weights file, source, licence and cached copy of a model")
    info.add_argument("name")
    info.set_defaults(handler=model_info)
    download = actions.add_parser(
        "download",
        help="fetch a model's weights into the cache ($SAMMED_HOME), verified, for offline use",
        description=(
            "Download a model's weights into the cache ($SAMMED_HOME/weights/NAME/) with a progress bar, "
            "verify the sha256 when it is known (else record it) and print the file's path and sha256. "
            "Every later command that names the model uses the cached file."
        ),
    )
    download.add_argument("name", help="model name (see 'sammed models list')")
    download.add_argument("--url", help="fetch from this URL instead of the registry's (a mirror, or a file with no direct link)")
    download.add_argument("--sha256", metavar="HEX", help="refuse the file unless its sha256 is this")
    download.set_defaults(handler=download_model)
    models.set_defaults(handler=list_models)


def _weights_status(spec) -> str:
    """bundled / cached / 'download' (fetched on first use) / '-' (no direct download)."""
    from sammed.models.weights import cached_weights

    if spec.bundled_path is not None:
        return "bundled"
    if cached_weights(spec) is not None:
        return "cached"
    return "download" if spec.download_url else "-"


def list_models(args: argparse.Namespace) -> int:
    """One block per model: name, dimensionality, family, weights status, licence, then description and source."""
    from sammed.models import REGISTRY
    from sammed.models.weights import sammed_home

    print(f"{'name':26s} {'dims':4s} {'family':10s} {'weights':8s} licence")
    for name, spec in REGISTRY.items():
        print(f"{name:26s} {spec.dims}D   {spec.family:10s} {_weights_status(spec):8s} {spec.license or '-'}")
        print(f"    {spec.description}")
        print(f"    source: {spec.source_url or '-'}")
    print(
        f"weights: bundled = inside the package; cached = in {sammed_home() / 'weights'}; download = fetched on "
        "first use ('sammed models download NAME' beforehand for offline machines); - = no direct download"
    )
    return 0


def model_info(args: argparse.Namespace) -> int:
    from sammed.models import get_model_spec
    from sammed.models.weights import cached_weights, model_dir

    spec = get_model_spec(args.name)
    config = {k: v for k, v in asdict(spec.config).items() if k != "extra"}
    describe = getattr(spec.preprocessing, "describe", None)
    cached = cached_weights(spec)
    if spec.bundled_path is not None:
        local = f"{spec.bundled_path} (bundled)"
    elif cached is not None:
        local = str(cached.path)
    else:
        local = f"not cached (would go to {model_dir(spec)})"
    size = spec.bundled_path.stat().st_size if spec.bundled_path is not None else (cached.size if cached else None)
    sha256 = cached.sha256 if cached is not None else spec.sha256
    if cached is not None and not cached.verified:
        sha256 = f"{cached.sha256} (recorded at download; no published hash)"
    rows = [
        ("name", spec.name),
        ("family", f"{spec.family} ({spec.dims}D)"),
        ("description", spec.description),
        ("aliases", ", ".join(spec.aliases) or "-"),
        ("weights file", spec.checkpoint_file or "none released"),
        ("source", spec.source_url or "-"),
        ("download", spec.download_url or "-"),
        ("licence", spec.license or "-"),
        ("local copy", local),
        ("size", f"{size} bytes ({size / 1e6:.1f} MB)" if size is not None else "-"),
        ("sha256", sha256 or "unknown"),
        ("input", describe() if describe else "-"),
        ("config", ", ".join(f"{k}={v}" for k, v in config.items())),
        ("cite", spec.citation or "-"),
    ]
    for key, value in rows:
        print(f"{key:12s} {value}")
    return 0


def download_model(args: argparse.Namespace) -> int:
    """Fetch into the cache (or report the copy already there); stdout: the path, then the sha256."""
    from sammed.models import get_model_spec
    from sammed.models.weights import download_weights, normalise_sha256

    spec = get_model_spec(args.name)
    expected = normalise_sha256(args.sha256)  # a malformed --sha256 fails before any transfer
    if spec.bundled_path is not None and args.url is None:
        weights_notice(f"{spec.name} is bundled with sammed: nothing to download")
        print(spec.bundled_path)
        print(spec.sha256)
        return 0
    entry = download_weights(spec, url=args.url, sha256=expected, notice=weights_notice)
    print(entry.path)
    print(entry.sha256)
    return 0
