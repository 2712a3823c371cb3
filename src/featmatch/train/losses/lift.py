"""LIFT losses (Yi et al. ECCV 2016, section 4; ../shared/papers/lift.md).

* :func:`descriptor_hinge_loss` - DESC: ``||d1 - d2||`` for corresponding patches and
  ``max(0, C - ||d1 - d3||)`` for non-corresponding ones (margin ``C = 4``), each averaged
  over the hardest ``1 / mining_ratio`` of the candidates (progressive hard mining).
* :func:`mining_ratio` - the paper's schedule: 1, doubled every ``every`` batches.
* :func:`descriptor_batch_hinge_loss` - the same hinge loss with each patch's hardest
  negative mined over the whole batch (featmatch's option, not the paper's: the negatives of
  the other quadruplets too, as HardNet's in-batch mining), for the ranking task of real
  matching (one point against every point of the other image).
* :func:`orientation_loss` - ORI: ``||h(G(P1, x1)) - h(G(P2, x2))||`` with DESC fixed.
* :func:`orientation_regression_loss` - featmatch's ORI warm-up (not in the paper):
  ``1 - cos(theta - theta_sift)``, regressing the (mapped) SIFT orientations of the data.
* :func:`classification_loss` - DET: ``sum_i alpha_i max(0, 1 - s_i y_i)^2`` with
  ``y = +1`` for P1..P3 (alpha 1/6 each) and ``-1`` for P4 (alpha 3/6).
* :func:`overlap_loss` - eq. 11 (detector pre-training): ``1 - IoU(p1, p2) + max(0,
  ||x1 - x2||_1 - 2 s) / sqrt(|p1 U p2|)`` for the two crops, compared in P1's frame.
* :func:`detector_loss` - ``gamma L_class + L_pair`` (``L_pair`` = eq. 11 when pre-training,
  the descriptor distance through the whole pipeline otherwise).

All are pure functions of tensors; shapes in the docstrings.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ...types import check_shape


def _hardest(values: torch.Tensor, ratio: float) -> torch.Tensor:
    k = max(1, int(math.ceil(values.shape[0] / max(float(ratio), 1.0))))
    return values if k >= values.shape[0] else torch.topk(values, k).values


def descriptor_hinge_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, margin: float = 4.0,
                          mining_ratio: float = 1.0, d1_neg: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """Hinge embedding loss of DESC with hard mining.

    Positives are the pairs ``(d1[n], d2[n])``, negatives ``(d1[n], d3[n])`` (or
    ``(d1_neg[m], d3[m])`` when the negatives were mined separately). Of the candidates of
    each kind, the ``ceil(N / mining_ratio)`` with the largest loss are kept (the paper's
    ``r = K_f / K_b``) and the two means are summed (balanced batches).

    Shape:
        d1, d2: ``(N, D)``; d3 (and d1_neg): ``(M, D)`` (M = N without d1_neg). Returns the
        scalar loss and logs (mean distances, share of negatives inside the margin).
    """
    check_shape("d1", d1, (-1, -1))
    check_shape("d2", d2, tuple(d1.shape))
    anchor = d1 if d1_neg is None else d1_neg
    check_shape("d1_neg", anchor, (-1, d1.shape[1]))
    check_shape("d3", d3, tuple(anchor.shape))
    pos = (d1 - d2).norm(dim=-1)
    neg_dist = (anchor - d3).norm(dim=-1)
    neg = torch.relu(margin - neg_dist)
    loss = _hardest(pos, mining_ratio).mean() + _hardest(neg, mining_ratio).mean()
    with torch.no_grad():
        logs = {"pos_dist": float(pos.mean()), "neg_dist": float(neg_dist.mean()),
                "neg_active": float((neg > 0).float().mean())}
    return loss, logs


def descriptor_batch_hinge_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor,
                                margin: float = 4.0) -> tuple[torch.Tensor, dict]:
    """Hinge embedding loss of DESC with the hardest negative of each anchor in the batch.

    ``(d1[n], d2[n])`` are corresponding patches. For anchor ``d1[n]`` the negative is the
    nearest of ``d2[m]`` (``m != n``) and ``d3[m]`` (every ``m``); for anchor ``d2[n]`` the nearest
    of ``d1[m]`` (``m != n``). The loss is ``mean_n ||d1[n] - d2[n]||`` plus the mean over both
    anchor sets of ``max(0, C - d_hardest)``. Quadruplets of one batch must show different
    points (distinct keypoints, as the patch sets are built).

    Shape:
        d1, d2, d3: ``(N, D)`` with ``N >= 2``. Returns the scalar loss and logs (mean
        positive distance, mean hardest-negative distance, share inside the margin).
    """
    check_shape("d1", d1, (-1, -1))
    check_shape("d2", d2, tuple(d1.shape))
    check_shape("d3", d3, tuple(d1.shape))
    n = d1.shape[0]
    if n < 2:
        raise ValueError("descriptor_batch_hinge_loss needs at least 2 quadruplets per batch")
    pos = (d1 - d2).norm(dim=-1)
    eye = torch.eye(n, dtype=torch.bool, device=d1.device)
    d12 = torch.cdist(d1, d2).masked_fill(eye, float("inf"))  # (n, n): anchor d1[i] vs d2[j]
    d13 = torch.cdist(d1, d3)
    hard1 = torch.minimum(d12.min(1).values, d13.min(1).values)  # anchors d1
    hard2 = d12.min(0).values  # anchors d2: d1[m] vs d2[n], m != n
    hard = torch.cat([hard1, hard2])
    neg = torch.relu(margin - hard)
    loss = pos.mean() + neg.mean()
    with torch.no_grad():
        logs = {"pos_dist": float(pos.mean()), "neg_dist": float(hard.mean()),
                "neg_active": float((neg > 0).float().mean())}
    return loss, logs


def mining_ratio(step: int, every: int = 5000, start: float = 1.0, maximum: float = 4.0) -> float:
    """Progressive mining ratio: ``start``, doubled every ``every`` batches, capped at ``maximum``."""
    if every <= 0:
        return float(start)
    return float(min(start * 2 ** (max(step, 0) // every), maximum))


def orientation_loss(d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """Mean descriptor distance of corresponding patches, each described after rotation by
    its predicted orientation (DESC fixed).

    Shape: d1, d2 ``(N, D)`` -> scalar."""
    check_shape("d1", d1, (-1, -1))
    check_shape("d2", d2, tuple(d1.shape))
    return (d1 - d2).norm(dim=-1).mean()


def orientation_regression_loss(theta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(theta - target)`` (0 when the angles agree, 2 when opposite).

    Shape: theta, target ``(N,)`` radians -> scalar."""
    check_shape("theta", theta, (-1,))
    check_shape("target", target, tuple(theta.shape))
    return (1 - torch.cos(theta - target)).mean()


def classification_loss(scores: torch.Tensor, alphas: tuple = (1 / 6, 1 / 6, 1 / 6, 3 / 6),
                        labels: tuple = (1.0, 1.0, 1.0, -1.0)) -> torch.Tensor:
    """Squared hinge on the soft-max detector scores of P1..P4 (paper eq. 9).

    Shape: scores ``(N, 4)`` -> scalar (mean over N)."""
    check_shape("scores", scores, (-1, len(alphas)))
    a = torch.tensor(alphas, device=scores.device, dtype=scores.dtype)
    y = torch.tensor(labels, device=scores.device, dtype=scores.dtype)
    return (a * torch.relu(1 - scores * y) ** 2).sum(-1).mean()


def _rotate(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], -1)


def overlap_loss(xy1: torch.Tensor, gt1: torch.Tensor, xy2: torch.Tensor, gt2: torch.Tensor,
                 rot21: torch.Tensor = None, half: float = 0.5) -> torch.Tensor:
    """Eq. 11: overlap of the two detected crops, in the scale-normalised frame of P1.

    The crops are squares of half-size ``half`` (0.5: the 64-px crop of the 128-px P, in
    P's [-1, 1] units) centred on the detections. Each detection is taken relative to its
    patch's true keypoint (``xy - gt``); P2's offset is rotated into P1's frame by
    ``rot21`` (the angle of P1's axes in P2's frame, radians: ``angle1 - angle2``). Cost
    ``1 - inter/union + max(0, |dx| + |dy| - 2 side) / sqrt(union)`` with ``side = 2 half``.

    Shape: xy1, gt1, xy2, gt2 ``(N, 2)``; rot21 ``(N,)`` or None -> scalar.
    """
    check_shape("xy1", xy1, (-1, 2))
    for name, t in (("gt1", gt1), ("xy2", xy2), ("gt2", gt2)):
        check_shape(name, t, tuple(xy1.shape))
    o1 = xy1 - gt1
    o2 = xy2 - gt2
    if rot21 is not None:
        o2 = _rotate(o2, rot21.to(o2.dtype))
    d = (o1 - o2).abs()
    side = 2 * half
    inter = torch.relu(side - d[:, 0]) * torch.relu(side - d[:, 1])
    union = 2 * side * side - inter
    gap = torch.relu(d.sum(-1) - 2 * side)
    return (1 - inter / union + gap / torch.sqrt(union)).mean()


def detector_loss(scores: torch.Tensor, pair_term: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``gamma * classification_loss(scores) + pair_term`` (paper eq. 8).

    Shape: scores ``(N, 4)``; pair_term scalar -> scalar."""
    return gamma * classification_loss(scores) + pair_term
