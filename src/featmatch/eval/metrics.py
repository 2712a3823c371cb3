"""Pure metric functions for local feature detection, description and matching.

Every function here is pure and deterministic: numpy arrays or torch tensors in (any
device; converted to float64 numpy), Python floats, dicts or numpy arrays out, no I/O
and no global state. Points follow the featmatch convention (``(x, y)`` pixels, x right,
y down, centre of the top-left pixel at ``(0, 0)``); image sizes are ``(W, H)``.

Conventions shared by the functions below:

* A prediction is *correct at threshold t* when its error is ``<= t`` (inclusive).
* A per-pair score computed over an empty set of matches / keypoints is ``0.0`` (the
  pair produced nothing usable, which counts as a failure when averaged over pairs).
* A summary over an empty list of pairs (:func:`mha`, :func:`error_auc`,
  :func:`pose_accuracy`, :func:`mean_inlier_ratio`) is ``nan``: nothing was measured.
* Failures carry an infinite error (:func:`homography_corner_error` with ``H_est=None``,
  :func:`relative_pose_error` with ``R_est=None``); ``nan`` errors are treated as ``inf``
  by the summaries.

Definitions follow the papers in ``shared/papers``: LIFT (Yi et al., ECCV 2016,
Section 4.1 "Dataset and Experimental Setup") for repeatability, matching score and
nearest-neighbour mAP, using the protocol of Mikolajczyk & Schmid it cites ([35]);
XFeat (Potje et al., CVPR 2024, Sections 9.3 and 9.5 of our summary) for MHA, pose AUC,
Acc@10 and MIR; SuperGlue / LoFTR for the ``error_auc`` integration and the symmetric
epipolar precision.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError
from ..types import check_shape

__all__ = [
    "warp_points_h",
    "reprojection_errors_h",
    "visible_mask_h",
    "correspondence_mask_h",
    "mma",
    "homography_corner_error",
    "mha",
    "error_auc",
    "homography_auc",
    "repeatability",
    "matching_score",
    "nn_map",
    "relative_pose_error",
    "pose_auc",
    "pose_accuracy",
    "epipolar_errors",
    "epipolar_precision",
    "mean_inlier_ratio",
]

_EPIPOLAR_KINDS = ("sampson", "symmetric", "symmetric_normalized")


# --------------------------------------------------------------------------- helpers


def _np(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert a tensor / array / sequence to a numpy array of ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from None


def _points(x: Any, name: str) -> np.ndarray:
    p = _np(x, name)
    check_shape(name, p, (-1, 2))
    return p


def _matrix(x: Any, name: str, shape: tuple) -> np.ndarray:
    m = _np(x, name)
    check_shape(name, m, shape)
    return m


def _vector(x: Any, name: str) -> np.ndarray:
    v = _np(x, name)
    check_shape(name, v, (-1,))
    return v


def _size_wh(size: Any, name: str) -> tuple[float, float]:
    s = _np(size, name).reshape(-1)
    if s.shape != (2,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UsageError(f"{name} must be a positive (W, H) pair, got {size!r}")
    return float(s[0]), float(s[1])


def _thresholds(thresholds: Iterable, name: str = "thresholds") -> list:
    ts = list(thresholds)
    if not ts:
        raise UsageError(f"{name} must not be empty")
    for t in ts:
        if not isinstance(t, (int, float, np.integer, np.floating)) or not t > 0:
            raise UsageError(f"{name} must be positive numbers, got {t!r}")
    return ts


def _errors(x: Any, name: str) -> np.ndarray:
    """1-D float errors with nan replaced by inf; negative errors are rejected."""
    e = _vector(x, name).copy()
    e[np.isnan(e)] = np.inf
    if np.any(e < 0):
        raise UsageError(f"{name} must be non-negative")
    return e


def _same_points(points0: Any, points1: Any) -> tuple[np.ndarray, np.ndarray]:
    p0 = _points(points0, "points0")
    p1 = _points(points1, "points1")
    if p0.shape != p1.shape:
        raise UsageError(f"points1 has shape {p1.shape}, expected {p0.shape} like points0")
    return p0, p1


def _inv_h(H: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        raise UsageError(f"{name} is singular and cannot be inverted") from None


def _index_pairs(x: Any, name: str, n0: int, n1: int) -> np.ndarray:
    """(M, 2) int64 index pairs checked against the sizes n0, n1."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    check_shape(name, a, (-1, 2))
    if a.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise UsageError(f"{name} must hold integer indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0 or a[:, 0].max() >= n0 or a[:, 1].max() >= n1:
        raise UsageError(f"{name} has indices out of range for {n0} and {n1} keypoints")
    return a


def _descriptor_distances(desc0: np.ndarray, desc1: np.ndarray) -> np.ndarray:
    """(N0, N1) L2 distances for float descriptors, Hamming distances for uint8 ones."""
    if desc0.dtype == np.uint8 and desc1.dtype == np.uint8:
        b0 = np.unpackbits(desc0, axis=1).astype(np.float64)
        b1 = np.unpackbits(desc1, axis=1).astype(np.float64)
        return b0.sum(1)[:, None] + b1.sum(1)[None, :] - 2.0 * (b0 @ b1.T)
    d0 = desc0.astype(np.float64)
    d1 = desc1.astype(np.float64)
    sq = (d0 * d0).sum(1)[:, None] + (d1 * d1).sum(1)[None, :] - 2.0 * (d0 @ d1.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _descriptors(desc0: Any, desc1: Any, n0: Optional[int] = None, n1: Optional[int] = None):
    out = []
    for name, d, n in (("desc0", desc0, n0), ("desc1", desc1, n1)):
        if d is None:
            raise UsageError(f"{name} is required when matches are not given")
        if isinstance(d, torch.Tensor):
            d = d.detach().cpu().numpy()
        d = np.asarray(d)
        if d.dtype != np.uint8:
            d = _np(d, name)
        check_shape(name, d, (n if n is not None else -1, -1))
        out.append(d)
    if out[0].shape[1] != out[1].shape[1] or out[0].dtype != out[1].dtype:
        raise UsageError(
            f"desc0 {out[0].shape} {out[0].dtype} and desc1 {out[1].shape} {out[1].dtype} differ in size or kind"
        )
    return out


def _greedy_one_to_one(cost: np.ndarray) -> np.ndarray:
    """Greedy bipartite assignment by increasing cost; ``inf`` marks forbidden pairs.

    Equivalent to visiting all finite pairs in lexicographic order of ``(cost, i, j)``
    and accepting a pair when neither end is taken yet. Implemented as repeated mutual
    nearest neighbours on the still-free rows and columns (every mutual pair of the
    remaining sub-matrix is accepted by that greedy visit, and nothing else blocks it).

    Returns:
        ``(M, 2)`` int64 array of accepted ``(i, j)`` pairs.
    """
    rows = np.arange(cost.shape[0])
    cols = np.arange(cost.shape[1])
    found = []
    while rows.size and cols.size:
        sub = cost[np.ix_(rows, cols)]
        jbest = np.argmin(sub, axis=1)
        ibest = np.argmin(sub, axis=0)
        r = np.arange(rows.size)
        mutual = (ibest[jbest] == r) & np.isfinite(sub[r, jbest])
        if not mutual.any():
            break
        found.append(np.stack([rows[mutual], cols[jbest[mutual]]], 1))
        keep_c = np.ones(cols.size, dtype=bool)
        keep_c[jbest[mutual]] = False
        rows = rows[~mutual]
        cols = cols[keep_c]
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(found).astype(np.int64)


# ------------------------------------------------------------------ homography basics


def warp_points_h(points: Any, H: Any) -> np.ndarray:
    """Apply a homography to points.

    Args:
        points: ``(x, y)`` pixel coordinates.
        H: homography mapping pixels of the source image to the target image.

    Returns:
        The warped points ``H @ [x, y, 1]`` divided by their third coordinate; points
        mapped to infinity (third coordinate 0) come out non-finite.

    Shape:
        points: ``(..., 2)``; H: ``(3, 3)``; output: same as ``points`` (float64).
    """
    p = _np(points, "points")
    check_shape("points", p, (..., 2))
    Hm = _matrix(H, "H", (3, 3))
    flat = p.reshape(-1, 2)
    hom = flat @ Hm[:, :2].T + Hm[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = hom[:, :2] / hom[:, 2:3]
    return out.reshape(p.shape)


def reprojection_errors_h(points0: Any, points1: Any, H_0to1: Any) -> np.ndarray:
    """Euclidean distance in image 1 between ``H_0to1(points0)`` and ``points1``.

    Args:
        points0, points1: matched points in images 0 and 1 (row k matches row k).
        H_0to1: ground-truth homography from image 0 to image 1.

    Returns:
        Per-match error in pixels of image 1; ``inf`` where the warp is not finite.

    Shape:
        points0, points1: ``(K, 2)``; H_0to1: ``(3, 3)``; output: ``(K,)``.
    """
    p0, p1 = _same_points(points0, points1)
    err = np.linalg.norm(warp_points_h(p0, H_0to1) - p1, axis=1)
    err[~np.isfinite(err)] = np.inf
    return err


def visible_mask_h(points: Any, H: Any, size_wh: Any) -> np.ndarray:
    """Whether each point, warped by ``H``, lands inside an image of size ``(W, H)``.

    The image covers ``-0.5 <= x <= W - 0.5`` and ``-0.5 <= y <= H - 0.5`` (the pixel
    squares around the pixel centres ``0 .. W-1``, ``0 .. H-1``). Non-finite warps are
    outside.

    Shape:
        points: ``(N, 2)``; H: ``(3, 3)``; size_wh: 2 numbers; output: ``(N,)`` bool.
    """
    p = _points(points, "points")
    w, h = _size_wh(size_wh, "size_wh")
    q = warp_points_h(p, H)
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(q).all(1)
            & (q[:, 0] >= -0.5) & (q[:, 0] <= w - 0.5)
            & (q[:, 1] >= -0.5) & (q[:, 1] <= h - 0.5)
        )


def correspondence_mask_h(kpts0: Any, kpts1: Any, H_0to1: Any, threshold: float = 3.0) -> np.ndarray:
    """Ground-truth correspondence matrix: ``||H_0to1(kpts0[i]) - kpts1[j]|| <= threshold``.

    Useful as ``gt_mask`` of :func:`nn_map`. Not one-to-one: a keypoint may
    correspond to several keypoints that lie within ``threshold`` pixels.

    Shape:
        kpts0: ``(N0, 2)``; kpts1: ``(N1, 2)``; H_0to1: ``(3, 3)``; output: ``(N0, N1)`` bool.
    """
    k0 = _points(kpts0, "kpts0")
    k1 = _points(kpts1, "kpts1")
    w0 = warp_points_h(k0, H_0to1)
    d = np.linalg.norm(w0[:, None, :] - k1[None, :, :], axis=-1)
    with np.errstate(invalid="ignore"):
        return d <= threshold


def mma(points0: Any, points1: Any, H_0to1: Any, thresholds: Iterable = range(1, 11)) -> dict:
    """Mean matching accuracy of one pair (D2-Net / XFeat HPatches protocol).

    For each pixel threshold ``t``: the fraction of the given matches whose
    reprojection error (:func:`reprojection_errors_h`, in image-1 pixels) is ``<= t``.
    With zero matches every value is ``0.0`` (a pair without matches is a failure);
    average the per-pair values over pairs to get the benchmark's MMA curve.

    Args:
        points0, points1: matched points.
        H_0to1: ground-truth homography.
        thresholds: pixel thresholds (positive).

    Returns:
        ``{t: fraction}`` for each threshold, in the given order.

    Shape:
        points0, points1: ``(K, 2)``; H_0to1: ``(3, 3)``.
    """
    ts = _thresholds(thresholds)
    err = reprojection_errors_h(points0, points1, H_0to1)
    if err.size == 0:
        return {t: 0.0 for t in ts}
    return {t: float(np.mean(err <= t)) for t in ts}


# ------------------------------------------------------------ homography estimation


def homography_corner_error(H_est: Optional[Any], H_gt: Any, image_size_wh: Any) -> float:
    """Mean corner error of an estimated homography (XFeat / SuperPoint HPatches protocol).

    The four corners are the centres of the corner pixels of image 0,
    ``(0, 0), (W-1, 0), (W-1, H-1), (0, H-1)`` in the featmatch convention (some
    reference code warps ``(W, H)`` instead; the difference is below a pixel for
    reasonable homographies). Each is warped by ``H_est`` and by ``H_gt``; the result
    is the mean of the four distances in image-1 pixels.

    Args:
        H_est: estimated homography from image 0 to image 1, or ``None`` when the
            estimation failed.
        H_gt: ground-truth homography from image 0 to image 1.
        image_size_wh: ``(W, H)`` of image 0.

    Returns:
        The mean corner distance in pixels; ``inf`` when ``H_est`` is ``None``, not
        finite, or sends a corner to infinity.

    Shape:
        H_est, H_gt: ``(3, 3)``; image_size_wh: 2 numbers.
    """
    Hg = _matrix(H_gt, "H_gt", (3, 3))
    w, h = _size_wh(image_size_wh, "image_size_wh")
    if H_est is None:
        return math.inf
    He = _matrix(H_est, "H_est", (3, 3))
    if not np.all(np.isfinite(He)):
        return math.inf
    corners = np.array([[0.0, 0.0], [w - 1, 0.0], [w - 1, h - 1], [0.0, h - 1]])
    err = np.linalg.norm(warp_points_h(corners, He) - warp_points_h(corners, Hg), axis=1)
    mean = float(np.mean(err))
    return mean if math.isfinite(mean) else math.inf


def mha(corner_errors: Any, thresholds: Iterable = (1, 3, 5, 7, 10)) -> dict:
    """Mean homography accuracy: fraction of pairs with corner error ``<= t`` pixels.

    Args:
        corner_errors: one :func:`homography_corner_error` per pair (``inf`` = failure).
        thresholds: pixel thresholds; XFeat reports 3, 5 and 7.

    Returns:
        ``{t: fraction}``; every value is ``nan`` for an empty list of pairs.

    Shape:
        corner_errors: ``(P,)``.
    """
    ts = _thresholds(thresholds)
    e = _errors(corner_errors, "corner_errors")
    if e.size == 0:
        return {t: math.nan for t in ts}
    return {t: float(np.mean(e <= t)) for t in ts}


def error_auc(errors: Any, thresholds: Iterable) -> dict:
    """Area under the cumulative error (recall) curve up to each threshold, normalised.

    The SuperGlue / LoFTR ``error_auc``: sort the errors ``e_1 <= ... <= e_n``, put the
    curve points ``(0, 0), (e_1, 1/n), ..., (e_n, 1)``, keep those with ``e_k < t``
    (strictly), close the curve at ``(t, recall of the last kept point)``, integrate
    with the trapezoidal rule and divide by ``t``. Failures (``inf`` or ``nan``) count
    in ``n`` but never enter the curve.

    Args:
        errors: one error per pair (degrees for pose, pixels for homographies).
        thresholds: positive thresholds in the unit of ``errors``.

    Returns:
        ``{t: auc in [0, 1]}``; every value is ``nan`` for an empty list of pairs.

    Shape:
        errors: ``(P,)``.
    """
    ts = _thresholds(thresholds)
    e = _errors(errors, "errors")
    if e.size == 0:
        return {t: math.nan for t in ts}
    e = np.sort(e)
    recall = np.concatenate([[0.0], np.arange(1, e.size + 1) / e.size])
    e = np.concatenate([[0.0], e])
    out = {}
    for t in ts:
        last = int(np.searchsorted(e, t, side="left"))  # >= 1 because e[0] = 0 < t
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        x = np.concatenate([e[:last], [float(t)]])
        out[t] = float(np.sum(np.diff(x) * (r[1:] + r[:-1]) / 2.0) / t)
    return out


def homography_auc(corner_errors: Any, thresholds: Iterable = (1, 3, 5, 10)) -> dict:
    """AUC of the corner-error curve (:func:`error_auc` on :func:`homography_corner_error`).

    Shape:
        corner_errors: ``(P,)`` pixels; returns ``{t: auc}``.
    """
    return error_auc(corner_errors, thresholds)


# ------------------------------------------------- detector / descriptor (LIFT, Sec. 4.1)


def _shared_selection(kpts0, kpts1, H_0to1, size0_wh, size1_wh, max_keypoints, scores0, scores1):
    k0 = _points(kpts0, "kpts0")
    k1 = _points(kpts1, "kpts1")
    H = _matrix(H_0to1, "H_0to1", (3, 3))
    Hinv = _inv_h(H, "H_0to1")
    if max_keypoints is not None and (not isinstance(max_keypoints, (int, np.integer)) or max_keypoints < 0):
        raise UsageError(f"max_keypoints must be a non-negative int or None, got {max_keypoints!r}")

    def top(k, scores, name):
        if scores is None:
            idx = np.arange(len(k))
        else:
            s = _np(scores, name)
            check_shape(name, s, (len(k),))
            idx = np.argsort(-s, kind="stable")
        return idx if max_keypoints is None else idx[:max_keypoints]

    sel0 = top(k0, scores0, "scores0")
    sel1 = top(k1, scores1, "scores1")
    sel0 = sel0[visible_mask_h(k0[sel0], H, size1_wh)]
    sel1 = sel1[visible_mask_h(k1[sel1], Hinv, size0_wh)]
    return k0, k1, H, sel0, sel1


def repeatability(
    kpts0: Any,
    kpts1: Any,
    H_0to1: Any,
    size0_wh: Any,
    size1_wh: Any,
    threshold: float = 3.0,
    max_keypoints: Optional[int] = 1000,
    scores0: Any = None,
    scores1: Any = None,
) -> float:
    """Detector repeatability as in LIFT (Section 4.1, protocol of Mikolajczyk & Schmid [35]).

    1. Keep the ``max_keypoints`` best keypoints of each image (highest score first;
       without scores the first ones, assuming the detector sorted them).
    2. Restrict to the shared viewpoint region: a keypoint of image 0 is kept when
       ``H_0to1`` maps it inside image 1, a keypoint of image 1 when ``H_0to1^-1``
       maps it inside image 0 (:func:`visible_mask_h`). ``n0``, ``n1`` = the counts kept.
    3. Candidate correspondences are pairs with ``||H_0to1(k0) - k1|| <= threshold``
       (image-1 pixels). They are made one-to-one greedily by increasing distance.
    4. Repeatability = number of one-to-one correspondences / ``min(n0, n1)``.

    Points instead of the protocol's ellipse overlap, as in SuperPoint / LIFT on point
    detectors. Returns ``0.0`` when either image has no keypoint in the shared region.

    Args:
        kpts0, kpts1: keypoints of images 0 and 1.
        H_0to1: ground-truth homography from image 0 to image 1.
        size0_wh, size1_wh: ``(W, H)`` of images 0 and 1.
        threshold: correspondence distance in pixels.
        max_keypoints: keypoints kept per image before restricting to the shared
            region (LIFT: 1000); ``None`` keeps all.
        scores0, scores1: optional detection scores (higher is better).

    Shape:
        kpts0: ``(N0, 2)``; kpts1: ``(N1, 2)``; H_0to1: ``(3, 3)``;
        scores0: ``(N0,)``; scores1: ``(N1,)``.
    """
    k0, k1, H, sel0, sel1 = _shared_selection(
        kpts0, kpts1, H_0to1, size0_wh, size1_wh, max_keypoints, scores0, scores1
    )
    n = min(sel0.size, sel1.size)
    if n == 0:
        return 0.0
    d = np.linalg.norm(warp_points_h(k0[sel0], H)[:, None, :] - k1[sel1][None, :, :], axis=-1)
    d[~(d <= threshold)] = np.inf
    return float(len(_greedy_one_to_one(d)) / n)


def matching_score(
    kpts0: Any,
    kpts1: Any,
    H_0to1: Any,
    size0_wh: Any,
    size1_wh: Any,
    matches: Any = None,
    desc0: Any = None,
    desc1: Any = None,
    threshold: float = 3.0,
    max_keypoints: Optional[int] = 1000,
    scores0: Any = None,
    scores1: Any = None,
) -> float:
    """Matching score as in LIFT (Section 4.1): correct matches over shared-region features.

    "The ratio of ground truth correspondences that can be recovered by the whole
    pipeline over the number of features proposed by the pipeline in the shared
    viewpoint region." Computed as:

    1. Select keypoints exactly as :func:`repeatability` (top ``max_keypoints`` by score,
       then the shared viewpoint region); ``n0``, ``n1`` = the counts kept.
    2. Matches: the given one-to-one ``matches`` (pairs touching a keypoint outside the
       selection are dropped), or, without ``matches``, nearest-neighbour descriptor
       matching made one-to-one greedily by increasing descriptor distance (the
       Mikolajczyk-Schmid / VLBenchmarks rule; every mutual nearest neighbour is
       kept) among the selected keypoints.
    3. A match ``(i, j)`` is correct when ``||H_0to1(kpts0[i]) - kpts1[j]|| <= threshold``.
    4. Matching score = correct matches / ``min(n0, n1)``; ``0.0`` when that is 0.

    Args:
        kpts0, kpts1, H_0to1, size0_wh, size1_wh, threshold, max_keypoints, scores0,
            scores1: as in :func:`repeatability`.
        matches: ``(i, j)`` index pairs into ``kpts0`` / ``kpts1`` (e.g.
            ``stack([m.indices0, m.indices1], -1)``); each index may appear once.
        desc0, desc1: descriptors, required without ``matches``; float descriptors
            use the L2 distance, ``uint8`` (binary) descriptors the Hamming distance.

    Shape:
        kpts0: ``(N0, 2)``; kpts1: ``(N1, 2)``; matches: ``(M, 2)`` int;
        desc0: ``(N0, D)``; desc1: ``(N1, D)``.
    """
    k0, k1, H, sel0, sel1 = _shared_selection(
        kpts0, kpts1, H_0to1, size0_wh, size1_wh, max_keypoints, scores0, scores1
    )
    if matches is None:
        d0, d1 = _descriptors(desc0, desc1, len(k0), len(k1))
    else:
        m = _index_pairs(matches, "matches", len(k0), len(k1))
        if len(np.unique(m[:, 0])) != len(m) or len(np.unique(m[:, 1])) != len(m):
            raise UsageError("matches must be one-to-one (each keypoint index at most once)")
    n = min(sel0.size, sel1.size)
    if n == 0:
        return 0.0
    if matches is None:
        pairs = _greedy_one_to_one(_descriptor_distances(d0[sel0], d1[sel1]))
        i, j = sel0[pairs[:, 0]], sel1[pairs[:, 1]]
    else:
        keep = np.isin(m[:, 0], sel0) & np.isin(m[:, 1], sel1)
        i, j = m[keep, 0], m[keep, 1]
    err = np.linalg.norm(warp_points_h(k0[i], H) - k1[j], axis=1)
    return float(np.count_nonzero(err <= threshold) / n)


def nn_map(desc0: Any, desc1: Any, gt_mask: Any = None, *, gt_matches: Any = None) -> float:
    """Nearest-neighbour average precision of one pair, as in LIFT (Section 4.1).

    LIFT's "NN mAP" is the area under the precision-recall curve of nearest-neighbour
    matching, swept over the descriptor distance threshold, averaged over pairs (this
    function returns one pair's AP; average it over pairs). Computed as:

    1. Each descriptor of image 0 is matched to its nearest neighbour in image 1 (L2
       distance, Hamming for ``uint8`` descriptors; ties go to the lowest index).
    2. The match of row ``i`` is a true positive when ``gt[i, nn(i)]`` holds.
    3. Positives ``P`` = rows of ``gt`` with at least one correspondence (at most one
       true positive per row is possible).
    4. Accepting matches with distance ``<= tau``: precision = TP / accepted,
       recall = TP / P. AP = sum over the distinct distances ``tau_k`` of
       ``(recall_k - recall_{k-1}) * precision_k`` (step integration without
       interpolation, as ``sklearn.metrics.average_precision_score``; equal distances
       enter together).

    Restrict the descriptors to the shared viewpoint region beforehand (e.g. with
    :func:`visible_mask_h`) to follow the LIFT protocol.

    Args:
        desc0, desc1: descriptors of images 0 and 1.
        gt_mask: ground-truth correspondences as a boolean matrix (e.g.
            :func:`correspondence_mask_h`).
        gt_matches: alternatively, ground-truth ``(i, j)`` index pairs.

    Returns:
        AP in ``[0, 1]``; ``nan`` when there is no ground-truth correspondence.

    Shape:
        desc0: ``(N0, D)``; desc1: ``(N1, D)``; gt_mask: ``(N0, N1)`` bool;
        gt_matches: ``(M, 2)`` int.
    """
    d0, d1 = _descriptors(desc0, desc1)
    n0, n1 = len(d0), len(d1)
    if (gt_mask is None) == (gt_matches is None):
        raise UsageError("give exactly one of gt_mask and gt_matches")
    if gt_mask is not None:
        gt = _np(gt_mask, "gt_mask", dtype=bool)
        check_shape("gt_mask", gt, (n0, n1))
    else:
        pairs = _index_pairs(gt_matches, "gt_matches", n0, n1)
        gt = np.zeros((n0, n1), dtype=bool)
        gt[pairs[:, 0], pairs[:, 1]] = True
    positives = int(np.count_nonzero(gt.any(1))) if n1 else 0
    if positives == 0:
        return math.nan
    dist = _descriptor_distances(d0, d1)
    nn = np.argmin(dist, axis=1)
    nn_dist = dist[np.arange(n0), nn]
    correct = gt[np.arange(n0), nn]
    order = np.argsort(nn_dist, kind="stable")
    nn_dist, correct = nn_dist[order], correct[order]
    tp = np.cumsum(correct)
    accepted = np.arange(1, n0 + 1)
    ends = np.flatnonzero(np.r_[nn_dist[1:] != nn_dist[:-1], True])  # last index of each tie group
    precision = tp[ends] / accepted[ends]
    recall = tp[ends] / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# ------------------------------------------------------------------- relative pose


def relative_pose_error(
    T_0to1_gt: Any, R_est: Optional[Any], t_est: Optional[Any], ignore_gt_t_thr: float = 0.0
) -> tuple[float, float]:
    """Rotation and translation-direction errors of an estimated relative pose, in degrees.

    Rotation error: the angle of ``R_gt^T R_est``. Translation error: the angle between
    ``t_gt`` and ``t_est``, folded as ``min(err, 180 - err)`` because an essential matrix
    fixes ``t`` only up to sign (SuperGlue / LoFTR). Angles use ``atan2`` forms, exact
    near 0 and 180 degrees. The pose benchmarks score a pair by ``max`` of the two.

    Args:
        T_0to1_gt: ground-truth transform from camera-0 to camera-1 coordinates.
        R_est, t_est: estimated rotation and translation (any scale); ``None`` when the
            estimation failed, giving ``(inf, inf)``.
        ignore_gt_t_thr: when ``||t_gt|| < ignore_gt_t_thr`` the translation error is 0
            (LoFTR's guard against pure-rotation pairs).

    Returns:
        ``(rotation_error_deg, translation_error_deg)``. The translation error is ``inf``
        for a zero ``t_est`` and ``nan`` for a zero ``t_gt`` not covered by the guard.

    Shape:
        T_0to1_gt: ``(4, 4)``; R_est: ``(3, 3)``; t_est: ``(3,)`` or ``(3, 1)``.
    """
    T = _matrix(T_0to1_gt, "T_0to1_gt", (4, 4))
    if R_est is None or t_est is None:
        return math.inf, math.inf
    R = _matrix(R_est, "R_est", (3, 3))
    t = _np(t_est, "t_est")
    if t.shape not in ((3,), (3, 1)):
        raise UsageError(f"t_est has shape {t.shape}, expected (3,) or (3, 1)")
    t = t.reshape(3)
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return math.inf, math.inf
    R_gt, t_gt = T[:3, :3], T[:3, 3]

    dR = R_gt.T @ R
    cos_r = (np.trace(dR) - 1.0) / 2.0
    sin_r = np.linalg.norm([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]]) / 2.0
    err_r = math.degrees(math.atan2(sin_r, cos_r))

    n_gt, n_est = float(np.linalg.norm(t_gt)), float(np.linalg.norm(t))
    if n_gt < ignore_gt_t_thr:
        err_t = 0.0
    elif n_est == 0.0:
        err_t = math.inf
    elif n_gt == 0.0:
        err_t = math.nan
    else:
        err_t = math.degrees(math.atan2(float(np.linalg.norm(np.cross(t_gt, t))), float(t_gt @ t)))
        err_t = min(err_t, 180.0 - err_t)
    return float(err_r), float(err_t)


def pose_auc(errors: Any, thresholds: Iterable = (5, 10, 20)) -> dict:
    """Pose AUC at degree thresholds (SuperGlue / LoFTR / XFeat): :func:`error_auc`.

    Pass one error per pair, usually ``max(rotation_error, translation_error)`` from
    :func:`relative_pose_error`; failed pairs carry ``inf``.

    Shape:
        errors: ``(P,)`` degrees; returns ``{t: auc}``.
    """
    return error_auc(errors, thresholds)


def pose_accuracy(errors: Any, threshold: float = 10.0) -> float:
    """Fraction of pairs whose pose error is ``<= threshold`` degrees (XFeat's Acc@10).

    Returns ``nan`` for an empty list of pairs.

    Shape:
        errors: ``(P,)`` degrees, usually ``max`` of rotation and translation errors.
    """
    _thresholds([threshold], "threshold")
    e = _errors(errors, "errors")
    if e.size == 0:
        return math.nan
    return float(np.mean(e <= threshold))


# ----------------------------------------------------------------------- epipolar


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def epipolar_errors(
    points0: Any, points1: Any, T_0to1: Any, K0: Any, K1: Any, kind: str = "sampson"
) -> np.ndarray:
    """Epipolar error of each match under a known relative pose.

    With ``E = [t]_x R`` (from ``T_0to1``) and ``F = K1^-T E K0^-1``, homogeneous points
    ``x0, x1`` and epipolar lines ``l1 = F x0`` (image 1), ``l0 = F^T x1`` (image 0):

    * ``"sampson"`` (pixels): the Sampson distance
      ``|x1^T F x0| / sqrt(l1_x^2 + l1_y^2 + l0_x^2 + l0_y^2)``, the first-order
      approximation of the smallest total displacement (in the 4-D joint pixel space)
      that makes the match satisfy the epipolar constraint.
    * ``"symmetric"`` (pixels): the mean of the two point-to-epipolar-line distances,
      ``(d(x1, l1) + d(x0, l0)) / 2``.
    * ``"symmetric_normalized"`` (squared normalised image units, no square root): the
      LoFTR quantity ``d(x1n, E x0n)^2 + d(x0n, E^T x1n)^2`` with ``xn = K^-1 x``; LoFTR
      counts a match correct when it is below ``5e-4``.

    Undefined (``nan``) for a zero translation, where ``E = 0``.

    Args:
        points0, points1: matched points in pixels.
        T_0to1: ground-truth transform from camera-0 to camera-1 coordinates.
        K0, K1: camera intrinsics of images 0 and 1 (pixels).
        kind: ``"sampson"``, ``"symmetric"`` or ``"symmetric_normalized"``.

    Shape:
        points0, points1: ``(K, 2)``; T_0to1: ``(4, 4)``; K0, K1: ``(3, 3)``;
        output: ``(K,)``.
    """
    if kind not in _EPIPOLAR_KINDS:
        raise UsageError(f"kind must be one of {', '.join(_EPIPOLAR_KINDS)}, got {kind!r}")
    p0, p1 = _same_points(points0, points1)
    T = _matrix(T_0to1, "T_0to1", (4, 4))
    K0m = _matrix(K0, "K0", (3, 3))
    K1m = _matrix(K1, "K1", (3, 3))
    K0i, K1i = _inv_h(K0m, "K0"), _inv_h(K1m, "K1")
    E = _skew(T[:3, 3]) @ T[:3, :3]
    x0 = np.concatenate([p0, np.ones((len(p0), 1))], 1)
    x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
    if kind == "symmetric_normalized":
        x0, x1, M = x0 @ K0i.T, x1 @ K1i.T, E
    else:
        M = K1i.T @ E @ K0i
    l1 = x0 @ M.T  # epipolar lines in image 1
    l0 = x1 @ M  # epipolar lines in image 0
    alg = np.sum(x1 * l1, axis=1)
    n1 = l1[:, 0] ** 2 + l1[:, 1] ** 2
    n0 = l0[:, 0] ** 2 + l0[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "sampson":
            return np.abs(alg) / np.sqrt(n1 + n0)
        if kind == "symmetric":
            return 0.5 * (np.abs(alg) / np.sqrt(n1) + np.abs(alg) / np.sqrt(n0))
        return alg**2 * (1.0 / n1 + 1.0 / n0)


def epipolar_precision(errors: Any, threshold: float = 5e-4) -> float:
    """Fraction of matches with epipolar error ``<= threshold`` (LoFTR's precision).

    The threshold is in the unit of ``errors``: the default ``5e-4`` is LoFTR's, for
    ``epipolar_errors(..., kind="symmetric_normalized")``; use a pixel threshold
    (e.g. 1-5) for ``"sampson"`` or ``"symmetric"``. ``nan`` errors count as wrong.
    Returns ``0.0`` for zero matches (as LoFTR does).

    Shape:
        errors: ``(K,)``.
    """
    _thresholds([threshold], "threshold")
    e = _vector(errors, "errors")
    if e.size == 0:
        return 0.0
    return float(np.mean(e <= threshold))


def mean_inlier_ratio(inlier_masks: Any) -> float:
    """Mean inlier ratio (XFeat's MIR): per pair, robust-estimator inliers / matches.

    Each pair's ratio is ``count(inliers) / len(inliers)``, ``0.0`` for a pair with no
    matches or a ``None`` mask (failed estimation); the result is the mean over pairs,
    ``nan`` for no pairs.

    Args:
        inlier_masks: a sequence with one boolean mask per pair (e.g.
            ``Estimate.inliers``), a single 1-D mask (one pair), or a 2-D array of
            equal-length masks (one row per pair).

    Shape:
        each mask: ``(K_p,)`` bool.
    """
    if isinstance(inlier_masks, (np.ndarray, torch.Tensor)):
        arr = _np(inlier_masks, "inlier_masks", dtype=bool)
        if arr.ndim == 1:
            masks: Sequence = [arr]
        elif arr.ndim == 2:
            masks = list(arr)
        else:
            raise UsageError(f"inlier_masks has shape {arr.shape}, expected (K,) or (P, K)")
    else:
        masks = list(inlier_masks)
    if not masks:
        return math.nan
    ratios = []
    for p, m in enumerate(masks):
        if m is None:
            ratios.append(0.0)
            continue
        a = _np(m, f"inlier_masks[{p}]", dtype=bool)
        check_shape(f"inlier_masks[{p}]", a, (-1,))
        ratios.append(float(a.mean()) if a.size else 0.0)
    return float(np.mean(ratios))
