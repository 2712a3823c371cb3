"""Relative pose benchmark on a rendered two-view scene with a known pose."""

from __future__ import annotations

import numpy as np
import pytest

from featmatch.errors import FeatmatchError, UsageError
from featmatch.eval import pose
from featmatch.eval.data import PosePair

from test_eval_data import SCENE_K, make_pose_scene, project_scene_points, scene_pose


def _pred(p0, p1):
    return {"points0": p0, "points1": p1, "size0_wh": np.array([200, 150]), "size1_wh": np.array([200, 150]),
            "num_keypoints0": len(p0), "num_keypoints1": len(p1), "time_s": 0.0}


ESTIMATORS = ["opencv"] + (["poselib"] if pose.poselib_available() else [])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_exact_correspondences_give_the_true_pose(estimator):
    T = scene_pose(6.0)
    p0, p1 = project_scene_points(T, 150)
    pair = PosePair("a|b", "scene", None, None, SCENE_K, SCENE_K, T)
    rng = np.random.default_rng(1)
    out0, out1 = rng.uniform(0, 200, (30, 2)), rng.uniform(0, 150, (30, 2))  # 30 outliers
    row = pose.score_pair(_pred(np.r_[p0, out0], np.r_[p1, out1]), pair, estimator=estimator)
    assert row["error_deg"] < 0.05 and row["num_matches"] == 180
    assert 140 <= row["num_inliers"] <= 155
    assert abs(row["precision_normalized"] - 150 / 180) < 0.05 and row["precision_sampson"] <= 150 / 180 + 1e-9
    failed = pose.score_pair(_pred(p0[:3], p1[:3]), pair, estimator=estimator)
    assert failed["error_deg"] == float("inf") and failed["inlier_ratio"] == 0.0
    s = pose.summarize([row, failed])
    assert s["failures"] == 1 and abs(s["auc"]["5"] - 0.5 * (1 - row["error_deg"] / 10)) < 0.01
    assert s["acc10"] == 0.5


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory):
    return make_pose_scene(tmp_path_factory.mktemp("pose"), n_pairs=2)


def test_pose_benchmark_runs_and_rescoring_uses_the_cache(scene_root, tmp_path, monkeypatch):
    from featmatch.eval import predict

    out = tmp_path / "out"
    rep = pose.run(["sift"], scene_root, out, progress=False)
    s = rep["models"]["sift"]["summary"]["all"]
    assert s["pairs"] == 2 and s["mean_matches"] > 50
    assert s["median_error_deg"] < 5.0 and s["auc"]["20"] > 0.5
    assert s["precision_normalized"] > 0.8 and 0 < s["mean_inlier_ratio"] <= 1
    assert rep["protocol"]["estimator"]["name"] == "opencv" and rep["protocol"]["estimator"]["threshold_px"] == 0.5
    for name in ("pose.json", "pose.md", "pose.png"):
        assert (out / name).stat().st_size > 0

    def fail(*a, **k):
        raise AssertionError("predictions must come from the cache")

    monkeypatch.setattr(predict, "_predict_one", fail)
    rep2 = pose.run(["sift"], scene_root, out, threshold=1.0, progress=False, plot=False)
    assert rep2["protocol"]["estimator"]["threshold_px"] == 1.0
    if pose.poselib_available():
        rep3 = pose.run(["sift"], scene_root, out, estimator="poselib", progress=False, plot=False)
        assert rep3["models"]["sift"]["summary"]["all"]["median_error_deg"] < 5.0
        assert (out / "pose-poselib.json").exists() and (out / "pose.json").exists()


def test_pose_errors(scene_root, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="unknown estimator"):
        pose.run(["sift"], scene_root, tmp_path, estimator="colmap")
    monkeypatch.setattr(pose, "poselib_available", lambda: False)
    with pytest.raises(FeatmatchError, match="pip install poselib"):
        pose.run(["sift"], scene_root, tmp_path, estimator="poselib")
