"""DRC-Net losses (reference ``lib/loss.py: SparseStrongWeakLoss``, ``lib/interpolator.py``),
as pure functions.

* :func:`fine_targets` - the strong loss's target: the ground-truth point at
  ``p / 4 - 0.5`` on the fine grid (reference image coordinates), splatted bilinearly onto
  its 4 neighbouring cells (indices clamped), blurred with ``[[1,2,1],[2,4,2],[1,2,1]] / 16``
  (zero padding), zeroed for invalid points.
* :func:`strong_loss` - ``mean_b( sum_n ||X_n - G_n||_2 / K_b )``, K_b valid points.
* :func:`orthogonal_loss` - ``mean_b( ||X X^T - G G^T||_F / K_b )``.
* :func:`drcnet_strong_total` - ``(1 - w) (L_AB + L_BA) + w (O_AB + O_BA)``; the reference's
  ``train.py`` uses w = 0.05 (``--weight_orthogonal``; the class default 0.1 is not used).
* :func:`weak_loss` - ``score(negatives) - score(positives)``, score = mean over positions
  of the max of the soft-maxed 4D scores, both directions.

Two deliberate differences, both at degenerate positions: (1) the reference writes the 4
splat weights with ``scatter_``, so where two corners coincide (a coordinate exactly on a
cell centre, or clamped at the border) the zero weight of one corner overwrites the other
and the target loses its mass (all zero for a point on a cell-centre column or row); here
the weights are added (``scatter_add_``), so every valid target sums to 1 before the blur.
(2) For points within half a fine cell of the top/left border (``p / 4 - 0.5 < 0``) the
reference clamps the cell index but not the weight, which becomes negative; here the weight
is clamped to [0, 1] too. Everything else equals the reference (tested on its outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...types import check_shape

BLUR_KERNELS = {
    3: torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16.0,
    5: torch.tensor([[1., 4., 7., 4., 1.], [4., 16., 26., 16., 4.], [7., 26., 41., 26., 7.],
                     [4., 16., 26., 16., 4.], [1., 4., 7., 4., 1.]]) / 273.0,
}


def fine_targets(points: torch.Tensor, fine_hw: tuple[int, int], valid: torch.Tensor, stride: int = 4,
                 kernel: int = 3) -> torch.Tensor:
    """Blurred 4-neighbour one-hot targets on a fine grid.

    Args:
        points: ground-truth points in the reference's image coordinates (featmatch pixels
            + 0.5).
        fine_hw: ``(H, W)`` of the fine map.
        valid: which points are real.
        stride: image pixels per fine cell.
        kernel: blur size (3 as the reference's ``--gauss_size``; 5; 0 = no blur).

    Shape: points ``(B, N, 2)``, valid ``(B, N)`` -> ``(B, N, H * W)``.
    """
    check_shape("points", points, (-1, -1, 2))
    b, n, _ = points.shape
    h, w = fine_hw
    xy = points / stride - 0.5
    hi_lim = xy.new_tensor([w - 1, h - 1])
    lo = torch.clamp_min(torch.floor(xy), 0)
    hi = torch.minimum(torch.ceil(xy), hi_lim)
    lo = torch.minimum(lo, hi_lim)
    wu = (xy - lo).clamp(0, 1)
    wl = 1 - wu
    ix = torch.stack([lo[..., 0], hi[..., 0], lo[..., 0], hi[..., 0]], -1).long()
    iy = torch.stack([lo[..., 1], lo[..., 1], hi[..., 1], hi[..., 1]], -1).long()
    cx = torch.stack([wl[..., 0], wu[..., 0], wl[..., 0], wu[..., 0]], -1)
    cy = torch.stack([wl[..., 1], wl[..., 1], wu[..., 1], wu[..., 1]], -1)
    onehot = points.new_zeros(b, n, h * w).scatter_add_(2, iy * w + ix, cx * cy)
    if kernel:
        k = BLUR_KERNELS[kernel].to(points.device, points.dtype)[None, None]
        onehot = F.conv2d(onehot.view(b * n, 1, h, w), k, padding=kernel // 2).view(b, n, h * w)
    return onehot * valid.to(onehot.dtype)[..., None]


def strong_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over valid points of ``||pred_n - target_n||_2``, divided by their number, mean
    over the batch. Shape: pred, target ``(B, N, L)``, valid ``(B, N)`` -> scalar."""
    v = valid.to(pred.dtype)
    k = v.sum(1).clamp_min(1)
    d = (pred - target).norm(dim=2) * v
    return (d.sum(1) / k).mean()


def orthogonal_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``||X X^T - G G^T||_F / K`` (X, G the valid rows), mean over the batch.
    Shape: pred, target ``(B, N, L)``, valid ``(B, N)`` -> scalar."""
    v = valid.to(pred.dtype)[..., None]
    x, g = pred * v, target * v
    k = valid.to(pred.dtype).sum(1).clamp_min(1)
    diff = torch.bmm(x, x.transpose(1, 2)) - torch.bmm(g, g.transpose(1, 2))
    return (diff.flatten(1).norm(dim=1) / k).mean()


def drcnet_strong_total(pred_ab: torch.Tensor, target_ab: torch.Tensor, valid_ab: torch.Tensor,
                        pred_ba: torch.Tensor, target_ba: torch.Tensor, valid_ba: torch.Tensor,
                        weight_orthogonal: float = 0.05) -> tuple[torch.Tensor, dict]:
    """``(1 - w) (L_strong(A->B) + L_strong(B->A)) + w (L_orth(A->B) + L_orth(B->A))``.

    Returns the loss and its parts ``{"strong", "orthogonal"}`` (detached floats)."""
    s = strong_loss(pred_ab, target_ab, valid_ab) + strong_loss(pred_ba, target_ba, valid_ba)
    o = orthogonal_loss(pred_ab, target_ab, valid_ab) + orthogonal_loss(pred_ba, target_ba, valid_ba)
    w = weight_orthogonal
    return (1 - w) * s + w * o, {"strong": float(s.detach()), "orthogonal": float(o.detach())}


def max_softmax_score(corr: torch.Tensor) -> torch.Tensor:
    """Mean over positions of the max soft-maxed score, A->B and B->A averaged.
    Shape: ``(B, 1, hA, wA, hB, wB)`` -> scalar."""
    b, _, ha, wa, hb, wb = corr.shape
    over_a = torch.softmax(corr.reshape(b, ha * wa, hb * wb), dim=1).max(dim=1)[0]  # per B position
    over_b = torch.softmax(corr.reshape(b, ha * wa, hb * wb), dim=2).max(dim=2)[0]  # per A position
    return (over_a.mean() + over_b.mean()) / 2


def weak_loss(corr_pos: torch.Tensor, corr_neg: torch.Tensor) -> torch.Tensor:
    """Weak supervision: ``score(negative pairs) - score(positive pairs)`` (negatives: the
    batch's source images rolled by one). Shape: two ``(B, 1, hA, wA, hB, wB)`` -> scalar."""
    return max_softmax_score(corr_neg) - max_softmax_score(corr_pos)
