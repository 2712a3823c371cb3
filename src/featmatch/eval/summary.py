"""Parts of a benchmark summary that every benchmark shares (counts, failures, timing)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean(values: Sequence[float]) -> float:
    """Mean, NaN for no values."""
    return float(np.mean(values)) if len(values) else math.nan


def common(rows: Sequence[dict], errors: Sequence[float], median_key: str) -> dict:
    """Keypoint / match / inlier means, failures (non-finite errors), the median error under
    ``median_key`` and the mean time, from rows with ``num_keypoints0/1`` (-1: none, dense
    matchers), ``num_matches``, ``num_inliers`` and ``time_s``."""
    kp = [0.5 * (r["num_keypoints0"] + r["num_keypoints1"]) for r in rows if r["num_keypoints0"] >= 0]
    return {
        "mean_keypoints": mean(kp) if kp else None,
        "mean_matches": mean([r["num_matches"] for r in rows]),
        "mean_inliers": mean([r["num_inliers"] for r in rows]),
        "failures": int(sum(1 for e in errors if not math.isfinite(e))),
        median_key: float(np.median(errors)) if len(errors) else math.nan,
        "mean_time_s": mean([r["time_s"] for r in rows]),
    }
