"""Model registry: name -> builder, checkpoint facts and preprocessing, for every family.

Plain data that imports without torch: listing models, resolving a name or reading where its
weights come from costs no framework import. Each family lists its :class:`ModelSpec` entries
in a torch-free ``specs.py`` (configs are dataclasses; builders and 2D pipelines are named as
``"module:attribute"`` :class:`Ref` s, imported when a model is built). An entry records where
the official weights come from (file name, page, direct download URL, licence, sha256 when
known) so ``sammed models info NAME`` can tell a user what to download, and
``sammed.models.weights`` can fetch, verify and cache the file when a command names the model.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sammed.errors import UnknownModelError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Ref:
    """A module attribute named as text, ``"package.module:attribute"``, imported on first use.

    ``kwargs`` (pairs) are what :meth:`make` calls the attribute with, for objects such as 2D
    pipelines that need torch to be built.
    """

    target: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def make(self) -> Any:
        return _make(self)


@functools.lru_cache(maxsize=None)
def _make(ref: Ref) -> Any:
    return ref.load()(**dict(ref.kwargs))


def _resolve(value: Any) -> Any:
    return value.load() if isinstance(value, Ref) else value


@dataclass(frozen=True)
class ModelSpec:
    """One registered model. ``builder`` (a :class:`Ref` or a callable) maps ``config`` to an
    uninitialised module.

    ``config`` is a frozen dataclass with a ``with_overrides(**fields)`` method; ``dims`` is 2 or 3
    and tells the CLI and the inference layer which pipeline to use; ``preprocessing`` is the
    family's own description of its expected input (``preprocessing_source``: the object, or a
    :class:`Ref` made on first use).
    """

    name: str
    family: str
    dims: int
    description: str
    config: Any
    builder: Any  # Ref | Callable[[config], nn.Module]
    preprocessing_source: Any = None
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
    adapt_state_dict: Any = None  # Ref | Callable[[dict], dict] | None

    @property
    def preprocessing(self) -> Any:
        source = self.preprocessing_source
        return source.make() if isinstance(source, Ref) else source

    def build(self, **overrides) -> "nn.Module":
        config = self.config.with_overrides(**overrides) if overrides else self.config
        return _resolve(self.builder)(config)

    def adapt(self, state_dict: dict) -> dict:
        """The state dict as this entry's modules expect it (identity for most entries)."""
        return state_dict if self.adapt_state_dict is None else _resolve(self.adapt_state_dict)(state_dict)


REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}
# Which entry each built model came from, kept beside the models rather than set on them: an
# attribute on an nn.Module would travel into pickles and wrappers and look like part of it.
_BUILT_FROM: "weakref.WeakKeyDictionary[Any, ModelSpec]" = weakref.WeakKeyDictionary()


def record_spec(model: Any, spec: ModelSpec) -> None:
    """Remember that ``model`` implements ``spec`` (build_model and the ONNX backends call this)."""
    _BUILT_FROM[model] = spec


def spec_of(model: Any) -> ModelSpec | None:
    """The registry entry ``model`` was built from (name, family, preprocessing), or None for a
    model built some other way."""
    try:
        return _BUILT_FROM.get(model)
    except TypeError:  # not weak-referenceable: never recorded
        return None


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
) -> "nn.Module":
    """Build a registered model, optionally loading a checkpoint strictly; returns it in eval mode.

    ``overrides`` change architecture fields of the entry's config (e.g. ``encoder_depth=6``).
    Without ``checkpoint`` the result is the untrained architecture (the bundled model excepted:
    its weights are part of its build), so building never touches the network by surprise;
    ``pretrained=True`` loads the registry's weights: bundled, else cached under ``$SAMMED_HOME``,
    else downloaded once (refused when ``SAMMED_OFFLINE=1``).

    With a checkpoint, the module is built with empty parameters (no random initialisation) and
    takes the file's tensors, memory-mapped from a zip-format file: the weights are never copied.
    """
    from sammed.models.checkpoint import empty_parameters, extract_state_dict, load_weights, read_checkpoint

    spec = get_model_spec(name)
    if checkpoint is None and pretrained:
        from sammed.models.weights import require_weights

        checkpoint = require_weights(spec)
    if checkpoint is None:
        model = spec.build(**overrides)
    else:
        with empty_parameters():
            model = spec.build(**overrides)
        raw = read_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint, mmap=True)
        load_weights(model, spec.adapt(extract_state_dict(raw)), model_name=spec.name)
    record_spec(model, spec)  # the 2D predictor, exporters and server read it with spec_of(model)
    return model.eval()


def _load_catalog() -> None:
    """Register every family's entries (torch-free modules)."""
    for module in (
        "sammed.models.sam3d.specs",
        "sammed.models.sam2d.specs",
        "sammed.models.sam2d.sam_unet.specs",
    ):
        importlib.import_module(module)


_load_catalog()
