"""Shared first loop of the benchmarks: load models, match every pair, cache the result.

Sparse models (with ``extract`` / ``match_features``) extract each image once per run
and reuse its features across the pairs it is part of (image 1 of an HPatches sequence
appears in five pairs); dense matchers see every pair. Timings are wall-clock per pair
(both extractions + matching), measured when the prediction was computed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError
from .cache import PredictionCache, config_identity
from .data import file_digest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedModel:
    """A model ready for a benchmark, with what identifies its predictions."""

    name: str
    model: Any
    identity: dict
    weights_sha256: Optional[str]


def split_spec(spec: str) -> tuple[str, str, Optional[str]]:
    """``"[label=]name[@weights]"`` -> ``(label, name, weights)``.

    ``mine=xfeat@runs/a/model.pt`` evaluates registered model ``xfeat`` with the weight
    file ``runs/a/model.pt`` under the label ``mine``; the label defaults to the spec.
    """
    label, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
    name, _, weights = rest.partition("@")
    name = name.strip()
    return (label.strip() or spec.strip()), name, (weights.strip() or None)


def parse_models(text: str) -> list[str]:
    """``"xfeat, sift"`` -> ``["xfeat", "sift"]`` (order kept, duplicates removed). Each
    entry may be ``label=name@weights`` (see :func:`split_spec`)."""
    names = []
    for n in (text or "").split(","):
        n = n.strip()
        if n and n not in names:
            names.append(n)
    if not names:
        raise UsageError("--models needs at least one model name (see `featmatch list`)")
    return names


def _check_name(name: str) -> None:
    from ..registry import get_entry

    if name == "akaze":
        from ..models import classical
        from ..registry import list_models

        if "akaze" not in list_models():
            raise classical.ModelUnavailableError(classical.AKAZE_MISSING)
    get_entry(name)


def model_overrides(name: str, *, resize: Optional[int] = None, max_keypoints: Optional[int] = None,
                    options: Optional[Sequence[str]] = None, label: Optional[str] = None) -> dict:
    """Config overrides for the benchmark options; raises if the model lacks the field.

    ``options``: ``--set`` strings, ``KEY=VALUE`` for every model or ``LABEL:KEY=VALUE`` for
    the model listed under LABEL (its name unless ``LABEL=NAME`` was used); parsed against
    the model's config field types like ``featmatch match --set``.
    """
    from ..config import parse_assignments
    from ..registry import get_entry, make_config

    cfg = make_config(name)
    fields = {f.name for f in dataclasses.fields(cfg)}
    mine = []
    for item in options or []:
        head = item.split("=", 1)[0]
        if ":" in head:
            target, item = item.split(":", 1)
            if target != (label or name):
                continue
        mine.append(item)
    out: dict = parse_assignments(get_entry(name).config_cls, mine)
    if resize is not None:
        if resize < 32:
            raise UsageError(f"--resize must be at least 32 pixels, got {resize}")
        if "resize" not in fields:
            raise UsageError(f"model '{name}' has no 'resize' option")
        out["resize"] = int(resize)
    if max_keypoints is not None:
        if max_keypoints < 1:
            raise UsageError(f"--max-keypoints must be positive, got {max_keypoints}")
        if "top_k" not in fields:
            raise UsageError(f"model '{name}' has no keypoint limit (top_k) for --max-keypoints")
        out["top_k"] = int(max_keypoints)
    make_config(name, **out)  # types and keys checked before any work
    return out


def spread(items: Sequence[Any], n: Optional[int]) -> list:
    """At most ``n`` items evenly spread over ``items`` (order kept): ``--max-pairs`` takes
    pairs from every sequence instead of the first N of the sorted list (one sequence)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    if n < 1:
        raise UsageError(f"--max-pairs must be positive, got {n}")
    idx = sorted({int(round(i * (len(items) - 1) / max(n - 1, 1))) for i in range(n)}) if n > 1 else [len(items) // 2]
    return [items[i] for i in idx]


def load_models(names: Sequence[str], *, resize: Optional[int] = None, max_keypoints: Optional[int] = None,
                device: Any = None, options: Optional[Sequence[str]] = None) -> list[LoadedModel]:
    """Validate every name and option first (usage errors before any work), then load."""
    from ..registry import load, make_config, model_card

    from ..hub import sha256sum

    specs = [split_spec(s) for s in names]
    for label, n, weights in specs:
        _check_name(n)
        if weights is not None and not Path(weights).is_file():
            raise UsageError(f"weight file not found for '{label}': {weights}")
    labels = {label for label, _, _ in specs}
    for item in options or []:
        head = item.split("=", 1)[0]
        if ":" in head and head.split(":", 1)[0] not in labels:
            raise UsageError(f"--set {item}: no model listed as '{head.split(':', 1)[0]}' (models: {', '.join(sorted(labels))})")
    overrides = {label: model_overrides(n, resize=resize, max_keypoints=max_keypoints, options=options, label=label)
                 for label, n, _ in specs}
    out = []
    for label, n, weights in specs:
        torch.manual_seed(0)
        model = load(n, device=device, weights=weights, **overrides[label])
        card = model_card(n)
        sha = sha256sum(weights) if weights is not None else (card.weights.sha256 if card.weights is not None else None)
        cfg = make_config(n, **overrides[label])
        out.append(LoadedModel(label, model, config_identity(n, cfg, sha), sha))
    return out


def progress_bar(iterable: Iterable, *, total: int, desc: str, enabled: bool = True):
    """tqdm if installed and enabled, else the iterable itself."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="pair", leave=False, dynamic_ncols=True)


def _read(path: Path) -> np.ndarray:
    from ..image import read_image

    return read_image(path)


class _FeatureMemo:
    """Features of the last few images (sparse models): path -> (features, seconds, (W, H))."""

    def __init__(self, size: int = 8):
        self.size = size
        self.items: "OrderedDict[str, tuple]" = OrderedDict()

    def get(self, model: Any, path: Path) -> tuple:
        k = str(path)
        if k in self.items:
            self.items.move_to_end(k)
            return self.items[k]
        img = _read(path)
        t0 = time.perf_counter()
        f = model.extract(img)
        dt = time.perf_counter() - t0
        self.items[k] = (f, dt, (int(img.shape[1]), int(img.shape[0])))
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return self.items[k]


def _predict_one(model: Any, pair: Any, memo: _FeatureMemo) -> tuple[dict, dict]:
    if hasattr(model, "extract") and hasattr(model, "match_features"):
        f0, t0, size0 = memo.get(model, pair.image0)
        f1, t1, size1 = memo.get(model, pair.image1)
        s = time.perf_counter()
        m = model.match_features(f0, f1)
        dt = t0 + t1 + time.perf_counter() - s
        n0, n1 = len(f0), len(f1)
    else:
        img0, img1 = _read(pair.image0), _read(pair.image1)
        size0, size1 = (img0.shape[1], img0.shape[0]), (img1.shape[1], img1.shape[0])
        s = time.perf_counter()
        m = model.match(img0, img1)
        dt = time.perf_counter() - s
        n0 = n1 = -1
    arrays = {
        "points0": m.points0.detach().cpu().numpy().astype(np.float32).reshape(-1, 2),
        "points1": m.points1.detach().cpu().numpy().astype(np.float32).reshape(-1, 2),
        "scores": m.scores.detach().cpu().numpy().astype(np.float32).reshape(-1),
    }
    attrs = {"size0_wh": np.asarray(size0, np.int64), "size1_wh": np.asarray(size1, np.int64),
             "num_keypoints0": int(n0), "num_keypoints1": int(n1), "time_s": float(dt)}
    return arrays, attrs


def predict_pairs(lm: LoadedModel, pairs: Sequence[Any], cache_dir: Any, *, overwrite: bool = False,
                  progress: bool = True) -> tuple[dict, Path]:
    """Predictions for every pair, from the cache or computed (and cached at once).

    Returns:
        ``({pair.key: prediction dict}, cache file path)``; a prediction holds
        ``points0, points1 (K, 2)``, ``scores (K,)``, ``size0_wh``, ``size1_wh``,
        ``num_keypoints0/1`` (-1 for dense matchers) and ``time_s``.
    """
    out: dict = {}
    memo = _FeatureMemo()
    digests: dict = {}

    def digest(p: Path) -> str:
        if p not in digests:
            digests[p] = file_digest([p])
        return digests[p]

    with PredictionCache(cache_dir, lm.identity, overwrite=overwrite) as cache:
        todo = []
        for pair in pairs:
            d = digest(pair.image0) + digest(pair.image1)
            hit = cache.get(pair.key, d)
            if hit is None:
                todo.append((pair, d))
            else:
                out[pair.key] = hit
        if todo:
            log.info("%s: %d of %d pairs to compute (cache %s)", lm.name, len(todo), len(pairs), cache.path)
        torch.manual_seed(0)
        for pair, d in progress_bar(todo, total=len(todo), desc=lm.name, enabled=progress and bool(todo)):
            arrays, attrs = _predict_one(lm.model, pair, memo)
            attrs["digest"] = d
            cache.put(pair.key, arrays, attrs)
            out[pair.key] = {**arrays, **attrs}
        path = cache.path
    return out, path


__all__ = ["LoadedModel", "parse_models", "load_models", "model_overrides", "predict_pairs", "progress_bar", "spread"]
