import numpy as np
import pytest

from featmatch.estimators import estimate_fundamental, estimate_homography, estimate_relative_pose
from featmatch.errors import UsageError


def _scene(seed=0, n=200):
    rng = np.random.default_rng(seed)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    X = rng.uniform([-2, -2, 4], [2, 2, 8], (n, 3))
    a = np.deg2rad(8)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([1.0, 0.1, 0.2])
    x0 = X @ K.T
    x1 = (X @ R.T + t) @ K.T
    return K, R, t / np.linalg.norm(t), x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]


def test_homography_recovers_and_flags_outliers():
    rng = np.random.default_rng(1)
    p0 = rng.uniform(0, 400, (150, 2))
    H = np.array([[1.05, 0.03, 12], [-0.02, 0.97, -4], [5e-5, -2e-5, 1]])
    q = np.c_[p0, np.ones(150)] @ H.T
    p1 = q[:, :2] / q[:, 2:]
    p1[:30] += rng.uniform(20, 60, (30, 2))
    e = estimate_homography(p0, p1, threshold=2.0)
    assert e.success and e.num_inliers == 120 and not e.inliers[:30].any()
    assert np.allclose(e.model, H, atol=1e-3)
    e2 = estimate_homography(p0, p1, threshold=2.0)
    assert np.array_equal(e.inliers, e2.inliers)  # seeded


def test_relative_pose_and_fundamental():
    K, R, t, x0, x1 = _scene()
    e = estimate_relative_pose(x0, x1, K0=K, K1=K)
    assert e.success and np.allclose(e.R, R, atol=1e-4) and np.allclose(e.t, t, atol=1e-3)
    f = estimate_fundamental(x0, x1)
    assert f.success and f.num_inliers > 190


def test_too_few_matches_and_bad_input():
    e = estimate_homography(np.zeros((3, 2)), np.zeros((3, 2)))
    assert not e.success and e.num_inliers == 0 and "at least 4" in e.info["reason"]
    with pytest.raises(UsageError):
        estimate_homography(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(UsageError, match="unknown estimator"):
        estimate_homography(np.zeros((5, 2)), np.zeros((5, 2)), method="magic")
