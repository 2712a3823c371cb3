"""Model registry: names -> (config class, builder, model card).

Model modules register themselves with :func:`register`; they are imported lazily the
first time the registry is consulted, so ``import featmatch`` stays light. Names follow
``family[.tag]`` (``xfeat``, ``xfeat-star``, ``aliked.n16``).

Layers, top-down: the registry owns names and cards and turns a name into its card's
:class:`~featmatch.hub.WeightSpec` (:func:`weights_path`, :func:`cached_weights`,
:func:`download_weights`); :mod:`featmatch.hub` works on specs and never imports this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import hub
from .config import from_dict
from .errors import UsageError
from .hub import WeightSpec

__all__ = ["ModelCard", "WeightSpec", "register", "list_models", "model_card", "make_config", "load",
           "load_matcher", "weights_path", "cached_weights", "download_weights", "get_entry"]

log = logging.getLogger(__name__)

#: Modules that register models; imported on first use of the registry.
MODEL_MODULES: tuple[str, ...] = (
    "featmatch.models.xfeat",
    "featmatch.models.aliked",
    "featmatch.models.classical",
    "featmatch.models.loftr",
    "featmatch.models.drcnet",
    "featmatch.models.lift",
    "featmatch.models.lightglue",
)


@dataclass(frozen=True)
class ModelCard:
    """Data about a registered model: what it is, its licences and its weights."""

    name: str
    family: str
    kind: str  # "sparse" (extractor + matcher) or "dense" (image pair -> matches)
    summary: str
    paper: str = ""
    code_license: str = "Apache-2.0"
    weights: Optional[WeightSpec] = None
    weights_origin: str = "official"  # official | featmatch | none
    input: str = "RGB or grey float [0, 1], any size; converted internally"
    notes: str = ""
    #: raised (one line) by load() when no weights= is given and the card has no WeightSpec
    missing_weights: str = ""
    #: a learned matcher's own weight file (e.g. LightGlue), loaded into ``model.matcher``
    matcher_weights: Optional[WeightSpec] = None


@dataclass(frozen=True)
class Entry:
    card: ModelCard
    config_cls: type
    build: Callable[[Any], Any]  # config -> model (random init)
    defaults: dict = field(default_factory=dict)  # per-name config overrides


_REGISTRY: dict[str, Entry] = {}
_loaded = False


def register(name: str, *, card: ModelCard, config_cls: type, build: Callable[[Any], Any],
             defaults: Optional[dict] = None) -> None:
    """Register a model under ``name`` (called by model modules at import time)."""
    if name in _REGISTRY:
        raise RuntimeError(f"model name registered twice: {name}")
    if card.name != name:
        raise RuntimeError(f"card name {card.name!r} differs from registered name {name!r}")
    _REGISTRY[name] = Entry(card, config_cls, build, dict(defaults or {}))


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:  # module not written yet
                continue
            raise


def get_entry(name: str) -> Entry:
    _ensure_loaded()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown model '{name}'{hint} (available: {', '.join(list_models())})")
    return _REGISTRY[name]


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_card(name: str) -> ModelCard:
    """The :class:`ModelCard` of a registered model."""
    return get_entry(name).card


def make_config(name: str, **overrides: Any) -> Any:
    """The frozen config of ``name`` with ``overrides`` applied (unknown keys raise)."""
    entry = get_entry(name)
    cfg = from_dict(entry.config_cls, entry.defaults)
    return from_dict(entry.config_cls, overrides, base=cfg)


def weights_spec(name: str) -> WeightSpec:
    """The :class:`WeightSpec` of ``name``'s card (UsageError if it has no weight file)."""
    card = model_card(name)
    if card.weights is None:
        raise UsageError(f"model '{name}' has no weight file to download")
    return card.weights


def cached_weights(name: str) -> Optional[Path]:
    """Path of the cached or installed weights of ``name``, or None (no network); a model
    with a learned matcher's file counts as cached only when both files are."""
    matcher = model_card(name).matcher_weights
    if matcher is not None and hub.cached_path(matcher) is None:
        return None
    return hub.cached_path(weights_spec(name))


def weights_path(name: str, path: Any = None) -> Path:
    """The weight file ``load(name, weights=path)`` would read (no network; raises one line
    naming ``featmatch download NAME`` when missing)."""
    spec = model_card(name).weights
    if spec is None and path is None:
        weights_spec(name)  # raises
    return hub.resolve(spec, path, name=name)


def download_weights(name: str, **kwargs: Any) -> Path:
    """``featmatch download NAME``: :func:`featmatch.hub.download` for ``name``'s card."""
    matcher = model_card(name).matcher_weights
    if matcher is not None:  # the learned matcher's file first, then the extractor's
        hub.download(matcher, name=name, **kwargs)
    return hub.download(weights_spec(name), name=name, **kwargs)


def load(name: str, *, weights: Any = None, pretrained: bool = True, device: Any = None,
         **overrides: Any) -> Any:
    """Build a registered model, load its weights and put it in eval mode.

    Never touches the network: weights come from ``weights`` (a path), the cache
    ``$FEATMATCH_HOME`` or an installed copy; a missing file raises one line naming the
    ``featmatch download NAME`` command.

    Args:
        name: a name from :func:`list_models`, e.g. ``"xfeat"``.
        weights: optional path to a weight file (overrides the cache).
        pretrained: ``False`` builds the network with random weights.
        device: torch device: None / ``"cpu"`` (default), ``"auto"`` (CUDA, then MPS, then
            CPU), ``"cuda"``, ``"cuda:N"``, ``"mps"``; checked before anything is built.
        **overrides: config options (unknown keys and values of the wrong type or range
            raise :class:`UsageError`).
    """
    from .device import resolve_device

    if isinstance(overrides.get("matcher"), str):  # load("aliked.n16", matcher="lightglue")
        name = _with_matcher(name, overrides.pop("matcher"))
    entry = get_entry(name)
    cfg = make_config(name, **overrides)
    dev = resolve_device(device)
    if pretrained and weights is None and entry.card.weights is None and entry.card.missing_weights:
        from .errors import WeightsNotFoundError

        raise WeightsNotFoundError(entry.card.missing_weights)
    model = entry.build(cfg)
    model.card = entry.card
    if pretrained and (entry.card.weights is not None or weights is not None):
        path = hub.resolve(entry.card.weights, weights, name=name)
        state = hub.read_state_dict(path, origin=hub.origin(entry.card.weights, path, weights is not None), name=name)
        model.load_weights(state, source=str(path))
        model.weights_path = str(path)
    if pretrained and entry.card.matcher_weights is not None:
        _load_matcher_weights(model.matcher, entry.card.matcher_weights, None, name)
    model.eval()
    if dev.type != "cpu":
        model.to(dev)
    return model


def _load_matcher_weights(matcher: Any, spec: WeightSpec, path: Any, name: str) -> None:
    """Load a learned matcher's own file (``path``, else the card's cached one) strictly."""
    p = hub.resolve(spec, path, name=name)
    matcher.load_weights(hub.read_state_dict(p, origin=hub.origin(spec, p, path is not None), name=name),
                         source=str(p))
    matcher.weights_path = str(p)


def load_matcher(name: str, *, weights: Any = None, pretrained: bool = True, device: Any = None,
                 **overrides: Any) -> Any:
    """The learned matcher of a model (the LightGlue of ``aliked.n16+lightglue``) with its
    weights, without reading the extractor's file: for matching features that are already
    extracted (``featmatch.pipeline``). Never touches the network.

    Args:
        name: a model whose card has ``matcher_weights`` (e.g. ``"aliked.n16+lightglue"``).
        weights: a matcher weight file instead of the cached official one.
        pretrained: ``False`` keeps random weights.
        device, overrides: as in :func:`load` (``matcher={...}`` sets the matcher's options).

    Raises:
        UsageError: the model has no learned matcher.
        WeightsNotFoundError: the matcher's file is not cached (names ``featmatch download NAME``).
    """
    from .device import resolve_device

    entry = get_entry(name)
    spec = entry.card.matcher_weights
    if spec is None:
        raise UsageError(f"model '{name}' has no learned matcher (no matcher weight file)")
    cfg = make_config(name, **overrides)
    dev = resolve_device(device)
    model = entry.build(cfg)  # the extractor's network is built (random, cheap) and dropped
    matcher = model.matcher
    matcher.card = entry.card
    if pretrained:
        _load_matcher_weights(matcher, spec, weights, name)
    matcher.eval()
    if dev.type != "cpu":
        matcher.to(dev)
    return matcher


def _with_matcher(name: str, matcher: str) -> str:
    """``("aliked.n16", "lightglue")`` -> ``"aliked.n16+lightglue"``; ``"mnn"`` -> ``name``."""
    base = name.split("+")[0]
    if matcher.lower() in ("mnn", "nn", "mutual_nn"):
        get_entry(base)
        return base
    combo = f"{base}+{matcher.lower()}"
    _ensure_loaded()
    if combo not in _REGISTRY:
        get_entry(base)  # unknown base model: its own message
        options = [n.split("+", 1)[1] for n in _REGISTRY if n.startswith(base + "+")]
        raise UsageError(f"model '{base}' has no matcher '{matcher}'; use one of: "
                         f"{', '.join(['mnn'] + options)} (or a model from `featmatch list`)")
    return combo


def replace_config(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, **changes)
