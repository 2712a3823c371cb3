"""Benchmark data readers with layout validation.

* :func:`homography_pairs`: HPatches-style folders. Every sub-folder of the root (or the
  root itself) that holds ``1.<ext>`` and ``H_1_k`` text files is a sequence; its pairs
  are ``(1, k)`` with ground truth ``H_1_k`` (maps pixels of image 1 to image k). Folder
  names ``i_*`` / ``v_*`` (HPatches illumination / viewpoint) give the split.
* :func:`pose_pairs`: relative-pose pair lists as in MegaDepth-1500 / ScanNet-1500
  (SuperGlue / LoFTR ``pairs_with_gt``): ``pairs.json`` (list of objects with
  ``image0, image1, K0, K1, T_0to1``) or ``pairs.txt`` (``image0 image1 K0(9) K1(9)
  T_0to1(16)`` row-major, optionally with two EXIF-rotation integers after the names,
  which must be 0). Image paths are relative to ``<root>/images`` (or ``<root>``).

Problems raise :class:`DataError` (exit code 1 in the CLI) with one line naming the
offending path and the expected layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FeatmatchError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".ppm", ".jpg", ".jpeg", ".pgm", ".bmp", ".tif", ".tiff", ".webp")

HOMOGRAPHY_LAYOUT = ("expected HPatches layout: ROOT/<sequence>/1.png|ppm .. N.png|ppm with "
                     "ROOT/<sequence>/H_1_2 .. H_1_N (3x3 text, maps image 1 to image k)")
POSE_LAYOUT = ("expected pose layout: ROOT/pairs.json (list of {image0, image1, K0, K1, T_0to1}) or "
               "ROOT/pairs.txt (image0 image1 K0(9) K1(9) T_0to1(16) per line), images under ROOT/images/")


class DataError(FeatmatchError):
    """A benchmark data root is missing, has the wrong layout, or holds a bad file."""


@dataclass(frozen=True)
class HomographyPair:
    """One homography pair: image 1 of a sequence and image k, with ``H_0to1 = H_1_k``."""

    key: str  # "<sequence>/1-<k>", unique within the data root
    sequence: str
    split: str  # "illumination" (i_*), "viewpoint" (v_*) or "other"
    image0: Path
    image1: Path
    H_0to1: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class PosePair:
    """One relative-pose pair with intrinsics and the ground-truth ``T_0to1``."""

    key: str  # "<image0>|<image1>"
    subset: str  # first folder of image0 (e.g. "scannet"), else the "dataset" field
    image0: Path
    image1: Path
    K0: np.ndarray = field(compare=False, repr=False)
    K1: np.ndarray = field(compare=False, repr=False)
    T_0to1: np.ndarray = field(compare=False, repr=False)


def split_of(sequence: str) -> str:
    """HPatches split from a sequence name: ``i_*`` illumination, ``v_*`` viewpoint."""
    if sequence.startswith("i_"):
        return "illumination"
    if sequence.startswith("v_"):
        return "viewpoint"
    return "other"


def _images_by_index(folder: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and p.stem.isdigit():
            idx = int(p.stem)
            if idx in out:
                raise DataError(f"two images with index {idx} in {folder} ({out[idx].name}, {p.name}); keep one")
            out[idx] = p
    return out


def _h_files(folder: Path) -> dict[int, Path]:
    out = {}
    for p in sorted(folder.iterdir()):
        m = re.fullmatch(r"H_1_(\d+)", p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return out


def read_homography(path: Path) -> np.ndarray:
    """A 3x3 text matrix (``np.loadtxt``), normalised so ``H[2, 2] = 1``."""
    try:
        H = np.loadtxt(path, dtype=np.float64)
    except (ValueError, OSError) as e:
        raise DataError(f"cannot read homography {path}: {str(e).splitlines()[0]}; expected 3 rows of 3 numbers") from None
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise DataError(f"homography {path} has shape {H.shape}; expected 3 rows of 3 finite numbers")
    if abs(H[2, 2]) < 1e-12 or abs(np.linalg.det(H)) < 1e-12:
        raise DataError(f"homography {path} is singular or has H[2,2] = 0")
    return H / H[2, 2]


def _sequence_pairs(folder: Path, name: str) -> list[HomographyPair]:
    images = _images_by_index(folder)
    hs = _h_files(folder)
    if 1 not in images:
        raise DataError(f"{folder} has H_1_k files but no image 1 (1.png or 1.ppm); {HOMOGRAPHY_LAYOUT}")
    others = sorted(k for k in images if k != 1)
    if not hs:
        raise DataError(f"{folder} has images but no H_1_k files (missing {folder / 'H_1_2'}); {HOMOGRAPHY_LAYOUT}")
    for k in others:
        if k not in hs:
            raise DataError(f"missing homography {folder / f'H_1_{k}'} for image {images[k].name}; {HOMOGRAPHY_LAYOUT}")
    for k in hs:
        if k not in images:
            raise DataError(f"{hs[k]} has no image {k} in {folder} (expected {k}.png or {k}.ppm)")
    return [HomographyPair(f"{name}/1-{k}", name, split_of(name), images[1], images[k], read_homography(hs[k]))
            for k in others]


def _is_sequence(folder: Path) -> bool:
    return any(re.fullmatch(r"H_1_\d+", p.name) for p in folder.iterdir()) or any(
        p.stem == "1" and p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir())


def homography_pairs(root: Any) -> list[HomographyPair]:
    """All pairs of an HPatches-layout root, sorted by sequence then image index.

    ``root`` may also be a single sequence folder. Hidden folders and folders with
    neither images named by index nor ``H_1_k`` files are skipped.

    Raises:
        DataError: root missing or empty, a sequence with missing ``H_1_k`` files or
            images, or an unreadable homography; the message names the path.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root not found: {root}; {HOMOGRAPHY_LAYOUT}")
    if not root.is_dir():
        raise DataError(f"data root is not a folder: {root}; {HOMOGRAPHY_LAYOUT}")
    if _is_sequence(root):
        return _sequence_pairs(root, root.name)
    pairs: list[HomographyPair] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _is_sequence(sub):
            log.info("skipping %s: no numbered images or H_1_k files", sub)
            continue
        pairs.extend(_sequence_pairs(sub, sub.name))
    if not pairs:
        raise DataError(f"no homography sequences in {root}; {HOMOGRAPHY_LAYOUT}")
    return pairs


# ----------------------------------------------------------------------------- pose


def _matrix(values: Any, shape: tuple, what: str, where: str) -> np.ndarray:
    try:
        m = np.asarray(values, dtype=np.float64).reshape(shape)
    except (ValueError, TypeError):
        raise DataError(f"{where}: {what} must have {int(np.prod(shape))} numbers; {POSE_LAYOUT}") from None
    if not np.all(np.isfinite(m)):
        raise DataError(f"{where}: {what} has non-finite values")
    return m


def _pairs_file(root: Path) -> tuple[Path, Path]:
    """(pairs file, image root) from a data root folder or a pairs file."""
    if not root.exists():
        raise DataError(f"data root not found: {root}; {POSE_LAYOUT}")
    if root.is_file():
        folder = root.parent
        file = root
    else:
        folder = root
        for name in ("pairs.json", "pairs.txt"):
            if (root / name).is_file():
                file = root / name
                break
        else:
            raise DataError(f"no pairs.json or pairs.txt in {root}; {POSE_LAYOUT}")
    images = folder / "images" if (folder / "images").is_dir() else folder
    return file, images


def _parse_txt(file: Path) -> list[dict]:
    out = []
    for no, line in enumerate(file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        where = f"{file}:{no}"
        if len(tok) == 38:  # SuperGlue format with two EXIF rotation flags
            if tok[2:4] != ["0", "0"]:
                raise DataError(f"{where}: EXIF rotations {tok[2]} {tok[3]} are not supported; rotate the images and set them to 0")
            tok = tok[:2] + tok[4:]
        if len(tok) != 36:
            raise DataError(f"{where}: expected 36 fields (image0 image1 K0(9) K1(9) T_0to1(16)), got {len(tok)}")
        try:
            nums = [float(v) for v in tok[2:]]
        except ValueError:
            raise DataError(f"{where}: non-numeric K / T_0to1 values; {POSE_LAYOUT}") from None
        out.append({"image0": tok[0], "image1": tok[1], "K0": nums[0:9], "K1": nums[9:18],
                    "T_0to1": nums[18:34], "_where": where})
    return out


def _parse_json(file: Path) -> list[dict]:
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file} is not valid JSON ({e}); {POSE_LAYOUT}") from None
    if isinstance(data, dict) and "pairs" in data:
        data = data["pairs"]
    if not isinstance(data, list):
        raise DataError(f"{file} must hold a list of pairs; {POSE_LAYOUT}")
    out = []
    for i, item in enumerate(data):
        where = f"{file}[{i}]"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object with image0, image1, K0, K1, T_0to1")
        missing = [k for k in ("image0", "image1", "K0", "K1", "T_0to1") if k not in item]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}; {POSE_LAYOUT}")
        out.append({**item, "_where": where})
    return out


def pose_pairs(root: Any, *, check_images: bool = True) -> list[PosePair]:
    """Relative-pose pairs from ``pairs.json`` / ``pairs.txt`` (``pairs.json`` first).

    Args:
        root: folder holding the pairs file (images under ``root/images``), or the pairs
            file itself (images beside it or under ``images/`` next to it).
        check_images: fail early, naming the first missing image and how many are missing.

    Raises:
        DataError: missing root or pairs file, malformed entry (named by file and line /
            index), missing images.
    """
    file, images = _pairs_file(Path(root))
    raw = _parse_json(file) if file.suffix == ".json" else _parse_txt(file)
    if not raw:
        raise DataError(f"{file} lists no pairs; {POSE_LAYOUT}")
    pairs, seen = [], set()
    for r in raw:
        where = r["_where"]
        K0 = _matrix(r["K0"], (3, 3), "K0", where)
        K1 = _matrix(r["K1"], (3, 3), "K1", where)
        T = _matrix(r["T_0to1"], (4, 4), "T_0to1", where)
        key = f"{r['image0']}|{r['image1']}"
        if key in seen:
            log.warning("%s: duplicate pair %s skipped", where, key)
            continue
        seen.add(key)
        parts = Path(r["image0"]).parts  # subset: first folder of image0, else the "dataset" field
        subset = parts[0] if len(parts) > 1 else str(r.get("dataset") or "all")
        pairs.append(PosePair(key, subset, images / r["image0"], images / r["image1"], K0, K1, T))
    if check_images:
        missing = [p for pr in pairs for p in (pr.image0, pr.image1) if not p.is_file()]
        if missing:
            raise DataError(f"image not found: {missing[0]} ({len(set(missing))} missing images listed in {file}); "
                            f"image paths are relative to {images}")
    return pairs


# ----------------------------------------------------------------------------- hashing


def file_digest(paths: list[Path]) -> str:
    """sha1 over the bytes of ``paths`` (identifies the inputs of a cached prediction)."""
    h = hashlib.sha1()
    for p in paths:
        try:
            h.update(Path(p).read_bytes())
        except OSError as e:
            raise DataError(f"cannot read {p}: {e.strerror}") from None
        h.update(b"\0")
    return h.hexdigest()


def subset_names(items: list, attr: str) -> list[str]:
    """Distinct values of ``attr`` in first-seen order."""
    out: list[str] = []
    for it in items:
        v = getattr(it, attr)
        if v not in out:
            out.append(v)
    return out


__all__ = ["DataError", "HomographyPair", "PosePair", "homography_pairs", "pose_pairs", "read_homography",
           "split_of", "file_digest", "HOMOGRAPHY_LAYOUT", "POSE_LAYOUT"]
