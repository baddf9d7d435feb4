"""Model registry: name -> builder, checkpoint facts and preprocessing, for every family.

Each family module lists its :class:`ModelSpec` entries (``sam3d/specs.py``,
``sam2d/specs.py``...) and this module collects them. An entry records where the official
weights come from (file name, page, direct download URL, licence, sha256 when known) so
``sammed models info NAME`` can tell a user what to download, and ``sammed.models.weights`` can
fetch, verify and cache the file when a command names the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from sammed.errors import UnknownModelError
from sammed.models.checkpoint import extract_state_dict, load_weights, read_checkpoint


@dataclass(frozen=True)
class ModelSpec:
    """One registered model. ``builder(config)`` returns an uninitialised module.

    ``config`` is a frozen dataclass with a ``with_overrides(**fields)`` method; ``dims`` is 2 or 3
    and tells the CLI and the inference layer which pipeline to use; ``preprocessing`` is the
    family's own description of its expected input.
    """

    name: str
    family: str
    dims: int
    description: str
    config: Any
    builder: Callable[[Any], nn.Module]
    preprocessing: Any = None
    checkpoint_file: str | None = None
    source_url: str | None = None  # where a person finds the weights (a web page)
    download_url: str | None = None  # the file itself, fetched on first use (None: no direct download)
    bundled_path: Path | None = None  # weights shipped inside the package (used before any cache)
    license: str | None = None
    sha256: str | None = None
    citation: str | None = None
    aliases: tuple[str, ...] = ()
    # Maps an official file's state dict onto this entry's modules (e.g. drop adapter weights
    # for a lean variant); applied before the strict load.
    adapt_state_dict: Callable[[dict], dict] | None = None

    def build(self, **overrides) -> nn.Module:
        config = self.config.with_overrides(**overrides) if overrides else self.config
        return self.builder(config)


REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add an entry (names and aliases must be unique across families)."""
    for key in (spec.name, *spec.aliases):
        if key in REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
    REGISTRY[spec.name] = spec
    _ALIASES.update({alias: spec.name for alias in spec.aliases})
    return spec


def list_models(dims: int | None = None) -> list[str]:
    return [name for name, spec in REGISTRY.items() if dims is None or spec.dims == dims]


def get_model_spec(name: str) -> ModelSpec:
    key = _ALIASES.get(name, name)
    if key not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return REGISTRY[key]


def build_model(
    name: str,
    checkpoint: str | Path | None = None,
    trust_checkpoint: bool = False,
    pretrained: bool = False,
    **overrides,
) -> nn.Module:
    """Build a registered model, optionally loading a checkpoint strictly; returns it in eval mode.

    ``overrides`` change architecture fields of the entry's config (e.g. ``encoder_depth=6``).
    Without ``checkpoint`` the result is the untrained architecture (the bundled model excepted:
    its weights are part of its build), so building never touches the network by surprise;
    ``pretrained=True`` loads the registry's weights: bundled, else cached under ``$SAMMED_HOME``,
    else downloaded once (refused when ``SAMMED_OFFLINE=1``).
    """
    spec = get_model_spec(name)
    if checkpoint is None and pretrained:
        from sammed.models.weights import require_weights

        checkpoint = require_weights(spec)
    model = spec.build(**overrides)
    if checkpoint is not None:
        state_dict = extract_state_dict(read_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint))
        if spec.adapt_state_dict is not None:
            state_dict = spec.adapt_state_dict(state_dict)
        load_weights(model, state_dict, model_name=spec.name)
    model.spec = spec  # type: ignore[attr-defined]  # lets pipelines read preprocessing facts
    return model.eval()
