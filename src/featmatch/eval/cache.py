"""HDF5 prediction cache: the first loop of every benchmark.

One file per model and configuration, ``<dir>/<model>-<hash>.h5``, where the hash covers
the model name, its full config (including ``resize`` / ``top_k``), the weights' sha256,
the software versions (featmatch's release *and* a digest of its source files, torch,
OpenCV) and :data:`CACHE_VERSION`; estimator, thresholds and metrics are *not* part of it, so
re-scoring never recomputes matches. Inside, one group per pair (``pairs/<quoted key>``)
holding ``points0``, ``points1`` ``(K, 2)`` float32 and ``scores (K,)``, with attributes
``digest`` (sha1 of both image files: a changed image is recomputed), image sizes,
keypoint counts and the matching time.

Written resumably: each pair is flushed as soon as it is computed and marked ``done``
last; on reopening, groups without the mark (a run killed mid-write) are dropped and a
file HDF5 cannot open is moved aside as ``*.corrupt`` (with a warning) and rebuilt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import numpy as np

from ..errors import FeatmatchError

log = logging.getLogger(__name__)

#: Bump when the stored predictions change meaning (invalidates every cache file).
CACHE_VERSION = 1


class CacheError(FeatmatchError):
    """The prediction cache cannot be used (locked by another run, not writable, ...)."""


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """First 12 hex digits of the sha256 over featmatch's own ``.py`` files (relative path
    and content, sorted): an edited checkout (same version number, changed code) must not
    reuse predictions made by the old code."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def software_versions() -> dict:
    """Versions that change predictions: featmatch (release and source digest), torch and
    OpenCV (classical models)."""
    import cv2
    import torch

    from .. import __version__

    return {"featmatch": __version__, "featmatch_source": source_digest(),
            "torch": torch.__version__.split("+")[0], "opencv": cv2.__version__}


def config_identity(name: str, config: Any, weights_sha256: Optional[str]) -> dict:
    """What a cached prediction depends on (JSON-able): model, config, weights and the
    software versions (a new OpenCV or featmatch release recomputes)."""
    return {"model": name, "config": _jsonable(config), "weights_sha256": weights_sha256,
            "versions": software_versions(), "cache_version": CACHE_VERSION}


def config_hash(identity: dict) -> str:
    """First 12 hex digits of the sha256 of the canonical JSON of ``identity``."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise FeatmatchError("the evaluation cache needs h5py: pip install 'featmatch[eval]'") from None
    return h5py


class PredictionCache:
    """Per-pair predictions of one model configuration in one HDF5 file.

    Use as a context manager; :meth:`get` returns ``None`` for a missing or stale pair.
    """

    def __init__(self, directory: Any, identity: dict, *, overwrite: bool = False):
        self.identity = identity
        self.hash = config_hash(identity)
        safe = identity["model"].replace("/", "_")
        self.path = Path(directory) / f"{safe}-{self.hash}.h5"
        self.overwrite = overwrite
        self._f = None

    def __enter__(self) -> "PredictionCache":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        h5py = _h5py()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.overwrite and self.path.exists():
            self.path.unlink()
        try:
            self._f = h5py.File(self.path, "a")
        except (OSError, BlockingIOError) as e:
            msg = str(e)
            if "lock" in msg.lower():
                raise CacheError(f"prediction cache {self.path} is in use by another run; wait for it or use another --output") from None
            if not self.path.exists():
                raise CacheError(f"cannot create prediction cache {self.path}: {msg.splitlines()[0]}") from None
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.warning("prediction cache %s cannot be opened (%s); moved to %s and recomputing",
                        self.path, msg.splitlines()[0], aside.name)
            os.replace(self.path, aside)
            self._f = h5py.File(self.path, "a")
        f = self._f
        if "identity" not in f.attrs:
            f.attrs["identity"] = json.dumps(self.identity, sort_keys=True)
        grp = f.require_group("pairs")
        stale = [k for k, g in grp.items() if not g.attrs.get("done", False)]
        for k in stale:  # half-written by a killed run
            del grp[k]
        if stale:
            log.info("dropped %d unfinished pairs from %s", len(stale), self.path)
        f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    @staticmethod
    def _name(key: str) -> str:
        return quote(key, safe="")

    def __contains__(self, key: str) -> bool:
        return self._name(key) in self._f["pairs"]

    def __len__(self) -> int:
        return len(self._f["pairs"])

    def get(self, key: str, digest: Optional[str] = None) -> Optional[dict]:
        """The stored prediction of ``key`` (``None`` if absent or its digest differs)."""
        grp = self._f["pairs"]
        name = self._name(key)
        if name not in grp:
            return None
        g = grp[name]
        if digest is not None and g.attrs.get("digest") != digest:
            return None
        out: dict = {k: g[k][()] for k in g.keys()}
        out.update({k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in g.attrs.items()})
        return out

    def put(self, key: str, arrays: dict, attrs: dict) -> None:
        """Store one pair (replacing an older entry) and flush it to disk."""
        grp = self._f["pairs"]
        name = self._name(key)
        if name in grp:
            del grp[name]
        g = grp.create_group(name)
        for k, v in arrays.items():
            g.create_dataset(k, data=np.asarray(v))
        for k, v in attrs.items():
            g.attrs[k] = v
        g.attrs["key"] = key
        g.attrs["done"] = True  # last: marks the group complete
        self._f.flush()


__all__ = ["PredictionCache", "CacheError", "config_identity", "config_hash", "CACHE_VERSION"]
