"""Robust two-view estimation: homography, fundamental / essential matrix, relative pose.

Thin, seeded wrappers around OpenCV's USAC (MAGSAC++ by default). Every function takes
``Matches`` or two ``(K, 2)`` point arrays and returns an :class:`~featmatch.types.Estimate`
with the model (``None`` on failure) and a boolean inlier mask over the matches.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import UsageError
from ..types import Estimate, Matches

_METHODS = {
    "usac_magsac": "USAC_MAGSAC",
    "usac_default": "USAC_DEFAULT",
    "usac_accurate": "USAC_ACCURATE",
    "usac_prosac": "USAC_PROSAC",
    "ransac": "RANSAC",
    "lmeds": "LMEDS",
}


def _points(matches_or_p0: Any, p1: Any = None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(matches_or_p0, Matches):
        p0, p1 = matches_or_p0.points0, matches_or_p0.points1
    else:
        p0 = matches_or_p0
    if p1 is None:
        raise UsageError("pass a Matches object or both points0 and points1")
    a = np.asarray(p0.detach().cpu() if hasattr(p0, "detach") else p0, dtype=np.float64)
    b = np.asarray(p1.detach().cpu() if hasattr(p1, "detach") else p1, dtype=np.float64)
    if a.ndim != 2 or a.shape[-1] != 2 or a.shape != b.shape:
        raise UsageError(f"points must be two (K, 2) arrays of equal shape; got {a.shape} and {b.shape}")
    return a, b


def _method(name: str) -> int:
    import cv2

    if name not in _METHODS:
        raise UsageError(f"unknown estimator method '{name}'; use one of {', '.join(_METHODS)}")
    return getattr(cv2, _METHODS[name])


def _fail(kind: str, n: int, reason: str) -> Estimate:
    return Estimate(kind, None, np.zeros(n, dtype=bool), info={"reason": reason})


def estimate_homography(matches: Any, points1: Any = None, *, method: str = "usac_magsac",
                        threshold: float = 3.0, confidence: float = 0.9999, max_iters: int = 10_000,
                        seed: int = 0) -> Estimate:
    """Homography mapping image 0 to image 1 with an inlier mask.

    Args:
        matches: :class:`Matches`, or points0 ``(K, 2)`` with ``points1`` given.
        method: ``usac_magsac`` (default), ``usac_default``, ``usac_accurate``, ``ransac``, ...
        threshold: inlier reprojection threshold in pixels.
        seed: OpenCV RNG seed, for reproducible results.

    Shape:
        returns ``Estimate.model (3, 3)`` and ``inliers (K,)``.
    """
    import cv2

    p0, p1 = _points(matches, points1)
    if len(p0) < 4:
        return _fail("homography", len(p0), f"needs at least 4 matches, got {len(p0)}")
    cv2.setRNGSeed(int(seed))
    H, mask = cv2.findHomography(p0, p1, _method(method), threshold, maxIters=max_iters, confidence=confidence)
    if H is None or mask is None:
        return _fail("homography", len(p0), "no consensus")
    return Estimate("homography", H / H[2, 2], mask.ravel().astype(bool), info={"method": method, "threshold": threshold})


def estimate_fundamental(matches: Any, points1: Any = None, *, method: str = "usac_magsac",
                         threshold: float = 1.0, confidence: float = 0.9999, max_iters: int = 10_000,
                         seed: int = 0) -> Estimate:
    """Fundamental matrix (``x1^T F x0 = 0``) with an inlier mask (threshold in pixels).

    Shape:
        returns ``Estimate.model (3, 3)`` and ``inliers (K,)``.
    """
    import cv2

    p0, p1 = _points(matches, points1)
    if len(p0) < 8:
        return _fail("fundamental", len(p0), f"needs at least 8 matches, got {len(p0)}")
    cv2.setRNGSeed(int(seed))
    F, mask = cv2.findFundamentalMat(p0, p1, _method(method), threshold, confidence, max_iters)
    if F is None or mask is None or F.shape != (3, 3):
        return _fail("fundamental", len(p0), "no consensus")
    return Estimate("fundamental", F, mask.ravel().astype(bool), info={"method": method, "threshold": threshold})


def estimate_relative_pose(matches: Any, points1: Any = None, *, K0: Any, K1: Any,
                           method: str = "usac_magsac", threshold: float = 0.5,
                           confidence: float = 0.99999, max_iters: int = 10_000,
                           seed: int = 0) -> Estimate:
    """Essential matrix and relative pose (R, t: camera 0 -> camera 1, ``|t| = 1``).

    Points are normalised with ``K0``/``K1``; ``threshold`` is in pixels and divided by the
    mean focal length, as in the SuperGlue / LoFTR evaluation code.

    Shape:
        K0, K1: ``(3, 3)``. Returns ``model`` = E ``(3, 3)``, ``R (3, 3)``, ``t (3,)``,
        ``inliers (K,)``.
    """
    import cv2

    p0, p1 = _points(matches, points1)
    K0 = np.asarray(K0, dtype=np.float64)
    K1 = np.asarray(K1, dtype=np.float64)
    if K0.shape != (3, 3) or K1.shape != (3, 3):
        raise UsageError(f"K0 and K1 must be (3, 3); got {K0.shape} and {K1.shape}")
    if len(p0) < 5:
        return _fail("essential", len(p0), f"needs at least 5 matches, got {len(p0)}")
    n0 = (p0 - K0[[0, 1], [2, 2]][None]) / K0[[0, 1], [0, 1]][None]
    n1 = (p1 - K1[[0, 1], [2, 2]][None]) / K1[[0, 1], [0, 1]][None]
    thr = threshold / np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    cv2.setRNGSeed(int(seed))
    E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=_method(method), prob=confidence,
                                   threshold=thr, maxIters=max_iters)
    if E is None or mask is None:
        return _fail("essential", len(p0), "no consensus")
    best: Optional[tuple] = None
    for i in range(0, E.shape[0] // 3):  # several solutions may come back: keep the best
        Ei = E[3 * i:3 * i + 3]
        n, R, t, m = cv2.recoverPose(Ei, n0, n1, np.eye(3), 1e9, mask=mask.copy())
        if best is None or n > best[0]:
            best = (n, Ei, R, t.ravel(), m.ravel() > 0)
    assert best is not None
    _, Ei, R, t, inl = best
    return Estimate("essential", Ei, inl, R=R, t=t / max(np.linalg.norm(t), 1e-12),
                    info={"method": method, "threshold_px": threshold})


__all__ = ["estimate_homography", "estimate_fundamental", "estimate_relative_pose"]
