"""Step 2: which image pairs to match, written as hloc's ``pairs.txt`` (``name0 name1`` a line).

* :func:`exhaustive`: every pair (``n (n - 1) / 2``).
* :func:`sequential`: each image with the next ``window`` ones in name order (video).
* :func:`from_list`: a pairs file checked against the known images.
* :func:`retrieval`: the ``num`` most similar images of each, by a global descriptor
  aggregated from the local features themselves (VLAD: residuals to a k-means codebook
  built on the collection's descriptors, intra-normalised, signed square root, L2,
  then centred on the collection's mean and L2-normalised again), so no extra weights
  are needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import FeatmatchError, UsageError

log = logging.getLogger(__name__)

Pair = tuple[str, str]


def _dedup(pairs: Iterable[Pair]) -> list[Pair]:
    seen: set = set()
    out = []
    for a, b in pairs:
        if a == b:
            continue
        key = (a, b) if a < b else (b, a)
        if key in seen:
            continue
        seen.add(key)
        out.append((a, b))
    return out


def exhaustive(names: Sequence[str]) -> list[Pair]:
    """All ``n (n - 1) / 2`` pairs, in name order."""
    names = sorted(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential(names: Sequence[str], window: int = 5) -> list[Pair]:
    """Each image with the ``window`` images after it (sorted names: frame order)."""
    if not (isinstance(window, int) and window >= 1):
        raise UsageError(f"--window must be a positive integer, got {window!r}")
    names = sorted(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(i + 1 + window, len(names)))]


def read_pairs(path: Union[str, os.PathLike]) -> list[Pair]:
    """Pairs of a text file: ``name0 name1`` per line; ``#`` comments and blank lines skipped."""
    p = Path(path)
    if not p.is_file():
        raise FeatmatchError(f"pairs file not found: {p}")
    pairs = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise UsageError(f"{p}:{i}: expected 'name0 name1', got '{line}'")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise UsageError(f"pairs file {p} lists no pair")
    return pairs


def from_list(path: Union[str, os.PathLike], names: Optional[Sequence[str]] = None) -> list[Pair]:
    """Read a pairs file and check that every image it names is known (``names``)."""
    pairs = _dedup(read_pairs(path))
    if names is not None:
        check_pairs(pairs, names, str(path))
    return pairs


def check_pairs(pairs: Sequence[Pair], names: Iterable[str], source: str = "pairs") -> None:
    """Raise one line naming the images of ``pairs`` missing from ``names``."""
    known = set(names)
    missing = sorted({n for pair in pairs for n in pair if n not in known})
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UsageError(f"{source} names {len(missing)} images that are not in the collection: "
                         f"{', '.join(missing[:3])}{more} (names are paths relative to the image folder)")


def write_pairs(pairs: Sequence[Pair], path: Union[str, os.PathLike]) -> Path:
    """Write hloc's ``pairs.txt`` atomically."""
    from ..io import atomic_path

    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return out


# ----------------------------------------------------------------------------- retrieval
def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine) with k-means++ seeding. Shape: x ``(N, D)`` -> ``(k, D)``."""
    rng = np.random.default_rng(seed)
    n = len(x)
    k = min(k, n)
    centres = [x[rng.integers(n)]]
    d2 = np.full(n, np.inf)
    for _ in range(1, k):
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x[rng.choice(n, p=p)])
    c = np.stack(centres)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                v = members.sum(0)
                c[j] = v / max(np.linalg.norm(v), 1e-12)
    return c


def vlad(desc: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """VLAD of one image: summed residuals per nearest centre, intra-normalised, signed
    square root, L2. Shape: desc ``(N, D)``, codebook ``(k, D)`` -> ``(k * D,)``."""
    k, d = codebook.shape
    v = np.zeros((k, d), np.float64)
    if len(desc):
        assign = np.argmax(desc @ codebook.T, axis=1)
        np.add.at(v, assign, desc - codebook[assign])
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    v = np.sign(v) * np.sqrt(np.abs(v))
    v = v.reshape(-1)
    return v / max(np.linalg.norm(v), 1e-12)


def _unit(d: np.ndarray) -> np.ndarray:
    d = d.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def global_descriptors(features: Union[str, os.PathLike], names: Optional[Sequence[str]] = None, *,
                       clusters: int = 32, sample: int = 100_000, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """VLAD global descriptors of the images of a features file.

    The codebook is built by spherical k-means on up to ``sample`` local descriptors drawn
    evenly from the collection. Binary (uint8) descriptors are unpacked to +-1 first.

    Returns:
        names and ``(n, clusters * D)`` unit vectors.
    """
    from . import store

    rng = np.random.default_rng(seed)
    with store.h5py().File(features, "r") as f:
        names = list(names) if names is not None else sorted(store.record_groups(f, "keypoints"))
        descs = []
        for n in names:
            rec = f[n] if n in f else None
            if rec is None or "descriptors" not in rec:
                raise UsageError(f"{features} has no descriptors for '{n}'; retrieval needs a sparse model's features")
            d = rec["descriptors"][()].T
            descs.append(_unit(np.unpackbits(d, axis=1).astype(np.float32) * 2 - 1 if d.dtype == np.uint8 else d))
    per = max(1, sample // max(1, len(descs)))
    pool = np.concatenate([d[rng.permutation(len(d))[:per]] for d in descs if len(d)] or [np.zeros((0, 1))])
    if len(pool) < clusters:
        raise FeatmatchError(f"too few local descriptors ({len(pool)}) in {features} to build a {clusters}-word codebook")
    codebook = kmeans(pool.astype(np.float64), clusters, seed=seed)
    g = np.stack([vlad(d.astype(np.float64), codebook) for d in descs])
    if len(g) > 2:  # centre on the collection: removes the component every image shares
        g = g - g.mean(0)
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return names, g


def retrieval(features: Union[str, os.PathLike], num: int = 10, names: Optional[Sequence[str]] = None, *,
              clusters: int = 32, seed: int = 0) -> list[Pair]:
    """Each image with its ``num`` most similar others (cosine of VLAD vectors), deduplicated."""
    if not (isinstance(num, int) and num >= 1):
        raise UsageError(f"--num must be a positive integer, got {num!r}")
    names, g = global_descriptors(features, names, clusters=clusters, seed=seed)
    sim = g @ g.T
    np.fill_diagonal(sim, -np.inf)
    pairs = []
    for i, n in enumerate(names):
        for j in np.argsort(-sim[i], kind="stable")[: min(num, len(names) - 1)]:
            pairs.append((n, names[int(j)]) if n < names[int(j)] else (names[int(j)], n))
    return sorted(_dedup(pairs))
