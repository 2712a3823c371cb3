"""Relative pose benchmark on MegaDepth-1500 / ScanNet-1500 style pair lists
(``featmatch eval pose``).

Protocol (recorded in the JSON report):

1. Pairs from ``pairs.json`` / ``pairs.txt`` (:func:`featmatch.eval.data.pose_pairs`):
   images, intrinsics ``K0``, ``K1`` for the stored resolution, ground truth ``T_0to1``.
2. Predictions: ``model.match`` at the stored resolution or with the long side resized to
   ``--resize`` (points come back in original pixels, so ``K`` is never rescaled). Cached
   per model + config.
3. Scoring from the cache: the essential matrix and pose from
   :func:`featmatch.estimators.estimate_relative_pose` (OpenCV USAC_MAGSAC, threshold
   0.5 px divided by the mean focal length, seed 0) or poselib's LO-RANSAC
   (``poselib.estimate_relative_pose``, ``max_epipolar_error`` = threshold px, seed 0,
   with its non-linear refinement); errors: rotation angle and translation-direction angle
   (sign-folded), pose error = max of the two, AUC@{5,10,20} deg (SuperGlue / LoFTR
   ``error_auc``) and Acc@10; epipolar precision of all matches under the ground truth:
   LoFTR's symmetric squared epipolar distance in normalised coordinates <= 5e-4, and the
   Sampson error <= 1 px; mean inlier ratio (estimator inliers / matches, 0 on failure).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import FeatmatchError, UsageError
from ..types import Estimate
from . import metrics
from .data import PosePair, pose_pairs, subset_names
from .summary import common, mean

AUC_THRESHOLDS = (5, 10, 20)
EPI_NORMALIZED_THRESHOLD = 5e-4  # LoFTR, kind="symmetric_normalized"
EPI_SAMPSON_THRESHOLD_PX = 1.0
ESTIMATORS = ("opencv", "poselib")
POSELIB_MISSING = "--estimator poselib needs poselib: pip install poselib (or use --estimator opencv)"


def protocol(*, estimator: str, method: str, threshold: float, resize: Optional[int],
             max_keypoints: Optional[int]) -> dict:
    est: dict = {"name": estimator, "threshold_px": threshold, "seed": 0}
    if estimator == "opencv":
        est.update({"function": "cv2.findEssentialMat + recoverPose on K-normalised points",
                    "method": method, "confidence": 0.99999, "max_iters": 10000,
                    "threshold_normalised": "threshold_px / mean(fx0, fy0, fx1, fy1)"})
    else:
        est.update({"function": "poselib.estimate_relative_pose (LO-RANSAC + non-linear refinement)",
                    "max_epipolar_error_px": threshold})
    return {
        "benchmark": "pose",
        "resize_long_side": resize,
        "max_keypoints": max_keypoints,
        "estimator": est,
        "pose_error": "max(rotation angle of R_gt^T R, angle between t_gt and t, folded to <= 90 deg) in degrees; inf on failure",
        "auc_thresholds_deg": list(AUC_THRESHOLDS),
        "accuracy_threshold_deg": 10,
        "epipolar_precision": {"symmetric_normalized": EPI_NORMALIZED_THRESHOLD,
                               "sampson_px": EPI_SAMPSON_THRESHOLD_PX,
                               "over": "all matches; 0 for a pair without matches"},
        "mean_inlier_ratio": "estimator inliers / matches per pair, 0 on failure; mean over pairs",
    }


def poselib_available() -> bool:
    try:
        import poselib  # noqa: F401
    except ImportError:
        return False
    return True


def require_poselib():
    """The poselib module, or the one-line error that says how to get it."""
    try:
        import poselib
    except ImportError:
        raise FeatmatchError(POSELIB_MISSING) from None
    return poselib


def estimate_pose_poselib(p0: np.ndarray, p1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                          size0_wh: Sequence[int], size1_wh: Sequence[int], *, threshold: float = 0.5,
                          seed: int = 0) -> Estimate:
    """Relative pose with poselib's LO-RANSAC (5-point solver + non-linear refinement).

    Shape:
        p0, p1: ``(K, 2)`` pixels; K0, K1: ``(3, 3)``. Returns an ``Estimate`` with
        ``R (3, 3)``, unit ``t (3,)`` and ``inliers (K,)``.
    """
    poselib = require_poselib()
    n = len(p0)
    if n < 5:
        return Estimate("essential", None, np.zeros(n, bool), info={"reason": f"needs at least 5 matches, got {n}"})

    def cam(K: np.ndarray, size: Sequence[int]) -> dict:
        return {"model": "PINHOLE", "width": int(size[0]), "height": int(size[1]),
                "params": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]}

    pose, info = poselib.estimate_relative_pose(
        np.ascontiguousarray(p0, np.float64), np.ascontiguousarray(p1, np.float64), cam(K0, size0_wh),
        cam(K1, size1_wh), {"max_epipolar_error": float(threshold), "seed": int(seed)}, {})
    inl = np.asarray(info.get("inliers", np.zeros(n, bool)), bool).reshape(-1)
    if inl.size != n or not inl.any():
        return Estimate("essential", None, np.zeros(n, bool), info={"reason": "no consensus"})
    R = np.asarray(pose.R, np.float64)
    t = np.asarray(pose.t, np.float64).reshape(3)
    tn = float(np.linalg.norm(t))
    if not np.isfinite(R).all() or not tn > 0:
        return Estimate("essential", None, np.zeros(n, bool), info={"reason": "degenerate pose"})
    t = t / tn
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return Estimate("essential", tx @ R, inl, R=R, t=t, info={"method": "poselib", "threshold_px": threshold})


def score_pair(pred: dict, pair: PosePair, *, estimator: str = "opencv", method: str = "usac_magsac",
               threshold: float = 0.5) -> dict:
    """Metrics of one pair from its cached prediction."""
    p0 = np.asarray(pred["points0"], np.float64).reshape(-1, 2)
    p1 = np.asarray(pred["points1"], np.float64).reshape(-1, 2)
    if estimator == "opencv":
        from ..estimators import estimate_relative_pose

        est = estimate_relative_pose(p0, p1, K0=pair.K0, K1=pair.K1, method=method, threshold=threshold, seed=0)
    else:
        est = estimate_pose_poselib(p0, p1, pair.K0, pair.K1, pred["size0_wh"], pred["size1_wh"],
                                    threshold=threshold, seed=0)
    err_r, err_t = metrics.relative_pose_error(pair.T_0to1, est.R, est.t)
    err = max(err_r, err_t) if not (math.isnan(err_r) or math.isnan(err_t)) else math.inf
    n = len(p0)
    prec_n = prec_s = 0.0
    if n:
        e_n = metrics.epipolar_errors(p0, p1, pair.T_0to1, pair.K0, pair.K1, kind="symmetric_normalized")
        e_s = metrics.epipolar_errors(p0, p1, pair.T_0to1, pair.K0, pair.K1, kind="sampson")
        prec_n = metrics.epipolar_precision(e_n, EPI_NORMALIZED_THRESHOLD)
        prec_s = metrics.epipolar_precision(e_s, EPI_SAMPSON_THRESHOLD_PX)
    return {
        "key": pair.key, "subset": pair.subset,
        "num_keypoints0": int(pred["num_keypoints0"]), "num_keypoints1": int(pred["num_keypoints1"]),
        "num_matches": n, "num_inliers": est.num_inliers,
        "inlier_ratio": float(est.num_inliers / n) if n and est.success else 0.0,
        "error_R_deg": float(err_r), "error_t_deg": float(err_t), "error_deg": float(err),
        "precision_normalized": float(prec_n), "precision_sampson": float(prec_s),
        "time_s": float(pred["time_s"]),
    }


def summarize(rows: Sequence[dict]) -> dict:
    errs = [r["error_deg"] for r in rows]
    return {
        "pairs": len(rows),
        "auc": {str(t): v for t, v in metrics.pose_auc(errs, AUC_THRESHOLDS).items()},
        "acc10": metrics.pose_accuracy(errs, 10.0) if rows else math.nan,
        "precision_normalized": mean([r["precision_normalized"] for r in rows]),
        "precision_sampson": mean([r["precision_sampson"] for r in rows]),
        "mean_inlier_ratio": mean([r["inlier_ratio"] for r in rows]),
        **common(rows, errs, "median_error_deg"),
    }


def summarize_subsets(rows: Sequence[dict], pairs: Sequence[PosePair]) -> dict:
    out = {"all": summarize(rows)}
    subsets = subset_names(list(pairs), "subset")
    if len(subsets) > 1:
        for s in subsets:
            out[s] = summarize([r for r in rows if r["subset"] == s])
    return out


def run(models: Sequence[str], data: Any, output: Any, *, resize: Optional[int] = None,
        max_keypoints: Optional[int] = None, estimator: str = "opencv", method: str = "usac_magsac",
        threshold: float = 0.5, overwrite: bool = False, max_pairs: Optional[int] = None,
        device: Any = None, progress: bool = True, plot: bool = True, command: Optional[str] = None,
        options: Optional[Sequence[str]] = None) -> dict:
    """Run the pose benchmark for several models; write ``pose.{json,md,png}`` to ``output``
    (``pose-poselib.*`` with ``estimator="poselib"``)."""
    from . import report
    from .predict import load_models, predict_pairs, spread

    if estimator not in ESTIMATORS:
        raise UsageError(f"unknown estimator '{estimator}'; use one of {', '.join(ESTIMATORS)}")
    if estimator == "poselib" and not poselib_available():
        raise FeatmatchError(POSELIB_MISSING)
    if not threshold > 0:
        raise UsageError(f"--threshold must be positive, got {threshold}")
    if max_pairs is not None and max_pairs < 1:
        raise UsageError(f"--max-pairs must be positive, got {max_pairs}")
    pairs = pose_pairs(data)
    pairs = spread(pairs, max_pairs)  # an even spread over the sequences, not the first N
    loaded = load_models(models, resize=resize, max_keypoints=max_keypoints, device=device, options=options)
    out_dir = Path(output)
    results = {}
    for lm in loaded:
        preds, cache_file = predict_pairs(lm, pairs, out_dir / "cache" / "pose", overwrite=overwrite, progress=progress)
        rows = [score_pair(preds[p.key], p, estimator=estimator, method=method, threshold=threshold) for p in pairs]
        results[lm.name] = report.model_entry(lm, cache_file, summarize_subsets(rows, pairs), rows)
    rep = report.build_report("pose", data, pairs, results,
                              protocol(estimator=estimator, method=method, threshold=threshold, resize=resize,
                                       max_keypoints=max_keypoints), command)
    stem = "pose" if estimator == "opencv" else f"pose-{estimator}"  # estimators side by side
    rep["outputs"] = {k: str(v) for k, v in report.write_report(rep, out_dir, plot=plot, stem=stem).items()}
    return rep


__all__ = ["run", "score_pair", "summarize", "summarize_subsets", "protocol", "estimate_pose_poselib",
           "poselib_available", "AUC_THRESHOLDS", "ESTIMATORS"]
