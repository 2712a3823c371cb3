"""Homography benchmark on HPatches-layout data (``featmatch eval homography``).

Protocol (recorded in the JSON report):

1. Pairs: image 1 of each sequence against images 2..N, ground truth ``H_1_k``
   (:func:`featmatch.eval.data.homography_pairs`); ``i_*`` / ``v_*`` sequences form the
   illumination / viewpoint splits, other names the split ``other``.
2. Predictions: ``model.match`` on the images at their stored size, or resized so the long
   side is ``--resize`` (the model resizes; points come back in original pixels). Cached
   per model + config (:mod:`featmatch.eval.cache`).
3. Scoring (from the cache, never recomputing matches): ``estimate_homography`` (OpenCV
   USAC_MAGSAC by default, threshold 3 px, seed 0) or, with ``estimator="poselib"``,
   poselib's LO-RANSAC (``poselib.estimate_homography``, ``max_reproj_error`` = threshold,
   seed 0, with its non-linear refinement on the inliers; the estimator of the LightGlue
   paper's homography benchmark) on all matches; mean corner error of
   the estimate in image-k pixels (corners = centres of the corner pixels of image 1) ->
   MHA@{1,3,5,7,10} (fraction of pairs with error <= t) and AUC@{1,3,5,10} (SuperGlue's
   error AUC); MMA@1..10 on *all* matches (fraction within t px of ``H_1_k``, per pair,
   averaged over pairs); mean numbers of keypoints, matches and estimator inliers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import FeatmatchError, UsageError
from ..types import Estimate
from . import metrics
from .data import HomographyPair, homography_pairs, subset_names
from .pose import POSELIB_MISSING, poselib_available, require_poselib
from .summary import common, mean

MHA_THRESHOLDS = (1, 3, 5, 7, 10)
AUC_THRESHOLDS = (1, 3, 5, 10)
MMA_THRESHOLDS = tuple(range(1, 11))
ESTIMATORS = ("opencv", "poselib")


def protocol(*, threshold: float, method: str, resize: Optional[int], max_keypoints: Optional[int],
             estimator: str = "opencv") -> dict:
    if estimator == "opencv":
        est = {"name": "opencv.findHomography", "method": method, "threshold_px": threshold,
               "confidence": 0.9999, "max_iters": 10000, "seed": 0}
    else:
        est = {"name": "poselib", "function": "poselib.estimate_homography (LO-RANSAC + non-linear refinement)",
               "threshold_px": threshold, "max_reproj_error_px": threshold, "seed": 0}
    return {
        "benchmark": "homography",
        "pairs": "image 1 vs images 2..N of every sequence, ground truth H_1_k",
        "resize_long_side": resize,
        "max_keypoints": max_keypoints,
        "estimator": est,
        "corner_error": "mean distance of the 4 corner-pixel centres of image 1 warped by H_est and H_gt (image-k px); inf on failure",
        "mha_thresholds_px": list(MHA_THRESHOLDS),
        "auc_thresholds_px": list(AUC_THRESHOLDS),
        "mma_thresholds_px": list(MMA_THRESHOLDS),
        "mma": "per pair: fraction of all matches within t px of H_1_k(points0); mean over pairs (0 for no matches)",
    }


def estimate_homography_poselib(p0: np.ndarray, p1: np.ndarray, *, threshold: float = 3.0,
                                seed: int = 0) -> Estimate:
    """Homography with poselib's LO-RANSAC (4-point solver, local optimisation and a final
    non-linear refinement on the inliers).

    Shape:
        p0, p1: ``(K, 2)`` pixels. Returns an ``Estimate`` with ``model (3, 3)`` (``H[2, 2] = 1``;
        ``None`` on failure) and ``inliers (K,)``.
    """
    poselib = require_poselib()
    n = len(p0)
    if n < 4:
        return Estimate("homography", None, np.zeros(n, bool), info={"reason": f"needs at least 4 matches, got {n}"})
    H, info = poselib.estimate_homography(np.ascontiguousarray(p0, np.float64), np.ascontiguousarray(p1, np.float64),
                                          {"max_reproj_error": float(threshold), "seed": int(seed)}, {})
    inl = np.asarray(info.get("inliers", np.zeros(n, bool)), bool).reshape(-1)
    H = np.asarray(H, np.float64)
    if inl.size != n or not inl.any() or H.shape != (3, 3) or not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
        return Estimate("homography", None, np.zeros(n, bool), info={"reason": "no consensus"})
    return Estimate("homography", H / H[2, 2], inl, info={"method": "poselib", "threshold": threshold})


def score_pair(pred: dict, pair: HomographyPair, *, threshold: float = 3.0, method: str = "usac_magsac",
               estimator: str = "opencv") -> dict:
    """Metrics of one pair from its cached prediction (pure apart from the seeded RANSAC)."""
    from ..estimators import estimate_homography

    p0 = np.asarray(pred["points0"], np.float64).reshape(-1, 2)
    p1 = np.asarray(pred["points1"], np.float64).reshape(-1, 2)
    if estimator == "opencv":
        est = estimate_homography(p0, p1, method=method, threshold=threshold, seed=0)
    else:
        est = estimate_homography_poselib(p0, p1, threshold=threshold, seed=0)
    size0 = tuple(int(v) for v in np.asarray(pred["size0_wh"]).reshape(2))
    err = metrics.homography_corner_error(est.model, pair.H_0to1, size0)
    mma = metrics.mma(p0, p1, pair.H_0to1, MMA_THRESHOLDS)
    return {
        "key": pair.key, "sequence": pair.sequence, "split": pair.split,
        "num_keypoints0": int(pred["num_keypoints0"]), "num_keypoints1": int(pred["num_keypoints1"]),
        "num_matches": int(len(p0)), "num_inliers": est.num_inliers,
        "corner_error": float(err), "mma": {str(t): v for t, v in mma.items()},
        "time_s": float(pred["time_s"]),
    }


def summarize(rows: Sequence[dict]) -> dict:
    """Benchmark numbers over a list of :func:`score_pair` rows."""
    errs = [r["corner_error"] for r in rows]
    return {
        "pairs": len(rows),
        "mha": {str(t): v for t, v in metrics.mha(errs, MHA_THRESHOLDS).items()},
        "auc": {str(t): v for t, v in metrics.homography_auc(errs, AUC_THRESHOLDS).items()},
        "mma": {str(t): mean([r["mma"][str(t)] for r in rows]) for t in MMA_THRESHOLDS},
        **common(rows, errs, "median_corner_error"),
    }


def summarize_splits(rows: Sequence[dict], pairs: Sequence[HomographyPair]) -> dict:
    """``{"all": ..., "illumination": ..., "viewpoint": ...}`` (splits only when present)."""
    out = {"all": summarize(rows)}
    splits = subset_names(list(pairs), "split")
    if any(s in ("illumination", "viewpoint") for s in splits):
        for s in splits:
            out[s] = summarize([r for r in rows if r["split"] == s])
    return out


def run(models: Sequence[str], data: Any, output: Any, *, resize: Optional[int] = None,
        max_keypoints: Optional[int] = None, threshold: float = 3.0, method: str = "usac_magsac",
        estimator: str = "opencv", overwrite: bool = False, max_pairs: Optional[int] = None, device: Any = None,
        progress: bool = True, plot: bool = True, command: Optional[str] = None,
        options: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark for several models; write ``homography.{json,md,png}`` to ``output``.

    Returns:
        The report dict (also written as JSON).
    """
    from . import report
    from .predict import load_models, predict_pairs, spread

    if not threshold > 0:
        raise UsageError(f"--threshold must be positive, got {threshold}")
    if estimator not in ESTIMATORS:
        raise UsageError(f"unknown estimator '{estimator}'; use one of {', '.join(ESTIMATORS)}")
    if estimator == "poselib" and not poselib_available():
        raise FeatmatchError(POSELIB_MISSING)
    if max_pairs is not None and max_pairs < 1:
        raise UsageError(f"--max-pairs must be positive, got {max_pairs}")
    pairs = homography_pairs(data)
    pairs = spread(pairs, max_pairs)  # an even spread over the sequences, not the first N
    loaded = load_models(models, resize=resize, max_keypoints=max_keypoints, device=device, options=options)
    out_dir = Path(output)
    results = {}
    for lm in loaded:
        preds, cache_file = predict_pairs(lm, pairs, out_dir / "cache" / "homography", overwrite=overwrite, progress=progress)
        rows = [score_pair(preds[p.key], p, threshold=threshold, method=method, estimator=estimator) for p in pairs]
        results[lm.name] = report.model_entry(lm, cache_file, summarize_splits(rows, pairs), rows)
    rep = report.build_report("homography", data, pairs, results,
                              protocol(threshold=threshold, method=method, resize=resize, max_keypoints=max_keypoints,
                                       estimator=estimator), command)
    stem = "homography" if estimator == "opencv" else f"homography-{estimator}"  # estimators side by side
    rep["outputs"] = {k: str(v) for k, v in report.write_report(rep, out_dir, plot=plot, stem=stem).items()}
    return rep


__all__ = ["run", "score_pair", "summarize", "summarize_splits", "protocol", "estimate_homography_poselib",
           "MHA_THRESHOLDS", "AUC_THRESHOLDS", "MMA_THRESHOLDS"]
