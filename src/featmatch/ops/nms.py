"""Non-maximum suppression on score maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .maxfilter import max_filter


def simple_nms(scores: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Boolean map of local maxima in a ``kernel_size`` window.

    Shape:
        scores: ``(B, 1, H, W)``; returns ``(B, 1, H, W)`` bool.
    """
    if kernel_size % 2 == 1:
        return scores == max_filter(scores, kernel_size)
    return scores == F.max_pool2d(scores, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)


def nms_points(scores: torch.Tensor, kernel_size: int, threshold: float):
    """Integer ``(x, y)`` positions of local maxima above ``threshold``, padded per batch.

    Positions are in row-major order (y, then x), like ``Tensor.nonzero``.

    Shape:
        scores: ``(B, 1, H, W)``.
        returns: ``positions (B, N, 2)`` long ``(x, y)``, ``mask (B, N)`` bool.
    """
    keep = simple_nms(scores, kernel_size) & (scores > threshold)
    b = scores.shape[0]
    nz = keep[:, 0].nonzero()  # (K, 3): batch, y, x in row-major order
    counts = torch.bincount(nz[:, 0], minlength=b)
    n = int(counts.max()) if nz.numel() else 0
    pos = torch.zeros(b, n, 2, dtype=torch.long, device=scores.device)
    mask = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    if n:
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(nz.shape[0], device=scores.device) - starts[nz[:, 0]]
        pos[nz[:, 0], slot] = nz[:, [2, 1]]
        mask[nz[:, 0], slot] = True
    return pos, mask
