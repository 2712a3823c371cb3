"""LoFTR losses (paper section 3.5; see ../shared/papers/loftr.md) and their ground truth.

Ground truth (:func:`coarse_gt_homography`, :func:`coarse_gt_depth`): the anchor pixel
``8 * (col, row)`` of every coarse cell of image 0 is warped into image 1 and rounded to
the nearest cell ``j``; likewise image 1 -> image 0. ``(i, j)`` is a ground-truth match when
both warps are valid and ``j`` maps back to ``i`` (mutual), which also rejects most
occlusions, so by default the depth warp skips its depth-consistency test (as the
reference). The fine target of a coarse match ``(i, j)`` is the warped anchor of ``i``
relative to the anchor of ``j``, in units of the refinement window's half-size
(:func:`fine_gt`); targets outside the window (``|t|_inf >= 1``) are ignored by the loss.

Losses (pure functions):

* :func:`coarse_focal_loss` - focal loss on the confidence matrix (alpha 0.25, gamma 2;
  as the reference, alpha weights negatives too);
* :func:`coarse_nll_loss` - negative log-likelihood of the ground-truth entries (paper eq. 3);
* :func:`coarse_dustbin_nll_loss` - NLL of an optimal-transport assignment including the
  dustbins for unmatched cells;
* :func:`fine_l2_std_loss` - L2 of the refined position weighted by the inverse standard
  deviation of its heatmap (detached, normalised to mean 1; paper eq. 4);
* :func:`loftr_total` - ``w_c L_c + w_f L_f``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...geometry.warp import warp_points_depth, warp_points_homography
from ...types import check_shape

COARSE_STRIDE = 8
FINE_STRIDE = 2


@dataclass
class CoarseGT:
    """Coarse ground truth of a batch of pairs.

    Shape:
        matrix: ``(B, L, S)`` bool, True at ground-truth matches.
        b, i, j: ``(M,)`` long, the True entries of ``matrix``.
        warped0: ``(B, L, 2)`` anchors of image 0's cells warped into image 1 (pixels).
        valid0: ``(B, L)`` bool, where ``warped0`` is valid.
    """

    matrix: torch.Tensor
    b: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    warped0: torch.Tensor
    valid0: torch.Tensor


def cell_anchors(hw_c: tuple[int, int], device=None, stride: int = COARSE_STRIDE) -> torch.Tensor:
    """Anchor pixels ``stride * (col, row)`` of a ``h x w`` cell grid, row-major.

    Shape: returns ``(h * w, 2)`` float ``(x, y)``.
    """
    h, w = hw_c
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2).float() * stride


def _nearest_cell(p: torch.Tensor, hw_c: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened index of the cell whose anchor is nearest to ``p`` and whether it exists.

    Shape: p ``(B, N, 2)`` -> ``(B, N)`` long (0 where invalid), ``(B, N)`` bool."""
    h, w = hw_c
    c = torch.round(p / COARSE_STRIDE)
    ok = torch.isfinite(c).all(-1) & (c[..., 0] >= 0) & (c[..., 0] < w) & (c[..., 1] >= 0) & (c[..., 1] < h)
    c = torch.where(ok[..., None], c, torch.zeros_like(c)).long()
    return c[..., 1] * w + c[..., 0], ok


def mutual_coarse_gt(warped0: torch.Tensor, valid0: torch.Tensor, warped1: torch.Tensor, valid1: torch.Tensor,
                     hw0_c: tuple[int, int], hw1_c: tuple[int, int], mask0: Optional[torch.Tensor] = None,
                     mask1: Optional[torch.Tensor] = None) -> CoarseGT:
    """Ground-truth matrix from the anchors of each image warped into the other.

    Shape:
        warped0 ``(B, L, 2)``, valid0 ``(B, L)``: image-0 anchors in image 1;
        warped1 ``(B, S, 2)``, valid1 ``(B, S)``: image-1 anchors in image 0;
        mask0 ``(B, L)`` / mask1 ``(B, S)``: optional cell validity (False = padding).
    """
    check_shape("warped0", warped0, (-1, hw0_c[0] * hw0_c[1], 2))
    check_shape("warped1", warped1, (warped0.shape[0], hw1_c[0] * hw1_c[1], 2))
    n, l, s = warped0.shape[0], warped0.shape[1], warped1.shape[1]
    j_of_i, ok0 = _nearest_cell(warped0, hw1_c)
    i_of_j, ok1 = _nearest_cell(warped1, hw0_c)
    ok0 = ok0 & valid0.bool()
    ok1 = ok1 & valid1.bool()
    if mask0 is not None:
        ok0 = ok0 & mask0.bool()
    if mask1 is not None:
        ok1 = ok1 & mask1.bool()
    back = torch.gather(i_of_j, 1, j_of_i)
    mutual = ok0 & torch.gather(ok1, 1, j_of_i) & (back == torch.arange(l, device=warped0.device)[None])
    b, i = torch.where(mutual)
    j = j_of_i[b, i]
    matrix = torch.zeros(n, l, s, dtype=torch.bool, device=warped0.device)
    matrix[b, i, j] = True
    warp_ok = valid0.bool() if mask0 is None else valid0.bool() & mask0.bool()
    return CoarseGT(matrix, b, i, j, warped0, warp_ok)


def coarse_gt_homography(H_0to1: torch.Tensor, hw0_c: tuple[int, int], hw1_c: tuple[int, int],
                         size0_wh: Optional[tuple] = None, size1_wh: Optional[tuple] = None,
                         mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> CoarseGT:
    """Coarse ground truth of image pairs related by homographies.

    Args:
        H_0to1: homographies mapping image-0 pixels to image-1 pixels.
        hw0_c, hw1_c: coarse grid sizes ``(h, w)`` (image size / 8).
        size0_wh, size1_wh: ``(W, H)`` of the valid image content (default: the whole grid).
        mask0, mask1: optional cell validity.

    Shape: H_0to1 ``(B, 3, 3)``; masks ``(B, L)`` / ``(B, S)``.
    """
    check_shape("H_0to1", H_0to1, (-1, 3, 3))
    n, dev = H_0to1.shape[0], H_0to1.device
    size0_wh = size0_wh or (hw0_c[1] * COARSE_STRIDE, hw0_c[0] * COARSE_STRIDE)
    size1_wh = size1_wh or (hw1_c[1] * COARSE_STRIDE, hw1_c[0] * COARSE_STRIDE)
    a0 = cell_anchors(hw0_c, dev).expand(n, -1, -1)
    a1 = cell_anchors(hw1_c, dev).expand(n, -1, -1)
    H = H_0to1.double()
    w0, v0 = warp_points_homography(a0.double(), H, size1_wh)
    w1, v1 = warp_points_homography(a1.double(), torch.linalg.inv(H), size0_wh)
    return mutual_coarse_gt(w0.float(), v0, w1.float(), v1, hw0_c, hw1_c, mask0, mask1)


def coarse_gt_depth(depth0: torch.Tensor, depth1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor,
                    T_0to1: torch.Tensor, hw0_c: tuple[int, int], hw1_c: tuple[int, int],
                    rel_tol: float = float("inf"), mask0: Optional[torch.Tensor] = None,
                    mask1: Optional[torch.Tensor] = None) -> CoarseGT:
    """Coarse ground truth from depth maps and relative pose.

    ``rel_tol`` is the depth-consistency tolerance of
    :func:`featmatch.geometry.warp.warp_points_depth` (default: off, as the reference; the
    mutual check rejects most occluded points).

    Shape: depth0 ``(B, H0, W0)``, depth1 ``(B, H1, W1)`` (0 = unknown); K0, K1 ``(B, 3, 3)``;
    T_0to1 ``(B, 4, 4)``.
    """
    check_shape("T_0to1", T_0to1, (-1, 4, 4))
    n, dev = T_0to1.shape[0], T_0to1.device
    a0 = cell_anchors(hw0_c, dev).expand(n, -1, -1).contiguous()
    a1 = cell_anchors(hw1_c, dev).expand(n, -1, -1).contiguous()
    T_1to0 = torch.linalg.inv(T_0to1)
    w0, v0 = warp_points_depth(a0, depth0, depth1, K0, K1, T_0to1, rel_tol=rel_tol)
    w1, v1 = warp_points_depth(a1, depth1, depth0, K1, K0, T_1to0, rel_tol=rel_tol)
    return mutual_coarse_gt(w0, v0, w1, v1, hw0_c, hw1_c, mask0, mask1)


def fine_gt(gt: CoarseGT, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, hw1_c: tuple[int, int],
            window: int = 5) -> torch.Tensor:
    """Fine targets of coarse matches ``(b, i, j)``: the warped anchor of ``i`` relative to
    the anchor of ``j``, divided by ``2 * (window // 2)`` pixels (the window's half-size at
    1/2 resolution), so the window spans [-1, 1]. Invalid warps give ``inf``.

    Shape: b, i, j ``(M,)`` -> ``(M, 2)``.
    """
    anchors1 = cell_anchors(hw1_c, gt.warped0.device)
    target = (gt.warped0[b, i] - anchors1[j]) / (FINE_STRIDE * (window // 2))
    return torch.where(gt.valid0[b, i][:, None], target, torch.full_like(target, float("inf")))


def _log_pos(conf: torch.Tensor, pos: torch.Tensor, log_conf: Optional[torch.Tensor]) -> torch.Tensor:
    """log p at the positives: exact from ``log_conf`` when given, else of the clamped p."""
    if log_conf is not None:
        check_shape("log_conf", log_conf, tuple(conf.shape))
        return log_conf[pos].clamp_max(0.0)
    return conf[pos].clamp(1e-6, 1 - 1e-6).log()


def coarse_focal_loss(conf: torch.Tensor, gt: torch.Tensor, weight: Optional[torch.Tensor] = None,
                      alpha: float = 0.25, gamma: float = 2.0, pos_weight: float = 1.0,
                      neg_weight: float = 1.0, log_conf: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Focal loss on the coarse confidence matrix (reference formulation).

    ``pos = -alpha (1 - p)^gamma log p`` averaged over ground-truth entries,
    ``neg = -alpha p^gamma log(1 - p)`` averaged over the others; returns
    ``pos_weight * pos + neg_weight * neg`` (``p`` clamped to [1e-6, 1 - 1e-6] as the
    reference). Without positives the positive term is 0. The clamp stops the gradient of
    positives below 1e-6, common at initialisation (dual-softmax of untrained features is
    very peaked); pass ``log_conf`` (``forward()["log_conf"]``) to use the exact ``log p``.

    Shape: conf ``(B, L, S)`` in [0, 1], gt ``(B, L, S)`` bool, weight ``(B, L, S)`` (e.g.
    padding masks) or None, log_conf ``(B, L, S)`` or None; returns a scalar.
    """
    check_shape("conf", conf, (-1, -1, -1))
    check_shape("gt", gt, tuple(conf.shape))
    p = conf.clamp(1e-6, 1 - 1e-6)
    pos, neg = gt.bool(), ~gt.bool()
    if weight is not None:
        neg = neg & (weight > 0)
    loss_pos = -alpha * (1 - p[pos]) ** gamma * _log_pos(conf, pos, log_conf)
    loss_neg = -alpha * p[neg] ** gamma * (1 - p[neg]).log()
    if weight is not None:
        loss_pos = loss_pos * weight[pos]
        loss_neg = loss_neg * weight[neg]
    term_pos = loss_pos.mean() if loss_pos.numel() else conf.sum() * 0.0
    term_neg = loss_neg.mean() if loss_neg.numel() else conf.sum() * 0.0
    return pos_weight * term_pos + neg_weight * term_neg


def coarse_nll_loss(conf: torch.Tensor, gt: torch.Tensor, weight: Optional[torch.Tensor] = None,
                    log_conf: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Negative log-likelihood ``-mean log P[i, j]`` over ground-truth entries (paper eq. 3).

    ``P`` is clamped at 1e-6 unless the exact ``log_conf`` is given (see
    :func:`coarse_focal_loss`). Returns 0 (with a graph) without ground-truth matches.

    Shape: conf ``(B, L, S)``, gt ``(B, L, S)`` bool, weight / log_conf optional
    ``(B, L, S)``; returns a scalar.
    """
    check_shape("conf", conf, (-1, -1, -1))
    check_shape("gt", gt, tuple(conf.shape))
    pos = gt.bool()
    nll = -_log_pos(conf, pos, log_conf)
    if weight is not None:
        nll = nll * weight[pos]
    return nll.mean() if nll.numel() else conf.sum() * 0.0


def coarse_dustbin_nll_loss(log_assignment: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """NLL of an optimal-transport assignment with dustbins: ground-truth matches, and cells
    of either image without one against their dustbin; the mean over all those terms.

    Shape: log_assignment ``(B, L+1, S+1)``, gt ``(B, L, S)`` bool; returns a scalar.
    """
    check_shape("log_assignment", log_assignment, (gt.shape[0], gt.shape[1] + 1, gt.shape[2] + 1))
    pos = gt.bool()
    unmatched0 = ~pos.any(2)
    unmatched1 = ~pos.any(1)
    terms = torch.cat([log_assignment[:, :-1, :-1][pos], log_assignment[:, :-1, -1][unmatched0],
                       log_assignment[:, -1, :-1][unmatched1]])
    return -terms.mean()


def fine_l2_std_loss(expectation: torch.Tensor, std: torch.Tensor, target: torch.Tensor,
                     correct_thr: float = 1.0) -> torch.Tensor:
    """L2 between refined and true positions, weighted by the inverse heatmap std.

    Weights ``(1 / std) / mean(1 / std)`` (over all matches, detached); only matches whose
    target lies inside the window (``|t|_inf < correct_thr``) count; the loss is the mean of
    ``w |e - t|^2`` over them, 0 (with a graph) when there is none.

    Shape: expectation ``(M, 2)``, std ``(M,)``, target ``(M, 2)``; returns a scalar.
    """
    check_shape("expectation", expectation, (-1, 2))
    check_shape("std", std, (expectation.shape[0],))
    check_shape("target", target, (expectation.shape[0], 2))
    inv = 1.0 / std.detach().clamp_min(1e-10)
    w = inv / inv.mean() if inv.numel() else inv
    ok = target.abs().amax(-1) < correct_thr
    if not bool(ok.any()):
        return expectation.sum() * 0.0 + std.sum() * 0.0
    l2 = ((expectation[ok] - target[ok]) ** 2).sum(-1)
    return (l2 * w[ok]).mean()


@dataclass(frozen=True)
class LoFTRLossWeights:
    """Weights of the total loss (reference: 1 and 1)."""

    coarse: float = 1.0
    fine: float = 1.0


def loftr_total(parts: dict, weights: LoFTRLossWeights = LoFTRLossWeights()) -> torch.Tensor:
    """Weighted sum of the loss parts ``{"coarse", "fine"}``."""
    return weights.coarse * parts["coarse"] + weights.fine * parts["fine"]
