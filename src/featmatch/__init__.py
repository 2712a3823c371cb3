"""featmatch: local feature detection, description and matching behind one API.

>>> import featmatch
>>> m = featmatch.match_pair("a.jpg", "b.jpg", model="xfeat")
>>> m.points0.shape, m.points1.shape
"""

from __future__ import annotations

from typing import Any

from .errors import FeatmatchError, ImageReadError, UsageError, WeightsError, WeightsNotFoundError
from .memory import keep_freed_memory
from .registry import list_models, load, model_card
from .types import Estimate, Features, Matches

__version__ = "0.1.0"

_MODEL_CACHE: dict = {}


def match_pair(image0: Any, image1: Any, model: Any = "xfeat", **overrides: Any) -> Matches:
    """Match two images with a registered model (loaded once and cached per options).

    Args:
        image0, image1: paths, numpy arrays (``H x W`` or ``H x W x 3``, uint8 or float
            in [0, 1], RGB) or tensors.
        model: a model name from :func:`list_models` or an already loaded model.
        **overrides: config options for the model (e.g. ``top_k=2048``).

    Returns:
        :class:`Matches` with ``points0``, ``points1`` ``(K, 2)`` in the callers' pixels and
        ``scores (K,)``.
    """
    if isinstance(model, str):
        key = (model, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = load(model, **overrides)
        model = _MODEL_CACHE[key]
    elif overrides:
        raise UsageError("options can only be given together with a model name")
    return model.match(image0, image1)


__all__ = ["load", "list_models", "model_card", "match_pair", "keep_freed_memory", "Features", "Matches", "Estimate",
           "FeatmatchError", "UsageError", "ImageReadError", "WeightsError", "WeightsNotFoundError",
           "__version__"]
