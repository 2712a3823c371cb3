"""Step 3: matches of every pair into ``matches.h5`` (hloc's ``matches0`` layout).

* **Sparse models** (:func:`match_features`): extract once, match many. Each pair's
  stored features are matched with the model's configured matcher: mutual nearest
  neighbour with its thresholds, or a learned matcher with its own weights (LightGlue of
  ``aliked.n16+lightglue``, ``xfeat+lighterglue``; the keypoints are normalised by the
  stored ``image_size``); ``matcher.*`` options can be overridden and ``matcher="lightglue"``
  picks another matcher for the stored features.
* **Dense models** (:func:`match_dense`: XFeat*, LoFTR, ...): each pair of images is
  matched by the model, the raw point pairs are stored per pair (resumable), and then the
  points of every image are **merged into per-image keypoints** so that tracks form across
  pairs: a point is snapped to the cell of side ``tolerance`` pixels that contains it
  (``floor(p / tolerance)``); all points of an image in one cell become one keypoint,
  placed at their score-weighted mean, so a keypoint is at most ``tolerance * sqrt(2)``
  pixels from any point it replaces. Within a pair, a keypoint keeps only its best-scoring
  match (one-to-one). The merged keypoints go to a features file (no descriptors) and
  the indices to ``matches.h5``; both are rebuilt from the raw matches on each run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import ImageReadError, UsageError
from . import store
from .engines import ModelJob, run_shards, split
from .pairs import Pair, check_pairs

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- sparse
def matching_model(features_attrs: dict, matcher: Optional[str] = None, features: Any = "the features file") -> str:
    """The registered model whose matcher matches a features file: the file's own model, or
    with ``matcher`` the same extractor with that matcher (``"lightglue"`` turns
    ``aliked.n16`` features into ``aliked.n16+lightglue``; ``"mnn"`` goes back to mutual
    nearest neighbours).

    Raises:
        UsageError: no such matcher for these features' extractor (the message lists the
            extractors that have it).
    """
    from ..registry import _with_matcher, list_models

    model = features_attrs["model"]
    if matcher is None:
        return model
    try:
        return _with_matcher(model, matcher)
    except UsageError:
        base = model.split("+")[0]
        fits = [n for n in list_models() if n.endswith("+" + str(matcher).lower())]
        if not fits:
            raise
        raise UsageError(f"{features} holds '{base}' features but no {matcher} weights were trained for them "
                         f"({matcher} exists for {', '.join(n.split('+')[0] for n in fits)}); extract with one of "
                         "those or match with mnn") from None


def _matcher_config(features_attrs: dict, overrides: Optional[dict], model: Optional[str] = None) -> Any:
    """The config of ``model`` (default: the features' model) with the stored extractor
    options and ``overrides`` of the matcher; another model than the file's starts from its
    own matcher defaults."""
    from ..registry import make_config

    cfg_dict = json.loads(features_attrs["config"])
    model = model or features_attrs["model"]
    if model != features_attrs["model"]:
        cfg_dict.pop("matcher", None)
    for k, v in (overrides or {}).items():
        if k != "matcher":
            raise UsageError(f"only matcher options can be changed when matching stored features, got '{k}' "
                             "(use --set matcher.ratio=0.8 and the like)")
        if not isinstance(v, dict):
            raise UsageError(f"matcher options are a dict (matcher.KEY=VALUE), got matcher={v!r}; "
                             "choose the matcher itself with matcher='lightglue' / --set matcher=lightglue")
        cfg_dict["matcher"] = {**cfg_dict.get("matcher", {}), **v}
    return make_config(model, **cfg_dict)


def _build_matcher(cfg: Any) -> Any:
    from ..models.nn_matcher import MNNConfig, MutualNN

    m = getattr(cfg, "matcher", None)
    if not isinstance(m, MNNConfig):
        raise UsageError(f"{type(cfg).__name__} has no nearest-neighbour matcher to match stored features with")
    return MutualNN(m)


def is_learned(model: str) -> bool:
    """``model`` matches with a learned matcher that has its own weights (LightGlue)."""
    from ..registry import model_card

    return model_card(model).matcher_weights is not None


def _missing_matcher_weights(model: str) -> Exception:
    from ..errors import WeightsNotFoundError
    from ..hub import home
    from ..registry import model_card

    spec = model_card(model).matcher_weights
    msg = f"the matcher weights of '{model}' ({spec.filename}) are not in {home()}; run: featmatch download {model}"
    return WeightsNotFoundError(msg + " (or pass matcher_weights=PATH)", cli=msg + " (or pass --matcher-weights PATH)")


def matcher_weights_sha256(model: str, matcher_weights: Optional[str] = None) -> str:
    """sha256 of the learned matcher's weights: of ``matcher_weights`` when given, else of
    the cached official file (checked against the card by :func:`featmatch.hub.resolve`)."""
    from .. import hub
    from ..errors import WeightsNotFoundError
    from ..registry import model_card

    if matcher_weights is not None:
        p = Path(matcher_weights)
        if not p.is_file():
            raise WeightsNotFoundError(f"matcher weight file not found: {p}")
        return hub.sha256sum(p)
    spec = model_card(model).matcher_weights
    try:
        hub.resolve(spec, name=model)
    except WeightsNotFoundError:
        raise _missing_matcher_weights(model) from None
    return spec.sha256


def load_learned_matcher(model: str, cfg: Any, matcher_weights: Optional[str] = None,
                         device: Optional[str] = None) -> Any:
    """The learned matcher of ``model`` configured by ``cfg.matcher``, with its weights."""
    import dataclasses

    from ..errors import WeightsNotFoundError
    from ..registry import load_matcher

    try:
        return load_matcher(model, weights=matcher_weights, device=device, matcher=dataclasses.asdict(cfg.matcher))
    except WeightsNotFoundError:
        if matcher_weights is not None:
            raise
        raise _missing_matcher_weights(model) from None


def _features_obj(rec: dict, extractor: Optional[str] = None, device: Any = None) -> Any:
    import torch

    from ..types import Features

    d = rec["descriptors"]
    f = Features(torch.from_numpy(rec["keypoints"]), torch.from_numpy(rec["scores"]),
                 torch.from_numpy(np.ascontiguousarray(d if d.dtype == np.uint8 else d.astype(np.float32))),
                 tuple(int(v) for v in rec["image_size"]), extractor=extractor)
    return f if device is None or torch.device(device).type == "cpu" else f.to(device)


@dataclass
class SparseMatchJob:
    """Match one shard of pairs from a features file (picklable: the matcher is built on
    first use, once per job object, and never pickled).

    ``model``: the matching model when it is not the features' own (another matcher);
    ``matcher_weights``, ``device``, ``batch_size`` (pairs per forward): learned matchers."""

    features: str
    out: str
    attrs: dict
    features_attrs: dict
    overrides: dict
    model: Optional[str] = None
    matcher_weights: Optional[str] = None
    device: Optional[str] = None
    batch_size: int = 1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_matcher", None)
        return state

    def load(self) -> Any:
        matcher = self.__dict__.get("_matcher")
        if matcher is None:
            model = self.model or self.features_attrs["model"]
            cfg = _matcher_config(self.features_attrs, self.overrides, model)
            if is_learned(model):
                matcher = load_learned_matcher(model, cfg, self.matcher_weights, self.device)
            else:
                matcher = _build_matcher(cfg)
            self._matcher = matcher
        return matcher

    def run(self, pairs: list, progress: Any = None) -> int:
        matcher = self.load()
        learned = hasattr(matcher, "match_list")
        device = matcher.device if learned else None
        extractor = self.features_attrs["model"].split("+")[0]
        step = self.batch_size if learned else 1
        records = {}
        cache: dict = {}
        with store.h5py().File(self.features, "r") as f:
            def get(name: str) -> Any:
                if name not in cache:
                    if len(cache) > 64:
                        cache.pop(next(iter(cache)))
                    cache[name] = _features_obj(store.read_features(f, name), extractor, device)
                return cache[name]

            for i in range(0, len(pairs), step):
                chunk = pairs[i:i + step]
                f0s, f1s = [get(a) for a, _ in chunk], [get(b) for _, b in chunk]
                ms = matcher.match_list(f0s, f1s) if learned else [matcher(f0s[0], f1s[0])]
                for (a, b), f0, m in zip(chunk, f0s, ms):
                    m0 = np.full(len(f0), -1, np.int32)
                    sc = np.zeros(len(f0), np.float16)
                    i0 = m.indices0.cpu().numpy()
                    m0[i0] = m.indices1.cpu().numpy()
                    sc[i0] = m.scores.cpu().float().numpy().astype(np.float16)
                    records[store.names_to_pair(a, b)] = {"matches0": m0, "matching_scores0": sc}
                if progress is not None:
                    progress(len(chunk))
        store.ShardedH5(self.out, self.attrs, "matches0").write_shard(records)
        return len(pairs)


def matches_attrs(features_attrs: dict, matcher_cfg: Any, model: Optional[str] = None,
                  matcher_sha256: Optional[str] = None) -> dict:
    """Identity of a matches file: the matching model, its matcher config, the extractor's
    weights, the features file's identity and, for a learned matcher, its weights' sha256."""
    ident = {k: features_attrs[k] for k in ("model", "config", "weights_sha256", "format_version")}
    extra: dict = {"features_identity": ident}
    if matcher_sha256 is not None:
        extra["matcher_weights_sha256"] = matcher_sha256
    return store.identity_attrs("matches", model or features_attrs["model"], getattr(matcher_cfg, "matcher", None),
                                features_attrs.get("weights_sha256"), **extra)


def match_features(features: PathLike, pairs: Sequence[Pair], out: PathLike, *, matcher: Optional[str] = None,
                   overrides: Optional[dict] = None, matcher_weights: Optional[str] = None,
                   device: Optional[str] = None, batch_size: int = 1, shard_size: int = 256, engine: str = "local",
                   ray_address: Optional[str] = None, progress: bool = True) -> Path:
    """Match the stored features of every pair into ``out`` (resumable; see module doc).

    Features are matched with the matcher of the model that extracted them: mutual nearest
    neighbours, or the model's learned matcher (``aliked.n16+lightglue``: LightGlue with the
    official weights, loaded once per job / Ray task).

    Args:
        features: a features file written by :func:`featmatch.pipeline.extract`.
        pairs: ``(name0, name1)`` pairs; every name must be in ``features``.
        matcher: another matcher than the features' model's, by name: ``"lightglue"``
            (``aliked.n16`` features are matched as ``aliked.n16+lightglue``), ``"mnn"``.
        overrides: matcher options, e.g. ``{"matcher": {"ratio": 0.8}}`` or
            ``{"matcher": {"filter_threshold": 0.2}}``; ``{"matcher": "lightglue"}`` is the
            same as ``matcher="lightglue"``.
        matcher_weights: a learned matcher's weight file instead of the cached official one.
        device: learned matchers: torch device (None / ``"cpu"``, ``"auto"``, ``"cuda"``...).
        batch_size: learned matchers: pairs padded into one forward pass (1 on CPU, where
            padded batches were slower; larger batches are for GPUs).

    Raises:
        UsageError: not a features file, dense keypoints, unknown pair names, a matcher
            these features have no weights for, bad options.
        WeightsNotFoundError: the learned matcher's weights are not cached (names
            ``featmatch download MODEL``).
    """
    fa = store.read_attrs(features)
    if fa.get("format") != "features":
        raise UsageError(f"{features} is not a featmatch features file (format '{fa.get('format')}')")
    if int(fa.get("format_version", -1)) != store.FORMAT_VERSION:
        raise UsageError(f"{features} has format version {fa.get('format_version')}, this featmatch reads "
                         f"{store.FORMAT_VERSION}; extract the features again")
    from ..device import resolve_device
    from ..registry import get_entry

    if get_entry(fa["model"]).card.kind != "sparse":  # unknown model: clear error too
        raise UsageError(f"{features} holds the merged keypoints of dense model '{fa['model']}' (no descriptors); "
                         "match dense models with `featmatch match --model M --images DIR --pairs P`")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    overrides = dict(overrides or {})
    if isinstance(overrides.get("matcher"), str):  # {"matcher": "lightglue"}, as featmatch.load takes it
        picked = overrides.pop("matcher")
        if matcher is not None and matcher != picked:
            raise UsageError(f"matcher given twice ('{matcher}' and '{picked}'); give it once")
        matcher = picked
    model = matching_model(fa, matcher, features)
    cfg = _matcher_config(fa, overrides, model)
    sha = None
    learned = is_learned(model)
    if learned:
        resolve_device(device)  # a missing device is an error before any work
        sha = matcher_weights_sha256(model, matcher_weights)
    else:
        if matcher_weights is not None:
            raise UsageError(f"matcher_weights is for learned matchers; '{model}' matches with mutual nearest "
                             "neighbours (choose one with matcher='lightglue')")
        _build_matcher(cfg)
    check_pairs(pairs, store.feature_names(features), f"the pairs (features file {features})")
    attrs = matches_attrs(fa, cfg, model, sha)
    sh = store.ShardedH5(out, attrs, "matches0")
    done, _ = sh.done()
    todo = [p for p in pairs if store.names_to_pair(*p) not in done]
    log.info("match: %d pairs, %d already done", len(pairs), len(pairs) - len(todo))
    job = SparseMatchJob(str(features), str(out), attrs, fa, overrides, model, matcher_weights, device, batch_size)
    if todo and engine == "local":
        job.load()  # fail fast (options or weights that do not fit) before the progress bar
    elif todo and learned:  # Ray: the same check once here; every task loads its own matcher
        load_learned_matcher(model, cfg, matcher_weights)
    run_shards(job, split(todo, shard_size), engine=engine, desc=f"match {model}", unit="pair",
               progress=progress, ray_address=ray_address)
    sh.merge()
    return Path(out)


# ----------------------------------------------------------------------------- dense
@dataclass
class DenseMatchJob(ModelJob):
    """Match one shard of image pairs with a dense model; raw points per pair (picklable)."""

    def run(self, pairs: list, progress: Any = None) -> int:
        from ..image import to_tensor

        net = self.load()
        records, skipped = {}, {}
        cache: dict = {}

        def get(name: str) -> Any:
            if name not in cache:
                if len(cache) > 8:
                    cache.pop(next(iter(cache)))
                cache[name] = to_tensor(os.path.join(self.images, name), name=name)
            return cache[name]

        for a, b in pairs:
            key = store.names_to_pair(a, b)
            try:
                x0, x1 = get(a), get(b)
            except (ImageReadError, UsageError) as e:
                skipped[key] = str(e)
            else:
                m = net.match(x0, x1)
                records[key] = {"points0": m.points0.cpu().float().numpy(), "points1": m.points1.cpu().float().numpy(),
                                "scores": m.scores.cpu().float().numpy(),
                                "attrs": {"image0": a, "image1": b,
                                          "size0": [int(x0.shape[-1]), int(x0.shape[-2])],
                                          "size1": [int(x1.shape[-1]), int(x1.shape[-2])]}}
            if progress is not None:
                progress(1)
        store.ShardedH5(self.out, self.attrs, "points0").write_shard(records, skipped)
        return len(pairs)


def merge_dense(raw: dict, tolerance: float = 1.0) -> tuple[dict, dict]:
    """Merge raw dense matches into per-image keypoints and hloc matches (see module doc).

    Args:
        raw: ``{(name0, name1): (points0 (K, 2), points1 (K, 2), scores (K,), size0, size1)}``.
        tolerance: cell size in pixels.

    Returns:
        ``features {name: record}``, ``matches {(name0, name1): (matches0, scores0)}``.
    """
    if not tolerance > 0:
        raise UsageError(f"merge tolerance must be > 0 pixels, got {tolerance!r}")
    cells: dict = {}  # name -> {cell: index}
    acc: dict = {}  # name -> lists of (sum_w * p, sum_w, max score)
    sizes: dict = {}
    assigned: dict = {}
    for (a, b), (p0, p1, sc, s0, s1) in raw.items():
        sizes.setdefault(a, s0)
        sizes.setdefault(b, s1)
        ids = []
        for name, pts in ((a, p0), (b, p1)):
            table = cells.setdefault(name, {})
            sums = acc.setdefault(name, [[], [], []])
            keys = np.floor(pts / tolerance).astype(np.int64)
            idx = np.empty(len(pts), np.int64)
            w = np.maximum(sc.astype(np.float64), 1e-6)
            for i, (kx, ky) in enumerate(keys.tolist()):
                j = table.get((kx, ky))
                if j is None:
                    j = table[(kx, ky)] = len(sums[0])
                    sums[0].append(np.zeros(2))
                    sums[1].append(0.0)
                    sums[2].append(0.0)
                sums[0][j] = sums[0][j] + w[i] * pts[i]
                sums[1][j] += w[i]
                sums[2][j] = max(sums[2][j], float(sc[i]))
                idx[i] = j
            ids.append(idx)
        assigned[(a, b)] = (ids[0], ids[1], sc)
    features = {}
    for name, (ps, ws, ms) in acc.items():
        kp = (np.array(ps).reshape(-1, 2) / np.array(ws).reshape(-1, 1)).astype(np.float32)
        features[name] = {"keypoints": kp, "scores": np.asarray(ms, np.float32),
                          "image_size": np.asarray(sizes[name], np.int64)}
    matches = {}
    for (a, b), (i0, i1, sc) in assigned.items():
        m0 = np.full(len(features[a]["keypoints"]), -1, np.int32)
        s0 = np.zeros(len(m0), np.float16)
        used1: set = set()
        for k in np.argsort(-sc, kind="stable"):  # best first: one-to-one
            if m0[i0[k]] == -1 and int(i1[k]) not in used1:
                m0[i0[k]] = i1[k]
                s0[i0[k]] = sc[k]
                used1.add(int(i1[k]))
        matches[(a, b)] = (m0, s0)
    return features, matches


def match_dense(images: PathLike, pairs: Sequence[Pair], out: PathLike, features_out: PathLike, model: str, *,
                overrides: Optional[dict] = None, weights: Optional[str] = None, device: Optional[str] = None,
                tolerance: float = 1.0, shard_size: int = 16, engine: str = "local",
                ray_address: Optional[str] = None, progress: bool = True) -> tuple[Path, Path]:
    """Match image pairs with a dense model, then merge keypoints per image.

    Raw matches are kept in ``<out>.raw.h5`` (resumable); ``features_out`` (merged
    keypoints) and ``out`` (hloc matches) are rebuilt from them atomically.

    Returns:
        ``(features_out, out)``.
    """
    from ..io import atomic_path
    from ..registry import get_entry
    from .extraction import list_images, model_identity

    if get_entry(model).card.kind != "dense":
        raise UsageError(f"model '{model}' is sparse: run `featmatch extract` then `featmatch match --features`")
    names, _ = list_images(images)
    check_pairs(pairs, names, "the pairs")
    overrides = dict(overrides or {})
    cfg, sha = model_identity(model, overrides, weights)
    attrs = store.identity_attrs("dense-matches", model, cfg, sha)
    raw_path = Path(str(out) + ".raw.h5")
    sh = store.ShardedH5(raw_path, attrs, "points0")
    done, _ = sh.done()
    todo = [p for p in pairs if store.names_to_pair(*p) not in done]
    log.info("dense match: %d pairs, %d already done", len(pairs), len(pairs) - len(todo))
    job = DenseMatchJob(model, overrides, weights, device, str(images), str(raw_path), attrs)
    if todo and engine == "local":
        job.load()
    run_shards(job, split(todo, shard_size), engine=engine, desc=f"match {model}", unit="pair",
               progress=progress, ray_address=ray_address)
    info = sh.merge()
    if info["skipped"]:
        log.warning("%d pairs could not be matched (unreadable images): %s", len(info["skipped"]),
                    ", ".join(list(info["skipped"])[:3]))
    raw = {}
    with store.h5py().File(raw_path, "r") as f:
        for a, b in pairs:
            key = store.names_to_pair(a, b)
            if key not in f:
                continue
            g = f[key]
            raw[(a, b)] = (g["points0"][()], g["points1"][()], g["scores"][()],
                           list(g.attrs["size0"]), list(g.attrs["size1"]))
    feats, matches = merge_dense(raw, tolerance)
    fattrs = store.identity_attrs("features", model, cfg, sha, merge_tolerance=float(tolerance))
    with atomic_path(features_out) as tmp:
        with store.h5py().File(tmp, "w") as f:
            for k, v in fattrs.items():
                f.attrs[k] = v
            f.attrs["skipped"] = "{}"
            for name, rec in feats.items():
                store.write_record(f, name, rec)
    mattrs = store.identity_attrs("matches", model, cfg, sha, features_identity={
        k: fattrs[k] for k in ("model", "config", "weights_sha256", "format_version")})
    with atomic_path(out) as tmp:
        with store.h5py().File(tmp, "w") as f:
            for k, v in mattrs.items():
                f.attrs[k] = v
            f.attrs["skipped"] = "{}"
            for (a, b), (m0, s0) in matches.items():
                store.write_record(f, store.names_to_pair(a, b), {"matches0": m0, "matching_scores0": s0})
    return Path(features_out), Path(out)


def check_matches_for(matches: PathLike, features: PathLike) -> None:
    """Refuse a matches file computed from other features (model, config or weights)."""
    ma, fa = store.read_attrs(matches), store.read_attrs(features)
    if ma.get("format") != "matches":
        raise UsageError(f"{matches} is not a featmatch matches file")
    ident = json.loads(ma.get("features_identity", "{}"))
    for k in ("model", "config", "weights_sha256"):
        if str(ident.get(k)) != str(fa.get(k)):
            raise UsageError(f"{matches} was computed from other features than {features} ({k} differs); "
                             "match again with these features")
