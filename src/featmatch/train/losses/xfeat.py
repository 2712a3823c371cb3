"""XFeat losses (paper section 8; see ../shared/papers/xfeat.md).

* :func:`dual_softmax_loss` - descriptor NLL of the dual-softmax matching matrix.
* :func:`reliability_loss` - L1 between the reliability map and the (detached) dual-softmax
  confidence: the gradient flows only into the reliability head.
* :func:`fine_offset_loss` - NLL of the 8x8 offset classes of the refinement MLP.
* :func:`keypoint_distillation_loss` - NLL of the 65-class keypoint logits against a
  teacher's keypoints (64 in-cell positions + dustbin), negatives down-weighted.
* :func:`xfeat_total` - the weighted sum ``a L_ds + b L_rel + c L_fine + d L_kp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...types import check_shape


def dual_softmax_loss(f0: torch.Tensor, f1: torch.Tensor, temperature: float = 0.2):
    """Dual-softmax NLL for row-aligned matching descriptors.

    Row ``n`` of ``f0`` matches row ``n`` of ``f1``. The similarity matrix
    ``S = f0 f1^T * temperature`` is soft-maxed along rows and along columns, and the
    negative log-likelihood of the diagonal is averaged in both directions (summed).

    Shape:
        f0, f1: ``(N, D)``. Returns the scalar loss and the confidence ``(N,)`` (product of
        the two softmax maxima, no gradient).
    """
    check_shape("f0", f0, (-1, -1))
    check_shape("f1", f1, (f0.shape[0], f0.shape[1]))
    sim = (f0 @ f1.t()) * temperature
    log12 = F.log_softmax(sim, dim=1)
    log21 = F.log_softmax(sim.t(), dim=1)
    target = torch.arange(f0.shape[0], device=f0.device)
    loss = F.nll_loss(log12, target) + F.nll_loss(log21, target)
    with torch.no_grad():
        conf = log12.exp().max(dim=1).values * log21.exp().max(dim=1).values
    return loss, conf


def reliability_loss(r0: torch.Tensor, r1: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """L1 between reliabilities at matched cells and the dual-softmax confidence.

    ``conf`` is detached, so only the reliability head gets gradients.

    Shape: r0, r1, conf ``(N,)``; returns a scalar.
    """
    check_shape("r0", r0, (-1,))
    target = conf.detach()
    return F.l1_loss(r0, target) + F.l1_loss(r1, target)


def fine_offset_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """NLL of the 8x8 offset classes (``label = 8 * row + col``), optionally weighted
    (weights are normalised to sum to one, as in the reference training with the
    dual-softmax confidence).

    Shape: logits ``(N, 64)``, labels ``(N,)`` long in [0, 63], weights ``(N,)``.
    """
    check_shape("logits", logits, (-1, 64))
    nll = F.nll_loss(F.log_softmax(logits, dim=-1), labels, reduction="none")
    if weights is None:
        return nll.mean()
    w = weights.detach()
    return (nll * (w / w.sum().clamp_min(1e-12))).sum()


def keypoint_labels(keypoints: list, cells_hw: tuple[int, int], device=None) -> torch.Tensor:
    """65-class targets per 8x8 cell from teacher keypoints (pixel ``(x, y)``).

    Each keypoint marks pixel ``round(p)``; its cell gets class ``8 * (y % 8) + (x % 8)``;
    cells without a keypoint get the dustbin class 64 (a later keypoint in the same cell
    overwrites an earlier one).

    Shape: keypoints: B tensors ``(N_b, 2)``; returns ``(B, h, w)`` long.
    """
    h, w = cells_hw
    out = torch.full((len(keypoints), h, w), 64, dtype=torch.long, device=device)
    for b, kp in enumerate(keypoints):
        if kp.numel() == 0:
            continue
        px = kp.round().long().to(out.device)
        ok = (px[:, 0] >= 0) & (px[:, 0] < 8 * w) & (px[:, 1] >= 0) & (px[:, 1] < 8 * h)
        px = px[ok]
        out[b, px[:, 1] // 8, px[:, 0] // 8] = (px[:, 1] % 8) * 8 + (px[:, 0] % 8)
    return out


def keypoint_distillation_loss(logits: torch.Tensor, labels: torch.Tensor, negative_ratio: float = 1 / 32) -> torch.Tensor:
    """Class-balanced NLL of keypoint logits against teacher labels.

    Every keypoint cell counts with weight 1; the dustbin cells share a total weight of
    ``negative_ratio`` times the number of keypoint cells (the reference samples that many
    negatives at random; weighting is its deterministic expectation).

    Shape: logits ``(B, 65, h, w)``, labels ``(B, h, w)`` long; returns a scalar.
    """
    check_shape("logits", logits, (-1, 65, -1, -1))
    nll = F.cross_entropy(logits, labels, reduction="none")
    pos = labels < 64
    n_pos = pos.sum()
    n_neg = (~pos).sum()
    if n_pos == 0:  # no teacher keypoint: every cell is a plain negative
        return nll.mean()
    w = torch.where(pos, torch.ones_like(nll), (n_pos * negative_ratio / n_neg.clamp_min(1)).expand_as(nll))
    return (nll * w).sum() / w.sum()


@dataclass(frozen=True)
class XFeatLossWeights:
    """Weights of the total loss (the reference training's factors)."""

    descriptors: float = 1.0  # alpha, dual-softmax
    reliability: float = 3.0  # beta, L1 on the reliability map
    fine: float = 2.0  # gamma, offset classification
    keypoints: float = 2.0  # delta, keypoint distillation


def xfeat_total(parts: dict, weights: XFeatLossWeights = XFeatLossWeights()) -> torch.Tensor:
    """Weighted sum of the loss parts ``{"descriptors", "reliability", "fine", "keypoints"}``."""
    return (weights.descriptors * parts["descriptors"] + weights.reliability * parts["reliability"]
            + weights.fine * parts["fine"] + weights.keypoints * parts["keypoints"])
