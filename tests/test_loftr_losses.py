"""LoFTR losses and ground truth: hand-computed values, GT from homography and depth,
gradient flow through the model, and a few optimisation steps on a toy pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import featmatch
from featmatch.train.losses.loftr import (LoFTRLossWeights, cell_anchors, coarse_dustbin_nll_loss,
                                          coarse_focal_loss, coarse_gt_depth, coarse_gt_homography,
                                          coarse_nll_loss, fine_gt, fine_l2_std_loss, loftr_total)

from conftest import LOFTR_TINY_RAW as RAW, textured


def _translation(tx: float, ty: float, b: int = 1) -> torch.Tensor:
    H = torch.eye(3)
    H[0, 2], H[1, 2] = tx, ty
    return H[None].expand(b, 3, 3).clone()


# ----------------------------------------------------------------------------- ground truth
def test_cell_anchors():
    a = cell_anchors((2, 3))
    assert a.tolist() == [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]


def test_gt_identity_is_diagonal():
    gt = coarse_gt_homography(torch.eye(3)[None], (5, 6), (5, 6))
    assert torch.equal(gt.matrix[0], torch.eye(30, dtype=torch.bool))
    assert gt.b.tolist() == [0] * 30 and torch.equal(gt.i, gt.j)


def test_gt_translation_and_fine_targets():
    # image-0 pixel p appears at p + (13, 6) in image 1: cell (x, y) -> nearest (x + 2, y + 1)
    hw = (6, 8)
    gt = coarse_gt_homography(_translation(13, 6), hw, hw)
    x0, y0 = gt.i % 8, gt.i // 8
    x1, y1 = gt.j % 8, gt.j // 8
    assert len(gt.i) == (8 - 2) * (6 - 1)  # the cells whose neighbour lands inside image 1
    assert torch.equal(x1, x0 + 2) and torch.equal(y1, y0 + 1)
    t = fine_gt(gt, gt.b, gt.i, gt.j, hw, window=5)
    # 8x + 13 - 8 (x + 2) = -3 px, 8y + 6 - 8 (y + 1) = -2 px; the window half-size is 2 * 2 px
    assert torch.allclose(t, torch.tensor([-0.75, -0.5]).expand_as(t))
    # a coarse match that is not GT-consistent still gets a (large) target
    t_far = fine_gt(gt, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), hw)
    assert torch.allclose(t_far, torch.tensor([[13 / 4, 6 / 4]]))


def test_gt_scale_is_mutual_only():
    # zoom x2: cell (x, y) -> (2x, 2y); odd image-1 cells map back half-way and are not mutual
    hw0, hw1 = (4, 4), (8, 8)
    H = torch.diag(torch.tensor([2.0, 2.0, 1.0]))[None]
    gt = coarse_gt_homography(H, hw0, hw1)
    assert len(gt.i) == 16
    assert torch.equal(gt.j, (gt.i // 4) * 2 * 8 + (gt.i % 4) * 2)


def test_gt_masks_exclude_padding():
    hw = (4, 4)
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[0, 12:] = False  # last row is padding
    gt = coarse_gt_homography(torch.eye(3)[None], hw, hw, mask0=mask, mask1=mask)
    assert len(gt.i) == 12 and (gt.i < 12).all()
    assert torch.isinf(fine_gt(gt, torch.tensor([0]), torch.tensor([13]), torch.tensor([13]), hw)).all()


def test_gt_depth_equals_homography_for_a_fronto_parallel_plane():
    hw = (6, 8)
    f, z = 16.0, 2.0
    K = torch.tensor([[f, 0, 32.0], [0, f, 24.0], [0, 0, 1]])[None]
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 13 * z / f  # camera motion that shifts the plane by 13 px in x
    T[0, 1, 3] = 6 * z / f
    depth = torch.full((1, 48, 64), z)
    gt_d = coarse_gt_depth(depth, depth, K, K, T, hw, hw)
    gt_h = coarse_gt_homography(_translation(13, 6), hw, hw)
    assert torch.equal(gt_d.matrix, gt_h.matrix)
    assert torch.allclose(fine_gt(gt_d, gt_d.b, gt_d.i, gt_d.j, hw), fine_gt(gt_h, gt_h.b, gt_h.i, gt_h.j, hw),
                          atol=1e-5)
    # unknown depth gives no ground truth
    gt_none = coarse_gt_depth(torch.zeros_like(depth), depth, K, K, T, hw, hw)
    assert len(gt_none.i) == 0


# ----------------------------------------------------------------------------- loss values
def test_focal_loss_hand_computed():
    conf = torch.tensor([[[0.8, 0.1], [0.1, 0.6]]])
    gt = torch.eye(2, dtype=torch.bool)[None]
    a = 0.25
    pos = (-a * 0.2 ** 2 * math.log(0.8) - a * 0.4 ** 2 * math.log(0.6)) / 2
    neg = -a * 0.1 ** 2 * math.log(0.9)
    assert coarse_focal_loss(conf, gt).item() == pytest.approx(pos + neg, rel=1e-5)
    assert coarse_focal_loss(conf, gt, pos_weight=2.0, neg_weight=0.5).item() == pytest.approx(2 * pos + 0.5 * neg,
                                                                                                rel=1e-5)
    w = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # a padded (weight 0) negative is ignored
    assert coarse_focal_loss(conf, gt, weight=w).item() == pytest.approx(pos + neg, rel=1e-5)
    # no positives: only the negative term
    none = coarse_focal_loss(conf, torch.zeros_like(gt))
    neg_all = -a * (0.8 ** 2 * math.log(0.2) + 2 * 0.1 ** 2 * math.log(0.9) + 0.6 ** 2 * math.log(0.4)) / 4
    assert none.item() == pytest.approx(neg_all, rel=1e-5)


def test_nll_and_dustbin_losses_hand_computed():
    conf = torch.tensor([[[0.8, 0.1], [0.1, 0.6]]])
    gt = torch.eye(2, dtype=torch.bool)[None]
    assert coarse_nll_loss(conf, gt).item() == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2, rel=1e-6)
    assert coarse_nll_loss(conf, torch.zeros_like(gt)).item() == 0.0
    # exact log-confidence: no clamp for tiny probabilities
    tiny = torch.tensor([[[1e-9, 0.5], [0.5, 0.6]]])
    assert coarse_nll_loss(tiny, gt).item() == pytest.approx(-(math.log(1e-6) + math.log(0.6)) / 2, rel=1e-5)
    assert coarse_nll_loss(tiny, gt, log_conf=tiny.log()).item() == pytest.approx(
        -(math.log(1e-9) + math.log(0.6)) / 2, rel=1e-5)
    log_tiny = tiny.log().requires_grad_()
    coarse_focal_loss(tiny, gt, log_conf=log_tiny).backward()
    assert log_tiny.grad[0, 0, 0] < 0  # pushes the positive up although p < 1e-6
    la = torch.log(torch.tensor([[[0.7, 0.1, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.0 + 1e-3]]]))
    gt2 = torch.tensor([[[True, False], [False, False]]])
    # terms: P[0,0]; row 1 unmatched -> P[1, bin]; column 1 unmatched -> P[bin, 1]
    want = -(math.log(0.7) + math.log(0.6) + math.log(0.5)) / 3
    assert coarse_dustbin_nll_loss(la, gt2).item() == pytest.approx(want, rel=1e-6)


def test_fine_loss_hand_computed():
    e = torch.tensor([[0.1, 0.0], [0.5, 0.5], [0.0, 0.0]])
    std = torch.tensor([0.5, 1.0, 0.25])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.5, 0.0]])  # the last target is outside the window
    inv = torch.tensor([2.0, 1.0, 4.0])
    w = inv / inv.mean()
    want = (w[0] * 0.01 + w[1] * 0.5) / 2
    assert fine_l2_std_loss(e, std, t).item() == pytest.approx(want.item(), rel=1e-6)
    assert fine_l2_std_loss(e, std, torch.full_like(t, 5.0)).item() == 0.0
    parts = {"coarse": torch.tensor(2.0), "fine": torch.tensor(3.0)}
    assert loftr_total(parts).item() == 5.0
    assert loftr_total(parts, LoFTRLossWeights(coarse=0.5, fine=2.0)).item() == 7.0


def test_shape_errors_are_one_line():
    with pytest.raises(featmatch.errors.UsageError, match="gt has shape"):
        coarse_focal_loss(torch.rand(1, 2, 3), torch.zeros(1, 3, 2, dtype=torch.bool))
    with pytest.raises(featmatch.errors.UsageError, match="std has shape"):
        fine_l2_std_loss(torch.rand(4, 2), torch.rand(3), torch.rand(4, 2))


# ----------------------------------------------------------------------------- with the model
def _toy_pair(seed: int = 0):
    """Two 64x64 crops of one texture: image-0 pixel p is at p - (13, 6) in image 1."""
    tex = textured(96, 112, seed=seed, channels=1).astype(np.float32) / 255
    a = torch.from_numpy(tex[8:72, 16:80])[None, None]
    b = torch.from_numpy(tex[14:78, 29:93])[None, None]
    return a, b, _translation(-13, -6)


def _loss(model, a, b, H, focal=True):
    gt = coarse_gt_homography(H, (8, 8), (8, 8))
    out = model(a, b, coarse_ids=(gt.b, gt.i, gt.j))
    loss_fn = coarse_focal_loss if focal else coarse_nll_loss
    coarse = loss_fn(out["conf"], gt.matrix, log_conf=out["log_conf"])
    fine = fine_l2_std_loss(out["expectation"], out["std"], fine_gt(gt, gt.b, gt.i, gt.j, (8, 8)))
    return loftr_total({"coarse": coarse, "fine": fine}), coarse, fine, gt


def test_gradients_flow_into_every_part():
    torch.manual_seed(0)
    model = featmatch.load("loftr.tiny", pretrained=False, **RAW).train()
    a, b, H = _toy_pair()
    total, coarse, fine, gt = _loss(model, a, b, H)
    assert len(gt.i) > 20 and torch.isfinite(total)
    assert fine.item() > 0 and coarse.item() > 0
    total.backward()
    for prefix in ("backbone.conv1", "backbone.layer1_outconv2", "loftr_coarse.layers.0", "fine_preprocess.down_proj",
                   "loftr_fine.layers.1"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), prefix


def test_sinkhorn_model_trains_with_dustbin_loss():
    torch.manual_seed(0)
    model = featmatch.load("loftr.tiny", pretrained=False, **RAW, match_type="sinkhorn").train()
    a, b, H = _toy_pair()
    gt = coarse_gt_homography(H, (8, 8), (8, 8))
    out = model(a, b)
    loss = coarse_dustbin_nll_loss(out["log_assignment"], gt.matrix)
    loss.backward()
    assert torch.isfinite(loss) and model.coarse_matching.bin_score.grad is not None


def _fine_error(model, a, b, H) -> float:
    gt = coarse_gt_homography(H, (8, 8), (8, 8))
    with torch.no_grad():
        out = model(a, b, coarse_ids=(gt.b, gt.i, gt.j))
    return float(((out["expectation"] - fine_gt(gt, gt.b, gt.i, gt.j, (8, 8))) ** 2).sum(-1).mean())


@pytest.mark.parametrize("focal", [True, False])
def test_a_few_steps_reduce_the_loss(focal):
    torch.manual_seed(0)
    model = featmatch.load("loftr.tiny", pretrained=False, **RAW).train()
    a, b, H = _toy_pair()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first, fine_err0 = None, _fine_error(model, a, b, H)
    for step in range(8):
        total, *_ = _loss(model, a, b, H, focal=focal)
        if first is None:
            first = total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    last, coarse, fine, _ = _loss(model, a, b, H, focal=focal)
    assert last.item() < 0.5 * first, (first, last.item())
    # the std-weighted fine loss is not monotonic (its weights sharpen); the plain error drops
    assert _fine_error(model, a, b, H) < 0.7 * fine_err0
