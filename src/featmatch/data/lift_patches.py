"""LIFT training quadruplets from synthetic homography pairs (Yi et al. ECCV 2016, sec. 4).

A quadruplet holds four 128x128 grey patches ``P`` (each covering 24 sigma around a point,
sigma = SIFT scale, axis-aligned in its image):

* ``P1``: a SIFT keypoint (OpenCV) of image 0 of a :class:`~featmatch.data.SyntheticPairs`
  pair;
* ``P2``: the same point in image 1, mapped through the known homography with its scale
  (``sigma * sqrt|det J|``) and orientation (rotated by the local Jacobian ``J``);
* ``P3``: a different SIFT keypoint (mapped into image 1 the same way), at least 12 sigma away;
* ``P4``: a non-feature region of image 0: no SIFT keypoint within its 64-px crop support,
  scale drawn from the keypoints' scales.

Each patch centre is jittered by up to 20 % of the half patch (uniform, x and y
independently, the authors' ``fPerturbInfo``); the keypoint's position inside the patch is
stored as ``xy`` in the spatial-transformer coordinates of ``P`` (``[-1, 1]``, align-corners),
its orientation (radians, image axes, y down; 0 for P4) as ``angle``. Patches are sampled
with bilinear interpolation from a 2x2-average pyramid (the octave whose pixel is at most
the patch's sample spacing), as :meth:`featmatch.models.lift.LIFT.sample_patches` does at
run time.

Everything is a pure function of ``(seed, pair index)``; :func:`build_patch_set` writes an
``.npz`` (``P`` uint8 ``(N, 4, 128, 128)``, ``xy`` float32 ``(N, 4, 2)``, ``angle`` float32
``(N, 4)``, ``sigma`` float32 ``(N, 4)``) that :class:`LIFTQuadruplets` serves to the trainer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import FeatmatchError, UsageError
from .synthetic import SyntheticConfig, SyntheticPairs

log = logging.getLogger(__name__)

PATCH = 128  # P side (pixels)
SUPPORT = 24.0  # sigma covered by P


@dataclass(frozen=True)
class LIFTPatchConfig:
    """How quadruplets are cut from synthetic pairs."""

    size: tuple[int, int] = (640, 480)  # (W, H) of the synthetic pairs
    seed: int = 0
    per_pair: int = 16  # quadruplets per pair (at most)
    max_rotation_deg: float = 180.0  # in-plane rotation of image 1 (orientation learning)
    scale_range: tuple[float, float] = (0.6, 1.6)  # scale of image 1 w.r.t. image 0
    perspective: float = 0.08  # corner jitter of the homography
    min_sigma: float = 1.2  # smallest SIFT sigma used (pixels of image 0)
    max_sigma: float = 16.0  # largest SIFT sigma used
    jitter: float = 0.2  # centre jitter, fraction of the half patch (12 sigma)
    sift_features: int = 3000  # OpenCV SIFT nfeatures on image 0
    contrast_threshold: float = 0.03  # OpenCV SIFT contrastThreshold


def extract_patch(levels: Sequence[np.ndarray], cx: float, cy: float, sigma: float) -> np.ndarray:
    """The 128x128 patch ``P`` centred on ``(cx, cy)`` covering 24 sigma: pixel ``i`` of ``P``
    sits at ``c + (i - 63.5) * 24 sigma / 128`` (featmatch's pixel-centre convention).

    Shape: levels ``[(H, W), (H/2, W/2), ...]`` float32 -> ``(128, 128)`` float32.
    """
    import cv2

    step = sigma * SUPPORT / PATCH
    o = int(min(max(math.floor(math.log2(max(step, 1.0))), 0), len(levels) - 1))
    f = 2.0 ** o
    a = step / f
    bx = ((cx - (PATCH - 1) / 2 * step) + 0.5) / f - 0.5
    by = ((cy - (PATCH - 1) / 2 * step) + 0.5) / f - 0.5
    M = np.array([[a, 0, bx], [0, a, by]], np.float64)
    return cv2.warpAffine(levels[o], M, (PATCH, PATCH), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _pyramid(img: np.ndarray, n: int = 5) -> list[np.ndarray]:
    import cv2

    out = [img]
    while len(out) < n and min(out[-1].shape) >= 4:
        h, w = out[-1].shape
        out.append(cv2.resize(out[-1][: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return out


def _jacobian(H: np.ndarray, x: float, y: float) -> np.ndarray:
    p = H @ np.array([x, y, 1.0])
    w = p[2]
    return (H[:2, :2] * w - np.outer(p[:2], H[2, :2])) / (w * w)


def _warp(H: np.ndarray, x: float, y: float) -> tuple[float, float]:
    p = H @ np.array([x, y, 1.0])
    return p[0] / p[2], p[1] / p[2]


def pair_quadruplets(pair: dict, index: int, cfg: LIFTPatchConfig) -> Optional[dict]:
    """Quadruplets from one synthetic pair (a ``SyntheticPairs`` item); None if too few points.

    Returns arrays ``P (K, 4, 128, 128)`` uint8, ``xy (K, 4, 2)``, ``angle (K, 4)``,
    ``sigma (K, 4)`` float32.
    """
    rng = np.random.default_rng([cfg.seed, 7, int(index)])
    g0 = pair["image0"].mean(0).numpy().astype(np.float32)
    g1 = pair["image1"].mean(0).numpy().astype(np.float32)
    valid1 = pair["valid1"].numpy().astype(np.uint8)
    H = pair["H_0to1"].numpy().astype(np.float64)
    h, w = g0.shape
    allxy, sig, ang, _ = _sift(g0, cfg, describe=False)
    if len(allxy) < 3:
        return None
    lv0, lv1 = _pyramid(g0), _pyramid(g1)
    # valid1 shrunk so that a patch whose corners and centre are valid has content
    cands = []
    for i in range(len(allxy)):
        s = sig[i]
        if not (cfg.min_sigma <= s <= cfg.max_sigma):
            continue
        x, y = allxy[i]
        half = 12.0 * s * (1 + cfg.jitter)
        if x - half < 0 or y - half < 0 or x + half > w - 1 or y + half > h - 1:
            continue
        x1, y1 = _warp(H, x, y)
        J = _jacobian(H, x, y)
        s1 = s * math.sqrt(abs(np.linalg.det(J)))
        half1 = 12.0 * s1 * (1 + cfg.jitter)
        ok = True
        for dx, dy in ((0, 0), (-1, -1), (1, -1), (-1, 1), (1, 1)):
            px, py = int(round(x1 + dx * half1)), int(round(y1 + dy * half1))
            if not (0 <= px < w and 0 <= py < h and valid1[py, px]):
                ok = False
                break
        if not ok:
            continue
        d = J @ np.array([math.cos(ang[i]), math.sin(ang[i])])
        cands.append((i, x1, y1, s1, math.atan2(d[1], d[0])))
    if len(cands) < 2:
        return None
    order = rng.permutation(len(cands))
    out = {"P": [], "xy": [], "angle": [], "sigma": []}
    scales_pool = sig[(sig >= cfg.min_sigma) & (sig <= cfg.max_sigma)]

    for t in order[: cfg.per_pair]:
        i, x1, y1, s1, a1 = cands[t]
        # P3: another candidate, far enough in image 1
        others = [c for c in cands if c[0] != i and math.hypot(c[1] - x1, c[2] - y1) > 12.0 * s1]
        if not others:
            continue
        c3 = others[int(rng.integers(len(others)))]
        p4 = _non_feature_region(rng, allxy, sig, scales_pool, w, h, cfg)
        if p4 is None:
            continue
        x0, y0 = allxy[i]
        _append(out, rng, cfg, [(lv0, x0, y0, sig[i], ang[i]), (lv1, x1, y1, s1, a1),
                                (lv1, c3[1], c3[2], c3[3], c3[4]), (lv0, p4[0], p4[1], p4[2], 0.0)])
    return _stacked(out)


def _jittered(rng: np.random.Generator, cfg: LIFTPatchConfig, lv, cx: float, cy: float,
              s: float) -> tuple[np.ndarray, np.ndarray]:
    """Patch around a centre jittered by up to ``cfg.jitter`` of the half patch, and the
    keypoint's position in P's ``[-1, 1]`` coordinates (align corners: pixel i -> i / 63.5 - 1)."""
    j = rng.uniform(-cfg.jitter, cfg.jitter, 2) * 12.0 * s
    p = extract_patch(lv, cx + j[0], cy + j[1], s)
    xy = -j / (s * SUPPORT / PATCH) / ((PATCH - 1) / 2)
    return p, xy


def _non_feature_region(rng: np.random.Generator, allxy: np.ndarray, sig: np.ndarray, scales_pool: np.ndarray,
                        w: int, h: int, cfg: LIFTPatchConfig) -> Optional[tuple[float, float, float]]:
    """P4: ``(x, y, sigma)`` of a region whose crop support no SIFT region touches, or None."""
    for _ in range(50):
        s4 = float(scales_pool[int(rng.integers(len(scales_pool)))]) if len(scales_pool) else 2.0
        half = 12.0 * s4 * (1 + cfg.jitter)
        if w - 1 - 2 * half <= 0 or h - 1 - 2 * half <= 0:
            continue
        x4, y4 = rng.uniform(half, w - 1 - half), rng.uniform(half, h - 1 - half)
        dist = np.hypot(allxy[:, 0] - x4, allxy[:, 1] - y4)
        if np.all(dist > 6.0 * s4 + 3.0 * sig):
            return x4, y4, s4
    return None


def _append(out: dict, rng: np.random.Generator, cfg: LIFTPatchConfig, points: list) -> None:
    """Cut the four jittered patches of one quadruplet (``points``: ``(levels, x, y, sigma,
    angle)`` for P1..P4) into ``out``."""
    ps, xys = zip(*(_jittered(rng, cfg, lv, x, y, s) for lv, x, y, s, _ in points))
    out["P"].append(np.stack(ps))
    out["xy"].append(np.stack(xys))
    out["angle"].append([a for *_, a in points])
    out["sigma"].append([s for _, _, _, s, _ in points])


def _stacked(out: dict) -> Optional[dict]:
    if not out["P"]:
        return None
    return {"P": (np.clip(np.stack(out["P"]), 0, 1) * 255).round().astype(np.uint8),
            "xy": np.asarray(out["xy"], np.float32), "angle": np.asarray(out["angle"], np.float32),
            "sigma": np.asarray(out["sigma"], np.float32)}


def _gray01(path) -> np.ndarray:
    from ..image import read_image

    img = read_image(path)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return img.mean(-1) if img.ndim == 3 else img


def _sift(g: np.ndarray, cfg: LIFTPatchConfig, describe: bool = True):
    """OpenCV SIFT on a [0, 1] grey image: ``xy (K, 2)`` (featmatch pixel centres), ``sigma``,
    ``angle`` (radians) and descriptors (None without ``describe``)."""
    import cv2

    sift = cv2.SIFT_create(nfeatures=cfg.sift_features, contrastThreshold=cfg.contrast_threshold)
    u8 = (g * 255).round().astype(np.uint8)
    kps, desc = sift.detectAndCompute(u8, None) if describe else (sift.detect(u8, None), None)
    # OpenCV's first octave is built by doubling the image: its points are off by +0.25 px
    xy = np.array([k.pt for k in kps], np.float64).reshape(-1, 2) - 0.25
    sig = np.array([k.size / 2 for k in kps], np.float64)
    ang = np.radians(np.array([k.angle for k in kps], np.float64))
    return xy, sig, ang, desc


def verified_matches(xy0: np.ndarray, d0: np.ndarray, xy1: np.ndarray, d1: np.ndarray, K0: np.ndarray,
                     K1: np.ndarray, T_0to1: np.ndarray, *, ratio: float = 0.8, max_epipolar_px: float = 1.0) -> np.ndarray:
    """SIFT matches that pass the ratio test both ways, are mutual nearest neighbours and agree
    with the ground-truth epipolar geometry (Sampson error at most ``max_epipolar_px``).

    Shape: ``xy0 (K0, 2)``, ``d0 (K0, 128)``, ... -> index pairs ``(M, 2)`` int64.
    """
    from ..eval.metrics import epipolar_errors
    from ..ops.mnn import mutual_nn

    if d0 is None or d1 is None or len(d0) < 2 or len(d1) < 2:
        return np.zeros((0, 2), np.int64)
    i, j, _ = mutual_nn(torch.from_numpy(np.asarray(d0, np.float32)), torch.from_numpy(np.asarray(d1, np.float32)),
                        metric="l2", ratio=ratio, mutual=True)
    m = torch.stack([i, j], 1).numpy().astype(np.int64)
    if len(m) == 0:
        return m
    err = epipolar_errors(xy0[m[:, 0]], xy1[m[:, 1]], T_0to1, K0, K1, kind="sampson")
    return m[np.nan_to_num(err, nan=np.inf) <= max_epipolar_px]


def real_pair_quadruplets(image0, image1, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray, index: int,
                          cfg: LIFTPatchConfig = LIFTPatchConfig(), *, ratio: float = 0.8, max_epipolar_px: float = 1.0,
                          max_per_pair: int = 400, both_directions: bool = True) -> tuple[Optional[dict], int]:
    """Quadruplets from a real image pair with a known relative pose (the paper's real
    viewpoint and illumination changes): P1 / P2 are the two SIFT keypoints of a
    :func:`verified_matches` match, each with its own detected scale and orientation (as the
    paper's SfM points); P3 another SIFT keypoint of the second image at least 12 sigma from
    P2; P4 a non-feature region of the first image. With ``both_directions`` the pair is used
    0 -> 1 and 1 -> 0. Returns ``(quadruplets or None, number of verified matches)``.
    """
    rng = np.random.default_rng([cfg.seed, 11, int(index)])
    g = [_gray01(image0), _gray01(image1)]
    kp = [_sift(x, cfg) for x in g]
    m = verified_matches(kp[0][0], kp[0][3], kp[1][0], kp[1][3], np.asarray(K0, np.float64),
                         np.asarray(K1, np.float64), np.asarray(T_0to1, np.float64),
                         ratio=ratio, max_epipolar_px=max_epipolar_px)
    levels = [_pyramid(x) for x in g]
    out = {"P": [], "xy": [], "angle": [], "sigma": []}
    for a, b in ((0, 1), (1, 0)) if both_directions else ((0, 1),):
        (xa, sa, aa, _), (xb, sb, ab, _) = kp[a], kp[b]
        (ha, wa), (hb, wb) = g[a].shape, g[b].shape

        def inside(x, y, s, w, h):
            half = 12.0 * s * (1 + cfg.jitter)
            return cfg.min_sigma <= s <= cfg.max_sigma and half <= x <= w - 1 - half and half <= y <= h - 1 - half

        ok_b = np.array([inside(*xb[k], sb[k], wb, hb) for k in range(len(xb))], bool)
        pool = sa[(sa >= cfg.min_sigma) & (sa <= cfg.max_sigma)]
        mm = m if a == 0 else m[:, ::-1]
        mm = [(i, j) for i, j in mm if inside(*xa[i], sa[i], wa, ha) and ok_b[j]]
        made = 0
        for t in rng.permutation(len(mm)):
            if made >= max_per_pair:
                break
            i, j = mm[t]
            far = np.flatnonzero(ok_b & (np.hypot(xb[:, 0] - xb[j, 0], xb[:, 1] - xb[j, 1]) > 12.0 * sb[j]))
            if len(far) == 0:
                continue
            k = int(far[int(rng.integers(len(far)))])
            p4 = _non_feature_region(rng, xa, sa, pool, wa, ha, cfg)
            if p4 is None:
                continue
            _append(out, rng, cfg, [(levels[a], xa[i, 0], xa[i, 1], sa[i], aa[i]),
                                    (levels[b], xb[j, 0], xb[j, 1], sb[j], ab[j]),
                                    (levels[b], xb[k, 0], xb[k, 1], sb[k], ab[k]),
                                    (levels[a], p4[0], p4[1], p4[2], 0.0)])
            made += 1
    return _stacked(out), int(len(m))


def build_real_patch_set(pairs: Sequence, out: Union[str, Path], cfg: LIFTPatchConfig = LIFTPatchConfig(), **kw) -> dict:
    """Quadruplets from real pairs with known poses (``pairs``: :class:`featmatch.eval.data.PosePair`
    items, e.g. ``pose_pairs(root)``), written to ``out`` (``.npz``, atomically, the
    :func:`build_patch_set` layout). ``kw`` go to :func:`real_pair_quadruplets`.
    Returns ``{"quadruplets", "pairs", "matches"}`` (matches: verified, summed over pairs).
    """
    from ..io import atomic_path

    if not pairs:
        raise UsageError("build_real_patch_set needs at least one pair (e.g. pose_pairs(ROOT))")
    parts, matches = [], 0
    for k, pr in enumerate(pairs):
        q, n = real_pair_quadruplets(pr.image0, pr.image1, pr.K0, pr.K1, pr.T_0to1, k, cfg, **kw)
        matches += n
        log.info("%s: %d verified matches -> %d quadruplets", pr.key, n, 0 if q is None else len(q["P"]))
        if q is not None:
            parts.append(q)
    if not parts and matches == 0:
        raise FeatmatchError(f"no quadruplets from {len(pairs)} real pairs: no SIFT match agrees with the "
                             "ground-truth poses (check K and T_0to1, or raise max_epipolar_px)")
    if not parts:
        raise FeatmatchError(f"no quadruplets from {len(pairs)} real pairs: their {matches} verified matches lie "
                             "too close to the image borders or outside min_sigma..max_sigma")
    data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    with atomic_path(Path(out)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **data)
    return {"quadruplets": int(len(data["P"])), "pairs": len(pairs), "matches": matches}


def build_patch_set(files: Sequence[Union[str, Path]], out: Union[str, Path], count: int,
                    cfg: LIFTPatchConfig = LIFTPatchConfig(), log_every: int = 100) -> dict:
    """Cut ``count`` quadruplets from synthetic pairs of ``files`` and write them to ``out``
    (``.npz``, atomically). Returns ``{"quadruplets", "pairs"}``."""
    from ..io import atomic_path

    if count < 1:
        raise UsageError("count must be at least 1")
    syn = SyntheticPairs(list(files), SyntheticConfig(size=cfg.size, seed=cfg.seed,
                                                      max_rotation_deg=cfg.max_rotation_deg,
                                                      scale_range=cfg.scale_range, perspective=cfg.perspective))
    parts, n, k = [], 0, 0
    while n < count:
        q = pair_quadruplets(syn[k], k, cfg)
        k += 1
        if q is not None:
            parts.append(q)
            n += len(q["P"])
        if k % log_every == 0:
            log.info("%d pairs -> %d quadruplets", k, n)
        if k > 50 * count + 100:
            raise FeatmatchError(f"only {n} quadruplets from {k} pairs; are the images blank?")
    data = {key: np.concatenate([p[key] for p in parts])[:count] for key in parts[0]}
    with atomic_path(Path(out)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **data)
    return {"quadruplets": int(len(data["P"])), "pairs": k}


class LIFTQuadruplets(Dataset):
    """Quadruplets of a patch set written by :func:`build_patch_set` or
    :func:`build_real_patch_set`, or of several concatenated. Item ``i`` is quadruplet
    ``i mod N`` of the stored order, or, with ``shuffle_seed``, of a permutation drawn anew for
    every pass ``i // N`` (a pure function of seed and index: resumable, worker-independent).
    Stored sets are grouped by image pair (and concatenated sets by file), so training shuffles.

    Item: ``P (4, 1, 128, 128)`` float in [0, 1], ``xy (4, 2)``, ``angle (4,)``, ``index``.
    """

    def __init__(self, path: Union[str, Path, dict, Sequence[Union[str, Path]]], shuffle_seed: Optional[int] = None):
        self.shuffle_seed = shuffle_seed
        self._perm: tuple[int, Optional[torch.Tensor]] = (-1, None)
        if isinstance(path, dict):
            d = path
        else:
            paths = [path] if isinstance(path, (str, Path)) else list(path)
            parts = []
            for p in map(Path, paths):
                if not p.is_file():
                    raise FeatmatchError(f"LIFT patch set not found: {p} (build it with build_patch_set)")
                with np.load(p) as z:
                    parts.append({k: z[k] for k in ("P", "xy", "angle")})
            if not parts:
                raise FeatmatchError("no LIFT patch set given")
            d = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]} if len(parts) > 1 else parts[0]
        if d["P"].ndim != 4 or d["P"].shape[1:] != (4, PATCH, PATCH):
            raise FeatmatchError(f"LIFT patch set: P has shape {d['P'].shape}, expected (N, 4, 128, 128)")
        self.P = torch.from_numpy(np.ascontiguousarray(d["P"]))
        self.xy = torch.from_numpy(np.asarray(d["xy"], np.float32))
        self.angle = torch.from_numpy(np.asarray(d["angle"], np.float32))

    def __len__(self) -> int:
        return 1_000_000_000

    @property
    def size(self) -> int:
        return int(self.P.shape[0])

    def order(self, epoch: int) -> torch.Tensor:
        """Quadruplet order of pass ``epoch`` over the set (a seeded permutation, or the stored
        order without ``shuffle_seed``)."""
        if self.shuffle_seed is None:
            return torch.arange(self.size)
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(int(self.shuffle_seed) * 1_000_003 + int(epoch))
            self._perm = (epoch, torch.randperm(self.size, generator=g))
        return self._perm[1]

    def __getitem__(self, index: int) -> dict:
        epoch, j = divmod(int(index), self.size)
        i = j if self.shuffle_seed is None else int(self.order(epoch)[j])
        return {"P": self.P[i, :, None].float() / 255.0, "xy": self.xy[i], "angle": self.angle[i],
                "index": torch.tensor(int(index))}
