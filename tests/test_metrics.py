"""Hand-computed cases for featmatch.eval.metrics (pure functions, CPU, no data files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featmatch.errors import UsageError
from featmatch.eval import metrics as M


def translation_h(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def make_T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


# ------------------------------------------------------------------ homography basics


def test_warp_identity_translation_and_projective():
    p = np.array([[0.0, 0.0], [3.0, 4.0], [-2.0, 5.5]])
    np.testing.assert_array_equal(M.warp_points_h(p, np.eye(3)), p)
    np.testing.assert_array_equal(M.warp_points_h(p, translation_h(10, -1)), p + [10, -1])
    # projective: w = 1 + x / 10 -> (x, y) / w
    H = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.1, 0, 1.0]])
    np.testing.assert_allclose(M.warp_points_h([[10.0, 4.0]], H), [[5.0, 2.0]])
    # batched leading dims and torch input
    out = M.warp_points_h(torch.zeros(2, 3, 2), torch.tensor(translation_h(1, 2)))
    assert out.shape == (2, 3, 2) and np.all(out == [1.0, 2.0])


def test_reprojection_errors_identity_zero_and_known():
    p = np.random.default_rng(0).uniform(0, 100, (7, 2))
    np.testing.assert_array_equal(M.reprojection_errors_h(p, p, np.eye(3)), np.zeros(7))
    err = M.reprojection_errors_h([[0.0, 0.0], [1.0, 1.0]], [[13.0, 4.0], [11.0, 1.0]], translation_h(10, 0))
    np.testing.assert_allclose(err, [5.0, 0.0])
    assert M.reprojection_errors_h(np.zeros((0, 2)), np.zeros((0, 2)), np.eye(3)).shape == (0,)


def test_reprojection_point_at_infinity_is_inf():
    H = np.array([[1.0, 0, 0], [0, 1.0, 0], [-0.1, 0, 1.0]])  # w = 0 at x = 10
    err = M.reprojection_errors_h([[10.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], H)
    assert err[0] == math.inf and err[1] == 0.0


def test_shape_checks_raise_usage_error():
    with pytest.raises(UsageError):
        M.warp_points_h(np.zeros((4, 3)), np.eye(3))
    with pytest.raises(UsageError):
        M.warp_points_h(np.zeros((4, 2)), np.eye(2))
    with pytest.raises(UsageError):
        M.reprojection_errors_h(np.zeros((4, 2)), np.zeros((3, 2)), np.eye(3))
    with pytest.raises(UsageError):
        M.homography_corner_error(np.eye(3), np.eye(3), (10, 0))
    with pytest.raises(UsageError):
        M.epipolar_errors(np.zeros((2, 2)), np.zeros((2, 2)), np.eye(4), np.eye(3), np.eye(3), kind="bogus")
    with pytest.raises(UsageError):
        M.relative_pose_error(np.eye(3), np.eye(3), np.ones(3))
    with pytest.raises(UsageError):
        M.mma(np.zeros((1, 2)), np.zeros((1, 2)), np.eye(3), thresholds=[0])
    with pytest.raises(UsageError):
        M.error_auc([-1.0], [1])


def test_visible_mask_uses_pixel_square_extent():
    # image of 10 x 5: x in [-0.5, 9.5], y in [-0.5, 4.5]
    p = [[-0.5, 0.0], [9.5, 4.5], [9.6, 0.0], [0.0, -0.6], [4.0, 2.0]]
    np.testing.assert_array_equal(M.visible_mask_h(p, np.eye(3), (10, 5)), [True, True, False, False, True])


# ------------------------------------------------------------------------------ MMA


def test_mma_known_errors():
    p0 = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0], [5.0, 5.0]])
    H = translation_h(10, 0)
    p1 = p0 + [10, 0] + np.array([[0.0, 0], [1.5, 0], [0, -2.0], [5.0, 0], [20.0, 0]])
    out = M.mma(p0, p1, H)
    assert list(out) == list(range(1, 11))
    expected = {1: 0.2, 2: 0.6, 3: 0.6, 4: 0.6, 5: 0.8, 6: 0.8, 7: 0.8, 8: 0.8, 9: 0.8, 10: 0.8}
    assert out == pytest.approx(expected)
    assert M.mma(torch.tensor(p0), torch.tensor(p1), torch.tensor(H), thresholds=(1, 5)) == pytest.approx({1: 0.2, 5: 0.8})


def test_mma_identity_and_zero_matches():
    p = np.random.default_rng(1).uniform(0, 50, (10, 2))
    assert all(v == 1.0 for v in M.mma(p, p, np.eye(3)).values())
    assert M.mma(np.zeros((0, 2)), np.zeros((0, 2)), np.eye(3), thresholds=(1, 3)) == {1: 0.0, 3: 0.0}


# ---------------------------------------------------------------- corner error / MHA


def test_corner_error_translation_and_scale():
    assert M.homography_corner_error(np.eye(3), np.eye(3), (640, 480)) == 0.0
    assert M.homography_corner_error(translation_h(3, 4), np.eye(3), (640, 480)) == pytest.approx(5.0)
    # scale 2 about the origin, image 11 x 21: corners (0,0), (10,0), (10,20), (0,20)
    # move by 0, 10, sqrt(10^2 + 20^2), 20
    S = np.diag([2.0, 2.0, 1.0])
    expected = (0 + 10 + math.sqrt(500) + 20) / 4
    assert M.homography_corner_error(S, np.eye(3), (11, 21)) == pytest.approx(expected)
    # symmetric in which one is "gt" for a pure translation; scale of H is irrelevant
    assert M.homography_corner_error(5 * np.eye(3), translation_h(-3, -4), (10, 10)) == pytest.approx(5.0)


def test_corner_error_failure_is_inf():
    assert M.homography_corner_error(None, np.eye(3), (10, 10)) == math.inf
    assert M.homography_corner_error(np.full((3, 3), np.nan), np.eye(3), (10, 10)) == math.inf


def test_mha():
    errs = [0.5, 2.0, 3.0, 6.0, math.inf]
    assert M.mha(errs) == pytest.approx({1: 0.2, 3: 0.6, 5: 0.6, 7: 0.8, 10: 0.8})
    assert M.mha(errs, thresholds=(3,)) == pytest.approx({3: 0.6})
    assert math.isnan(M.mha([], thresholds=(3,))[3])


# ------------------------------------------------------------------------------ AUC


def test_error_auc_by_hand():
    # curve (0,0) (1,.25) (2,.5) (3,.75), one failure.
    # t=2: points with e < 2 -> (0,0) (1,.25), closed at (2,.25): .125 + .25 = .375 -> /2
    # t=4: (0,0) (1,.25) (2,.5) (3,.75) (4,.75): .125 + .375 + .625 + .75 = 1.875 -> /4
    out = M.error_auc([3.0, 1.0, math.inf, 2.0], (2, 4))
    assert out == pytest.approx({2: 0.1875, 4: 0.46875})
    assert M.pose_auc([3.0, 1.0, math.nan, 2.0], (2, 4)) == pytest.approx({2: 0.1875, 4: 0.46875})
    assert M.homography_auc([0.0, 0.0]) == pytest.approx({1: 1.0, 3: 1.0, 5: 1.0, 10: 1.0})
    assert M.pose_auc([math.inf]) == {5: 0.0, 10: 0.0, 20: 0.0}
    assert all(math.isnan(v) for v in M.pose_auc([]).values())


def test_error_auc_single_error():
    # one pair with error 5: curve (0,0) -> (5,1); at t=10: 0.5*5*1 + 5*1 = 7.5 -> 0.75
    assert M.pose_auc([5.0], (10,)) == pytest.approx({10: 0.75})
    # at t=5 the point at e=5 is excluded (strict), recall stays 0
    assert M.pose_auc([5.0], (5,)) == pytest.approx({5: 0.0})


# -------------------------------------------------------------------- repeatability

SIZE = (100, 80)
H_SHIFT = translation_h(10, 0)
# image 0: a, b inside; c warps to x=105 (outside image 1); d inside
KP0 = np.array([[5.0, 5.0], [50.0, 40.0], [95.0, 40.0], [20.0, 70.0]])
# image 1: p near a (1 px), q near b (2 px), r warps back to x=-5 (outside image 0),
# s 5 px from d's warp (30, 70)
KP1 = np.array([[15.0, 6.0], [62.0, 40.0], [5.0, 10.0], [30.0, 75.0]])


def test_repeatability_hand_placed():
    # shared: n0 = 3 (a, b, d), n1 = 3 (p, q, s); within 3 px: a-p, b-q
    assert M.repeatability(KP0, KP1, H_SHIFT, SIZE, SIZE) == pytest.approx(2 / 3)
    assert M.repeatability(KP0, KP1, H_SHIFT, SIZE, SIZE, threshold=5) == pytest.approx(1.0)
    assert M.repeatability(KP0, KP0, np.eye(3), SIZE, SIZE) == 1.0
    t = torch.tensor
    assert M.repeatability(t(KP0), t(KP1), t(H_SHIFT), t(SIZE), SIZE) == pytest.approx(2 / 3)


def test_repeatability_is_one_to_one():
    # two image-1 points within 3 px of a: only one correspondence counts
    kp1 = np.array([[15.0, 6.0], [16.0, 5.0]])
    assert M.repeatability(KP0[:1], kp1, H_SHIFT, SIZE, SIZE) == 1.0  # 1 / min(1, 2)
    kp0 = np.array([[5.0, 5.0], [6.0, 5.0]])
    assert M.repeatability(kp0, kp1, H_SHIFT, SIZE, SIZE) == 1.0  # 2 / 2, no double use


def test_repeatability_top_k_by_score_before_region():
    # top-2 of image 0 by score: c (0.95, outside) and a (0.9) -> n0 = 1
    # no scores for image 1: first two, p and q -> n1 = 2; a-p -> 1 / 1
    scores0 = [0.9, 0.8, 0.95, 0.1]
    assert M.repeatability(KP0, KP1, H_SHIFT, SIZE, SIZE, max_keypoints=2, scores0=scores0) == 1.0
    # top-1 of image 0 is c, outside the shared region -> n0 = 0 -> 0.0
    assert M.repeatability(KP0, KP1, H_SHIFT, SIZE, SIZE, max_keypoints=1, scores0=scores0) == 0.0


def test_repeatability_empty():
    assert M.repeatability(np.zeros((0, 2)), KP1, H_SHIFT, SIZE, SIZE) == 0.0
    assert M.repeatability(KP0, np.zeros((0, 2)), H_SHIFT, SIZE, SIZE) == 0.0


def test_greedy_assignment_matches_bruteforce_greedy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        cost = rng.integers(0, 6, (7, 9)).astype(float)  # many ties
        cost[rng.uniform(size=cost.shape) < 0.3] = np.inf
        got = {tuple(p) for p in M._greedy_one_to_one(cost).tolist()}
        ii, jj = np.nonzero(np.isfinite(cost))
        order = np.lexsort((jj, ii, cost[ii, jj]))
        u0, u1, ref = set(), set(), set()
        for k in order:
            if ii[k] not in u0 and jj[k] not in u1:
                u0.add(ii[k]), u1.add(jj[k]), ref.add((int(ii[k]), int(jj[k])))
        assert got == ref


# ------------------------------------------------------------------- matching score


def test_matching_score_with_given_matches():
    # shared n0 = n1 = 3; a-p (0,0) and b-q (1,1) correct -> 2 / 3
    assert M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, matches=[[0, 0], [1, 1]]) == pytest.approx(2 / 3)
    # d-s is 5 px off: wrong at 3 px
    assert M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, matches=[[0, 0], [3, 3]]) == pytest.approx(1 / 3)
    # a match touching c (outside the shared region) is ignored
    assert M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, matches=np.array([[2, 0]])) == 0.0
    assert M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, matches=torch.zeros(0, 2, dtype=torch.long)) == 0.0
    with pytest.raises(UsageError):
        M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, matches=[[0, 0], [1, 0]])
    with pytest.raises(UsageError):
        M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, matches=[[0, 9]])


def test_matching_score_nearest_neighbour_descriptors():
    # descriptors: a~p, b~s, d~q (only a-p is geometrically correct); c and r are
    # outside the shared region and carry decoys that would otherwise steal matches
    desc0 = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])
    desc1 = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0, 0, 1.0], [0, 1.0, 0]])
    score = M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE, desc0=desc0, desc1=desc1)
    assert score == pytest.approx(1 / 3)
    # perfect descriptors on identical keypoints -> 1
    assert M.matching_score(KP0, KP0, np.eye(3), SIZE, SIZE, desc0=desc0, desc1=desc0) == 1.0
    # binary descriptors (Hamming)
    b = np.array([[0b1111], [0b0000], [0b1100], [0b0011]], dtype=np.uint8)
    assert M.matching_score(KP0, KP0, np.eye(3), SIZE, SIZE, desc0=b, desc1=b) == 1.0
    with pytest.raises(UsageError):
        M.matching_score(KP0, KP1, H_SHIFT, SIZE, SIZE)


# --------------------------------------------------------------------------- NN mAP


def test_nn_map_by_hand():
    desc0 = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    desc1 = np.array([[0.0, 1.0], [30.0, 0.0], [10.0, 3.0]])
    # NN: row 0 -> 0 (d=1), row 1 -> 2 (d=3), row 2 -> 1 (d=10)
    gt = [[0, 0], [1, 1], [2, 1]]  # correct, wrong, correct; 3 rows with a correspondence
    # precision 1, 1/2, 2/3 ; recall 1/3, 1/3, 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert M.nn_map(desc0, desc1, gt_matches=gt) == pytest.approx(5 / 9)
    mask = np.zeros((3, 3), dtype=bool)
    mask[[0, 1, 2], [0, 1, 1]] = True
    assert M.nn_map(torch.tensor(desc0), torch.tensor(desc1), torch.tensor(mask)) == pytest.approx(5 / 9)


def test_nn_map_perfect_ties_and_empty():
    d = np.eye(4)
    assert M.nn_map(d, d, gt_matches=[[0, 0], [1, 1], [2, 2], [3, 3]]) == 1.0
    # equal NN distances enter together: two matches at distance 0, one correct, 1 positive
    # -> one threshold with precision 1/2, recall 1 -> AP = 0.5
    d0 = np.array([[0.0], [5.0]])
    d1 = np.array([[0.0], [5.0]])
    assert M.nn_map(d0, d1, gt_matches=[[0, 0]]) == pytest.approx(0.5)
    assert math.isnan(M.nn_map(d0, d1, gt_matches=np.zeros((0, 2), dtype=int)))
    assert math.isnan(M.nn_map(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 0), dtype=bool)))
    with pytest.raises(UsageError):
        M.nn_map(d0, d1)


def test_correspondence_mask_feeds_nn_map():
    mask = M.correspondence_mask_h(KP0, KP1, H_SHIFT, threshold=3)
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, 0] = expected[1, 1] = True
    np.testing.assert_array_equal(mask, expected)


# ------------------------------------------------------------------- relative pose


def test_relative_pose_rotation_error():
    T = make_T(np.eye(3), [1.0, 0, 0])
    err_r, err_t = M.relative_pose_error(T, rot_z(10), np.array([1.0, 0, 0]))
    assert err_r == pytest.approx(10.0) and err_t == pytest.approx(0.0, abs=1e-12)
    T = make_T(rot_x(20), [0, 0, 1.0])
    err_r, _ = M.relative_pose_error(T, rot_x(20) @ rot_y(10), [0, 0, 1.0])
    assert err_r == pytest.approx(10.0)
    assert M.relative_pose_error(T, rot_x(20), [0, 0, 1.0]) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_relative_pose_translation_error_and_sign_ambiguity():
    T = make_T(np.eye(3), [2.0, 0, 0])
    assert M.relative_pose_error(T, np.eye(3), [-5.0, 0, 0])[1] == pytest.approx(0.0, abs=1e-12)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert M.relative_pose_error(T, np.eye(3), [c, s, 0])[1] == pytest.approx(30.0)
    c, s = math.cos(math.radians(170)), math.sin(math.radians(170))
    assert M.relative_pose_error(T, np.eye(3), np.array([[c], [s], [0]]))[1] == pytest.approx(10.0)
    assert M.relative_pose_error(T, np.eye(3), [0, 1.0, 0])[1] == pytest.approx(90.0)


def test_relative_pose_failure_and_guards():
    T = make_T(np.eye(3), [1.0, 0, 0])
    assert M.relative_pose_error(T, None, None) == (math.inf, math.inf)
    assert M.relative_pose_error(T, np.eye(3), np.zeros(3))[1] == math.inf
    T0 = make_T(np.eye(3), [0.0, 0, 0])
    assert M.relative_pose_error(T0, np.eye(3), [1.0, 0, 0], ignore_gt_t_thr=1e-3)[1] == 0.0
    assert math.isnan(M.relative_pose_error(T0, np.eye(3), [1.0, 0, 0])[1])
    assert M.relative_pose_error(torch.tensor(T), torch.tensor(rot_z(90)), torch.ones(3))[0] == pytest.approx(90.0)


def test_pose_accuracy():
    errs = [1.0, 10.0, 12.0, math.inf]
    assert M.pose_accuracy(errs) == 0.5
    assert M.pose_accuracy(errs, threshold=5) == 0.25
    assert math.isnan(M.pose_accuracy([]))


# ------------------------------------------------------------------------- epipolar


def _two_view_scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    K0 = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    K1 = np.array([[450.0, 0, 300], [0, 460.0, 250], [0, 0, 1]])
    T = make_T(rot_y(10) @ rot_x(-5), [1.0, 0.2, 0.3])
    X0 = np.c_[rng.uniform(-2, 2, (20, 2)), rng.uniform(4, 8, 20)]
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    p0 = (X0 / X0[:, 2:]) @ K0.T
    p1 = (X1 / X1[:, 2:]) @ K1.T
    return p0[:, :2], p1[:, :2], T, K0, K1


@pytest.mark.parametrize("kind", ["sampson", "symmetric", "symmetric_normalized"])
def test_epipolar_exact_correspondences_have_zero_error(kind):
    p0, p1, T, K0, K1 = _two_view_scene()
    err = M.epipolar_errors(p0, p1, T, K0, K1, kind=kind)
    assert err.shape == (20,)
    assert np.all(err < 1e-9)
    assert M.epipolar_precision(err, threshold=1e-6) == 1.0


def test_epipolar_rectified_perturbation_by_hand():
    # rectified pair: R = I, t along x, same K -> epipolar lines are rows y1 = y0.
    # moving p1 by delta in y gives point-to-line distances delta in both images:
    # symmetric = delta px, Sampson = delta / sqrt(2) px,
    # symmetric_normalized = 2 * (delta / f)^2 (normalised units squared).
    f = 100.0
    K = np.array([[f, 0, 50.0], [0, f, 40.0], [0, 0, 1]])
    T = make_T(np.eye(3), [1.0, 0, 0])
    p0 = np.array([[10.0, 20.0], [60.0, 70.0], [30.0, 5.0]])
    delta = np.array([1.0, 2.0, 0.0])
    p1 = p0 + np.c_[[-7.0, 3.0, -12.0], delta]
    np.testing.assert_allclose(M.epipolar_errors(p0, p1, T, K, K, kind="symmetric"), delta, atol=1e-12)
    np.testing.assert_allclose(M.epipolar_errors(p0, p1, T, K, K), delta / math.sqrt(2), atol=1e-12)
    e_n = M.epipolar_errors(p0, p1, T, K, K, kind="symmetric_normalized")
    np.testing.assert_allclose(e_n, 2 * (delta / f) ** 2, atol=1e-15)  # 2e-4, 8e-4, 0
    assert M.epipolar_precision(e_n) == pytest.approx(2 / 3)  # LoFTR 5e-4 threshold
    sampson = M.epipolar_errors(p0, p1, T, K, K)  # 0.707, 1.414, 0 px
    assert M.epipolar_precision(sampson, threshold=1.0) == pytest.approx(2 / 3)
    assert M.epipolar_precision(sampson, threshold=1.5) == 1.0


def test_epipolar_general_perturbation_along_line_normal():
    p0, p1, T, K0, K1 = _two_view_scene(seed=1)
    # move each p1 by 1.5 px along the normal of its epipolar line in image 1
    tx, ty, tz = T[:3, 3]
    E = np.array([[0, -tz, ty], [tz, 0, -tx], [-ty, tx, 0]]) @ T[:3, :3]
    F = np.linalg.inv(K1).T @ E @ np.linalg.inv(K0)
    lines = np.c_[p0, np.ones(len(p0))] @ F.T
    normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    p1_off = p1 + 1.5 * normal
    err = M.epipolar_errors(p0, p1_off, T, K0, K1, kind="symmetric")
    d1 = 1.5  # exact in image 1; the image-0 distance differs but is positive
    assert np.all(err > 0.5 * d1) and np.all(err < 10)
    samp = M.epipolar_errors(p0, p1_off, T, K0, K1, kind="sampson")
    assert np.all(samp <= d1 + 1e-9) and np.all(samp > 0.1)  # Sampson <= either one-sided fix


def test_epipolar_empty_and_precision_conventions():
    e = M.epipolar_errors(np.zeros((0, 2)), np.zeros((0, 2)), make_T(np.eye(3), [1.0, 0, 0]), np.eye(3), np.eye(3))
    assert e.shape == (0,)
    assert M.epipolar_precision(e) == 0.0
    assert M.epipolar_precision([1e-4, 5e-4, 6e-4, math.nan]) == 0.5
    err = M.epipolar_errors([[1.0, 2.0]], [[3.0, 4.0]], np.eye(4), np.eye(3), np.eye(3))
    assert math.isnan(err[0])  # zero translation: undefined


# ------------------------------------------------------------------------------ MIR


def test_mean_inlier_ratio():
    masks = [np.array([True, False, True, True]), torch.tensor([False, False]), np.zeros(0, dtype=bool), None]
    assert M.mean_inlier_ratio(masks) == pytest.approx((0.75 + 0 + 0 + 0) / 4)
    assert M.mean_inlier_ratio(np.array([True, True, False, False])) == 0.5
    assert M.mean_inlier_ratio(np.array([[True, True], [True, False]])) == 0.75
    assert math.isnan(M.mean_inlier_ratio([]))
    with pytest.raises(UsageError):
        M.mean_inlier_ratio([np.zeros((2, 2), dtype=bool)])


def test_functions_are_pure():
    p0 = np.array([[1.0, 2.0]])
    p1 = np.array([[11.0, 2.0]])
    H = translation_h(10, 0)
    before = (p0.copy(), p1.copy(), H.copy())
    M.mma(p0, p1, H)
    errs = np.array([3.0, np.nan, 1.0])
    M.pose_auc(errs)
    np.testing.assert_array_equal(p0, before[0])
    np.testing.assert_array_equal(H, before[2])
    assert np.isnan(errs[1]) and errs[0] == 3.0
