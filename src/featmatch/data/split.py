"""A fixed, seeded train/validation split of a photo folder, by file.

Each file gets a score ``sha256(f"{seed}:{relative path}")``; the ``ceil(fraction * n)``
files with the smallest scores are held out. The split depends only on the seed and the
relative paths: not on the listing order, the machine or the folder's location, and adding
photos to the folder moves no other photo across the split (except at the boundary of the
count). ``"tenth"`` is the earlier rule (every tenth file of the sorted list), kept so older
runs can be reproduced.

The split of a run is written to ``RUN/split.json`` (relative paths) and read back on
``--resume``, so a resumed run validates on the same photos even if the folder changed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Union

from ..errors import FeatmatchError, UsageError
from ..io import atomic_path

SPLIT_FILE = "split.json"


def parse_val_split(text: Union[str, float]) -> Union[str, float]:
    """``"tenth"`` or a fraction in (0, 0.5]; a :class:`UsageError` otherwise."""
    if isinstance(text, str) and text.strip().lower() == "tenth":
        return "tenth"
    try:
        f = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--val-split must be a fraction like 0.1 or 'tenth', got '{text}'") from None
    if not 0 < f <= 0.5:
        raise UsageError(f"--val-split must be in (0, 0.5], got {f}")
    return f


def _score(seed: int, rel: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{rel}".encode()).digest()[:8], "big")


def split_files(files: list, root: Union[str, Path], val: Union[str, float] = 0.1,
                seed: int = 0) -> tuple[list, list]:
    """``(train, val)`` lists of ``files`` (paths under ``root``), each in sorted order.

    With a single file both lists hold it (a smoke run, not a real validation).
    """
    root = Path(root)
    files = sorted(Path(f) for f in files)
    if not files:
        raise FeatmatchError(f"no images to split in {root}")
    if len(files) == 1:
        return files, files
    if val == "tenth":
        held = set(files[::10])
    else:
        k = min(max(1, math.ceil(float(val) * len(files))), len(files) - 1)
        ranked = sorted(files, key=lambda f: (_score(seed, f.relative_to(root).as_posix()), f.as_posix()))
        held = set(ranked[:k])
    return [f for f in files if f not in held], [f for f in files if f in held]


def write_split(path: Union[str, Path], root: Union[str, Path], train: list, val: list, rule: Union[str, float],
                seed: int) -> None:
    """Write the split (relative paths) to ``path`` atomically."""
    root = Path(root)
    doc = {"rule": rule, "seed": seed, "train_count": len(train), "val_count": len(val),
           "val": [Path(f).relative_to(root).as_posix() for f in val],
           "train": [Path(f).relative_to(root).as_posix() for f in train]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n")


def read_split(path: Union[str, Path], root: Union[str, Path]) -> tuple[list, list]:
    """The ``(train, val)`` file lists of a written split, resolved under ``root``; a clear
    error if the file is unreadable or a listed photo is missing."""
    root = Path(root)
    try:
        doc = json.loads(Path(path).read_text())
        train, val = doc["train"], doc["val"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FeatmatchError(f"cannot read the run's split {path} ({type(e).__name__}); restore it or start a new run") from None
    out = []
    for names in (train, val):
        files = [root / n for n in names]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise FeatmatchError(f"{len(missing)} photo(s) of the run's split {path} are missing under {root} "
                                 f"(first: {missing[0].relative_to(root)}); resume with the same --images folder")
        out.append(files)
    return out[0], out[1]
