"""Homography benchmark on synthetic HPatches-layout data: scores, cache, resume, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featmatch.errors import FeatmatchError, ImageReadError, UsageError
from featmatch.eval import homography, predict
from featmatch.eval.data import HomographyPair, homography_pairs

from test_eval_data import make_hpatches


@pytest.fixture(scope="module")
def hp_root(tmp_path_factory):
    return make_hpatches(tmp_path_factory.mktemp("hp"), sequences=("i_light", "v_view"), n_images=3)


def _count_predictions(monkeypatch):
    calls = []
    real = predict._predict_one

    def counting(model, pair, memo):
        calls.append(pair.key)
        return real(model, pair, memo)

    monkeypatch.setattr(predict, "_predict_one", counting)
    return calls


def _untimed(text: str) -> dict:
    """The summary numbers of a JSON report without the (measured) times."""
    summary = json.loads(text)["models"]["sift"]["summary"]
    return {g: {k: v for k, v in s.items() if k != "mean_time_s"} for g, s in summary.items()}


def test_score_pair_with_exact_and_failed_predictions():
    rng = np.random.default_rng(0)
    H = np.array([[1.02, 0.01, 3.0], [-0.01, 0.98, -2.0], [1e-5, 0, 1.0]])
    p0 = rng.uniform(0, 150, (60, 2))
    q = np.c_[p0, np.ones(60)] @ H.T
    p1 = q[:, :2] / q[:, 2:]
    pair = HomographyPair("s/1-2", "s", "other", None, None, H)
    base = {"size0_wh": np.array([160, 150]), "num_keypoints0": 100, "num_keypoints1": 90, "time_s": 0.1}
    row = homography.score_pair({**base, "points0": p0, "points1": p1}, pair)
    assert row["corner_error"] < 1e-3 and row["num_inliers"] == 60
    assert all(v == 1.0 for v in row["mma"].values())
    none = homography.score_pair({**base, "points0": np.zeros((2, 2)), "points1": np.zeros((2, 2))}, pair)
    assert none["corner_error"] == float("inf") and none["num_inliers"] == 0
    s = homography.summarize([row, none])
    assert s["mha"]["1"] == 0.5 and s["failures"] == 1 and s["mean_keypoints"] == 95
    assert abs(s["auc"]["10"] - 0.5) < 1e-3


@pytest.mark.skipif(not homography.poselib_available(), reason="poselib not installed")
def test_poselib_estimator_scores_exact_noisy_and_failed_predictions():
    rng = np.random.default_rng(1)
    H = np.array([[0.9, 0.2, 10.0], [-0.15, 1.1, -4.0], [2e-4, -1e-4, 1.0]])
    p0 = rng.uniform(0, 300, (200, 2))
    q = np.c_[p0, np.ones(200)] @ H.T
    p1 = q[:, :2] / q[:, 2:] + rng.normal(0, 0.5, (200, 2))
    p1[:60] = rng.uniform(0, 300, (60, 2))  # 30 % outliers
    pair = HomographyPair("s/1-2", "s", "other", None, None, H)
    base = {"size0_wh": np.array([300, 300]), "num_keypoints0": 200, "num_keypoints1": 200, "time_s": 0.1}
    row = homography.score_pair({**base, "points0": p0, "points1": p1}, pair, estimator="poselib")
    assert row["corner_error"] < 1.0 and 130 <= row["num_inliers"] <= 150
    est = homography.estimate_homography_poselib(p0, p1, threshold=3.0)
    assert est.model[2, 2] == 1.0 and est.inliers[:60].sum() < 3
    few = homography.score_pair({**base, "points0": p0[:3], "points1": p1[:3]}, pair, estimator="poselib")
    assert few["corner_error"] == float("inf") and few["num_inliers"] == 0


def test_poselib_estimator_report_beside_the_opencv_one(hp_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = _count_predictions(monkeypatch)
    homography.run(["sift"], hp_root, out, progress=False, plot=False)
    with pytest.raises(UsageError, match="unknown estimator"):
        homography.run(["sift"], hp_root, out, estimator="colmap", progress=False, plot=False)
    if homography.poselib_available():
        rep = homography.run(["sift"], hp_root, out, estimator="poselib", progress=False, plot=False)
        assert len(calls) == 4  # rescored from the cache
        assert rep["protocol"]["estimator"]["name"] == "poselib"
        assert rep["models"]["sift"]["summary"]["all"]["mha"]["3"] >= 0.75
        assert (out / "homography-poselib.json").exists() and (out / "homography.json").exists()
        assert "poselib LO-RANSAC" in (out / "homography-poselib.md").read_text()
        assert "OpenCV findHomography usac_magsac" in (out / "homography.md").read_text()
    monkeypatch.setattr(homography, "poselib_available", lambda: False)
    with pytest.raises(FeatmatchError, match="pip install poselib"):
        homography.run(["sift"], hp_root, out, estimator="poselib", progress=False, plot=False)


def test_benchmark_scores_caches_and_reports(hp_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = _count_predictions(monkeypatch)
    rep = homography.run(["sift"], hp_root, out, progress=False)
    assert len(calls) == 4
    s = rep["models"]["sift"]["summary"]
    assert set(s) == {"all", "illumination", "viewpoint"}  # split by i_/v_ prefixes
    assert s["all"]["pairs"] == 4 and s["illumination"]["pairs"] == 2
    assert s["all"]["mha"]["3"] >= 0.75 and s["all"]["mma"]["3"] > 0.5
    assert rep["protocol"]["estimator"]["threshold_px"] == 3.0 and rep["featmatch_version"]
    assert rep["models"]["sift"]["weights_sha256"] is None and rep["image_size"] == "original"
    for name in ("homography.json", "homography.md", "homography.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "homography.md").read_text()
    assert "## illumination" in md and "| `sift` |" in md
    first = (out / "homography.json").read_text()

    # second run: nothing recomputed, identical numbers (deterministic)
    homography.run(["sift"], hp_root, out, progress=False, plot=False)
    assert len(calls) == 4 and (out / "homography.json").read_text() == first
    # changed metric / estimator threshold: rescored from the cache only
    rep2 = homography.run(["sift"], hp_root, out, threshold=1.0, progress=False, plot=False)
    assert len(calls) == 4 and rep2["protocol"]["estimator"]["threshold_px"] == 1.0
    # --overwrite recomputes, with the same result
    homography.run(["sift"], hp_root, out, overwrite=True, progress=False, plot=False)
    assert len(calls) == 8
    assert _untimed((out / "homography.json").read_text()) == _untimed(first)
    # a different config (resize) is a different cache file
    rep3 = homography.run(["sift"], hp_root, out, resize=120, progress=False, plot=False)
    assert len(calls) == 12 and rep3["image_size"] == "long side 120 px"
    assert len(list((out / "cache" / "homography").glob("sift-*.h5"))) == 2


def test_edited_source_is_not_served_from_the_cache(hp_root, tmp_path, monkeypatch):
    """Same version number, changed code (an edited checkout): predictions are recomputed."""
    from featmatch.eval import cache

    out = tmp_path / "out"
    calls = _count_predictions(monkeypatch)
    homography.run(["orb"], hp_root, out, max_pairs=2, progress=False, plot=False)
    homography.run(["orb"], hp_root, out, max_pairs=2, progress=False, plot=False)
    assert len(calls) == 2
    assert len(cache.source_digest()) == 12 and cache.software_versions()["featmatch_source"] == cache.source_digest()
    monkeypatch.setattr(cache, "source_digest", lambda: "0" * 12)
    homography.run(["orb"], hp_root, out, max_pairs=2, progress=False, plot=False)
    assert len(calls) == 4 and len(list((out / "cache" / "homography").glob("orb-*.h5"))) == 2


def test_partial_run_resumes_and_bad_image_names_path(hp_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(hp_root, root)
    out = tmp_path / "out"
    calls = _count_predictions(monkeypatch)
    homography.run(["orb"], root, out, max_pairs=2, progress=False, plot=False)
    assert calls == ["i_light/1-2", "v_view/1-3"]  # --max-pairs: an even spread over the sequences
    (root / "v_view" / "2.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"v_view/2.png"):
        homography.run(["orb"], root, out, progress=False, plot=False)
    assert calls[2:] == ["i_light/1-3", "v_view/1-2"]  # i_light/1-3 was kept before the failure
    shutil.copy(hp_root / "v_view" / "2.png", root / "v_view" / "2.png")
    rep = homography.run(["orb"], root, out, progress=False, plot=False)
    assert calls[4:] == ["v_view/1-2"] and rep["num_pairs"] == 4


def test_corrupt_cache_is_rebuilt_and_unfinished_pairs_dropped(hp_root, tmp_path, monkeypatch):
    import h5py

    out = tmp_path / "out"
    homography.run(["orb"], hp_root, out, max_pairs=2, progress=False, plot=False)
    (cache,) = (out / "cache" / "homography").glob("orb-*.h5")
    with h5py.File(cache, "a") as f:  # simulate a run killed mid-write
        name = sorted(f["pairs"])[0]
        del f["pairs"][name].attrs["done"]
    calls = _count_predictions(monkeypatch)
    homography.run(["orb"], hp_root, out, max_pairs=2, progress=False, plot=False)
    assert len(calls) == 1
    cache.write_bytes(b"garbage")
    homography.run(["orb"], hp_root, out, max_pairs=2, progress=False, plot=False)
    assert len(calls) == 3 and cache.with_name(cache.name + ".corrupt").exists()


def test_changed_image_is_recomputed(hp_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(hp_root, root)
    out = tmp_path / "out"
    homography.run(["orb"], root, out, progress=False, plot=False)
    calls = _count_predictions(monkeypatch)
    shutil.copy(root / "v_view" / "2.png", root / "v_view" / "3.png")
    homography.run(["orb"], root, out, progress=False, plot=False)
    assert calls == ["v_view/1-3"]


def test_usage_errors(hp_root, tmp_path):
    with pytest.raises(UsageError, match="unknown model 'sfit'"):
        homography.run(["sfit"], hp_root, tmp_path)
    with pytest.raises(UsageError, match="threshold"):
        homography.run(["sift"], hp_root, tmp_path, threshold=0)
    with pytest.raises(UsageError, match="resize"):
        homography.run(["sift"], hp_root, tmp_path, resize=8)
    with pytest.raises(UsageError, match="max-pairs"):
        homography.run(["sift"], hp_root, tmp_path, max_pairs=0)
    assert len(homography_pairs(hp_root)) == 4
