"""HDF5 files of the pipeline (hloc-compatible, versioned) and their crash-safe writing.

Layouts (the names hloc uses, so hloc / kornia tools read them):

* **features.h5**: one group per image, named by its path relative to the image folder
  (``a/b.jpg`` is group ``a`` / group ``b.jpg``), holding ``keypoints (N, 2)`` float32
  (featmatch/hloc pixels: centre of the top-left pixel at (0, 0)), ``descriptors (D, N)``
  (transposed, as hloc stores them), ``scores (N,)`` float32, ``image_size (2,)`` = (W, H),
  and ``scales`` / ``orientations (N,)`` where the model has them. Dense matchers' merged
  keypoints have no descriptors.
* **matches.h5**: one group per pair ``name0/name1`` (each name with ``/`` replaced by
  ``-``, hloc's ``names_to_pair``), holding ``matches0 (N0,)`` int32 (index into image 1's
  keypoints, -1 = unmatched) and ``matching_scores0 (N0,)`` float16.
* **dense raw matches** (intermediate of dense models): per pair ``points0``, ``points1``
  ``(K, 2)`` float32 and ``scores (K,)`` float32.

Root attributes: ``format`` (features / matches / dense-matches), ``format_version``
(:data:`FORMAT_VERSION`), ``model``, ``config`` (JSON), ``weights_sha256`` and, for
matches, ``features_identity`` (the features file's identity) and, when a learned matcher
(LightGlue) made them, ``matcher_weights_sha256``: a file made by another model, config,
weights or version is refused with a clear error instead of being mixed.

Crash safety (:class:`ShardedH5`): results go to small shard files in ``<out>.parts/``,
each written under a temporary name and renamed when complete; :meth:`ShardedH5.merge`
writes final + shards into a new file and renames it onto the output, then removes the
shards. A run killed at any moment (even ``kill -9``) leaves the previous output intact
and every finished shard on disk; the next run skips what those hold.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from ..errors import FeatmatchError, UsageError

log = logging.getLogger(__name__)

#: Bump when the meaning of stored data changes; files of other versions are refused.
FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]


def h5py():
    try:
        import h5py as _h5py
    except ImportError as e:  # pragma: no cover - h5py is in the sfm/dev/eval extras
        raise FeatmatchError("the pipeline needs h5py: pip install 'featmatch[sfm]'") from e
    return _h5py


def names_to_pair(name0: str, name1: str) -> str:
    """hloc's pair key: ``name0/name1`` with ``/`` inside each name replaced by ``-``."""
    return "/".join((name0.replace("/", "-"), name1.replace("/", "-")))


def identity_attrs(kind: str, model: str, config: Any, weights_sha256: Optional[str], **extra: Any) -> dict:
    """Root attributes that say what made a file (compared on every reopen)."""
    import dataclasses

    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    attrs = {"format": kind, "format_version": FORMAT_VERSION, "model": model,
             "config": json.dumps(cfg, sort_keys=True, default=str), "weights_sha256": weights_sha256 or ""}
    attrs.update({k: (v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True)) for k, v in extra.items()})
    return attrs


def read_attrs(path: PathLike) -> dict:
    """Root attributes of an HDF5 file (a clear error if it is not one)."""
    p = Path(path)
    if not p.is_file():
        raise FeatmatchError(f"file not found: {p}")
    try:
        with h5py().File(p, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                    for k, v in f.attrs.items()}
    except OSError as e:
        raise FeatmatchError(f"{p} is not a readable HDF5 file ({e}); delete it and run again") from e


def check_identity(path: PathLike, found: dict, expected: dict, what: str = "this run") -> None:
    """Refuse a file whose format, version, model, config or weights differ from ``expected``."""
    if found.get("format") != expected["format"]:
        raise UsageError(f"{path} is not a featmatch {expected['format']} file (format '{found.get('format')}')")
    if int(found.get("format_version", -1)) != expected["format_version"]:
        raise UsageError(f"{path} has format version {found.get('format_version')}, this featmatch writes "
                         f"{expected['format_version']}; delete it (or use another output) and run again")
    for key in expected:
        if key in ("format", "format_version"):
            continue
        if str(found.get(key, "")) != str(expected[key]):
            detail = f"'{found.get(key)}' vs '{expected[key]}'" if key == "model" or key.endswith("sha256") else "differs"
            raise UsageError(f"{path} was made with another {key.replace('_', ' ')} ({detail}) than {what}; "
                             "use another output path or delete the file")


def record_groups(f: Any, leaf: str) -> Iterator[str]:
    """Paths of the groups of an open file that hold dataset ``leaf`` (the records)."""
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if name.endswith("/" + leaf) or name == leaf:
            found.append(name[: -len(leaf) - 1])

    f.visititems(visit)
    return iter(found)


def write_record(f: Any, key: str, data: dict) -> None:
    """Write one record (dict of arrays; ``attrs`` dict optional) as group ``key``."""
    if key in f:
        del f[key]
    g = f.create_group(key)
    for k, v in data.items():
        if k == "attrs":
            for ak, av in v.items():
                g.attrs[ak] = av
        elif v is not None:
            g.create_dataset(k, data=np.asarray(v))


def read_record(f: Any, key: str) -> dict:
    g = f[key]
    out = {k: g[k][()] for k in g.keys() if not hasattr(g[k], "keys")}
    out["attrs"] = dict(g.attrs)
    return out


class ShardedH5:
    """An HDF5 output written as atomic shard files and merged atomically.

    Args:
        out: the final file.
        attrs: identity attributes (see :func:`identity_attrs`) every file must carry.
        leaf: the dataset that marks a complete record (``keypoints``, ``matches0``...).
    """

    def __init__(self, out: PathLike, attrs: dict, leaf: str):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.attrs = dict(attrs)
        self.leaf = leaf

    # -- reading what is done -------------------------------------------------------
    def _check(self, path: Path) -> None:
        check_identity(path, read_attrs(path), self.attrs)

    def shard_files(self) -> list[Path]:
        if not self.parts.is_dir():
            return []
        return sorted(p for p in self.parts.glob("shard-*.h5") if not p.name.startswith("."))

    def done(self) -> tuple[set, dict]:
        """Record keys already stored (output + finished shards) and the skipped items
        (``{key: reason}``). Checks every file's identity first."""
        keys: set = set()
        skipped: dict = {}
        files = ([self.out] if self.out.exists() else []) + self.shard_files()
        for p in files:
            self._check(p)
            with h5py().File(p, "r") as f:
                keys.update(record_groups(f, self.leaf))
                skipped.update(json.loads(f.attrs.get("skipped", "{}")))
        return keys, {k: v for k, v in skipped.items() if k not in keys}

    # -- writing -----------------------------------------------------------------------
    def write_shard(self, records: dict, skipped: Optional[dict] = None) -> Path:
        """Write ``{key: record}`` (and skipped ``{key: reason}``) as one new shard file,
        atomically (temporary name, fsync, rename). Safe to call from several processes."""
        self.parts.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.h5"
        tmp = self.parts / f".{name}.tmp"
        try:
            with h5py().File(tmp, "w") as f:
                for k, v in self.attrs.items():
                    f.attrs[k] = v
                f.attrs["skipped"] = json.dumps(skipped or {})
                for key, rec in records.items():
                    write_record(f, key, rec)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.parts / name)
        finally:
            if tmp.exists():
                tmp.unlink()
        return self.parts / name

    def merge(self) -> dict:
        """Fold every shard into the output (new file, renamed on completion), then delete
        the shards. Returns ``{"records": n, "skipped": {...}}``."""
        from ..io import atomic_path

        shards = self.shard_files()
        if not shards and self.out.exists():
            keys, skipped = self.done()
            return {"records": len(keys), "skipped": skipped}
        h = h5py()
        keys_seen: set = set()
        skipped: dict = {}
        with atomic_path(self.out) as tmp:
            with h.File(tmp, "w") as dst:
                for k, v in self.attrs.items():
                    dst.attrs[k] = v
                for src_path in ([self.out] if self.out.exists() else []) + shards:
                    self._check(src_path)
                    with h.File(src_path, "r") as src:
                        skipped.update(json.loads(src.attrs.get("skipped", "{}")))
                        for key in sorted(record_groups(src, self.leaf)):
                            if key in keys_seen:
                                continue
                            keys_seen.add(key)
                            parent = key.rsplit("/", 1)[0] if "/" in key else None
                            if parent is not None:
                                dst.require_group(parent)
                            src.copy(src[key], dst, name=key)
                skipped = {k: v for k, v in skipped.items() if k not in keys_seen}
                dst.attrs["skipped"] = json.dumps(skipped, sort_keys=True)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for p in shards:
            p.unlink(missing_ok=True)
        self.cleanup()
        return {"records": len(keys_seen), "skipped": skipped}

    def cleanup(self) -> None:
        """Remove leftover temporary shards and the parts folder if it is empty."""
        if self.parts.is_dir():
            for p in self.parts.glob(".shard-*.tmp"):
                p.unlink(missing_ok=True)
            try:
                self.parts.rmdir()
            except OSError:
                pass


# ----------------------------------------------------------------------------- readers
def feature_names(path: PathLike) -> list[str]:
    """Image names stored in a features file."""
    with h5py().File(path, "r") as f:
        return sorted(record_groups(f, "keypoints"))


def read_features(f: Any, name: str) -> dict:
    """One image's record from an open features file; ``descriptors`` back to ``(N, D)``."""
    if name not in f:
        raise UsageError(f"image '{name}' has no features in {f.filename}; run `featmatch extract` on its folder")
    rec = read_record(f, name)
    if "descriptors" in rec:
        rec["descriptors"] = rec["descriptors"].T
    return rec


def skipped_of(path: PathLike) -> dict:
    with h5py().File(path, "r") as f:
        return json.loads(f.attrs.get("skipped", "{}"))


def iter_pairs_matches(path: PathLike, pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name0, name1, matches0, scores0)`` for each pair (missing pairs raise)."""
    with h5py().File(path, "r") as f:
        for a, b in pairs:
            key = names_to_pair(a, b)
            if key + "/matches0" not in f:
                raise UsageError(f"pair {a} {b} is not in {path}; run `featmatch match` with this pairs file")
            yield a, b, f[key]["matches0"][()], f[key]["matching_scores0"][()]
