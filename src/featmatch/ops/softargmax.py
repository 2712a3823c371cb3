"""Soft argmax and soft maximum of score maps (LIFT, Yi et al. ECCV 2016, eq. 7)."""

from __future__ import annotations

import torch


def softargmax2d(scores: torch.Tensor, beta: float = 10.0) -> torch.Tensor:
    """Expected position under ``softmax(beta * scores)`` (eq. 7 of LIFT).

    ``x = sum_y exp(beta S(y)) y / sum_y exp(beta S(y))``, computed stably (the maximum
    is subtracted first).

    Shape:
        scores: ``(B, 1, H, W)`` or ``(B, H, W)``; returns ``(B, 2)`` ``(x, y)`` in the map's
        pixel indices (column, row).
    """
    if scores.dim() == 4:
        scores = scores[:, 0]
    if scores.dim() != 3:
        raise ValueError(f"softargmax2d expects (B, 1, H, W) or (B, H, W), got {tuple(scores.shape)}")
    b, h, w = scores.shape
    p = torch.softmax(beta * scores.reshape(b, -1).float(), dim=-1).reshape(b, h, w)
    xs = torch.arange(w, device=scores.device, dtype=p.dtype)
    ys = torch.arange(h, device=scores.device, dtype=p.dtype)
    return torch.stack([(p.sum(1) * xs).sum(-1), (p.sum(2) * ys).sum(-1)], -1)


def soft_max_score(scores: torch.Tensor, beta: float = 10.0) -> torch.Tensor:
    """Log-mean-exp soft maximum ``max S + log(mean(exp(beta (S - max S)))) / beta``: the
    patch score of LIFT's classification loss.

    Shape:
        scores: ``(B, 1, H, W)`` or ``(B, H, W)``; returns ``(B,)``.
    """
    flat = scores.reshape(scores.shape[0], -1).float()
    m = flat.max(dim=-1, keepdim=True).values.detach()
    return (m + torch.log(torch.exp(beta * (flat - m)).mean(-1, keepdim=True)) / beta)[:, 0]
