"""Mutual nearest-neighbour matching of descriptors (cosine, L2 or Hamming)."""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import UsageError


def _similarity(d0: torch.Tensor, d1: torch.Tensor, metric: str) -> torch.Tensor:
    """Similarity (higher is better) ``(..., N, M)``: cosine/dot, negative L2, or
    negative Hamming distance for ``uint8`` packed binary descriptors."""
    if metric == "hamming" or d0.dtype == torch.uint8:
        bits = torch.arange(8, device=d0.device, dtype=torch.uint8)
        b0 = ((d0[..., None] >> bits) & 1).flatten(-2).float()
        b1 = ((d1[..., None] >> bits) & 1).flatten(-2).float()
        agree = b0 @ b1.transpose(-1, -2) + (1 - b0) @ (1 - b1).transpose(-1, -2)
        return agree - b0.shape[-1]  # = -hamming distance
    sim = d0 @ d1.transpose(-1, -2)
    if metric == "cosine" or metric == "dot":
        return sim
    if metric == "l2":
        n0 = (d0 * d0).sum(-1, keepdim=True)
        n1 = (d1 * d1).sum(-1)[..., None, :]
        return -(n0 + n1 - 2 * sim).clamp_min(0).sqrt()
    raise UsageError(f"unknown matching metric '{metric}'; use cosine, l2 or hamming")


def _to_distance(sim: torch.Tensor, metric: str, is_binary: bool) -> torch.Tensor:
    if is_binary or metric in ("l2", "hamming"):
        return -sim
    return (2 - 2 * sim).clamp_min(0).sqrt()  # L2 distance of unit vectors


#: rows of the similarity matrix computed at once; keeps each block in cache so the
#: column-wise maximum costs no extra pass over a large matrix
CHUNK_ROWS = 256


def _masked_similarity(d0, d1, metric, mask0, mask1) -> torch.Tensor:
    sim = _similarity(d0, d1, metric)
    neg = torch.finfo(sim.dtype).min
    if mask0 is not None:
        sim = sim.masked_fill(~mask0[:, :, None], neg)
    if mask1 is not None:
        sim = sim.masked_fill(~mask1[:, None, :], neg)
    return sim


def _nearest_both_ways(d0, d1, metric, mask0, mask1):
    """Best similarity and index 0->1 and the index 1->0, computing the similarity matrix
    in row blocks (same result as the full matrix, first index on ties)."""
    b, n, m = d0.shape[0], d0.shape[1], d1.shape[1]
    best01 = torch.empty(b, n, device=d0.device)
    nn01 = torch.empty(b, n, dtype=torch.long, device=d0.device)
    colmax = None
    colarg = torch.zeros(b, m, dtype=torch.long, device=d0.device)
    for i in range(0, n, CHUNK_ROWS):
        sl = slice(i, min(i + CHUNK_ROWS, n))
        blk = _masked_similarity(d0[:, sl], d1, metric, None if mask0 is None else mask0[:, sl], mask1)
        v, idx = blk.max(dim=2)
        best01[:, sl] = v
        nn01[:, sl] = idx
        cv, ci = blk.max(dim=1)
        if colmax is None:
            colmax, colarg = cv, ci
        else:
            upd = cv > colmax
            colmax = torch.where(upd, cv, colmax)
            colarg = torch.where(upd, ci + i, colarg)
    return best01, nn01, colarg


def mutual_nn_batched(d0: torch.Tensor, d1: torch.Tensor, *, mask0: Optional[torch.Tensor] = None,
                      mask1: Optional[torch.Tensor] = None, metric: str = "cosine",
                      min_score: Optional[float] = None, max_distance: Optional[float] = None,
                      ratio: Optional[float] = None, mutual: bool = True):
    """Mutual nearest neighbours with optional thresholds, batched and padded.

    Args:
        d0, d1: descriptors; float (L2-normalised for cosine) or uint8 (packed bits).
        mask0, mask1: valid entries (padded batches).
        metric: ``cosine`` (similarity = dot product), ``l2`` or ``hamming``.
        min_score: keep matches whose similarity is above this (cosine only).
        max_distance: keep matches whose distance is at most this (L2 / Hamming).
        ratio: Lowe's ratio test on distances, both directions (``d1st < ratio * d2nd``).
        mutual: require mutual nearest neighbours (default True).

    Shape:
        d0: ``(B, N, D)``, d1: ``(B, M, D)``, masks ``(B, N)`` / ``(B, M)``.
        returns: ``matches0 (B, N)`` long, index into d1 or -1; ``scores0 (B, N)``
        similarity of the match (0 where unmatched).
    """
    if d0.dim() != 3 or d1.dim() != 3 or d0.shape[0] != d1.shape[0] or d0.shape[-1] != d1.shape[-1]:
        raise UsageError(f"descriptors must be (B, N, D) and (B, M, D) with equal B and D; got {tuple(d0.shape)} and {tuple(d1.shape)}")
    b, n, m = d0.shape[0], d0.shape[1], d1.shape[1]
    dev = d0.device
    matches0 = torch.full((b, n), -1, dtype=torch.long, device=dev)
    scores0 = torch.zeros((b, n), device=dev)
    if n == 0 or m == 0:
        return matches0, scores0
    is_binary = d0.dtype == torch.uint8
    sim = None
    if ratio is None:
        best01, nn01, nn10 = _nearest_both_ways(d0, d1, metric, mask0, mask1)
    else:
        sim = _masked_similarity(d0, d1, metric, mask0, mask1)
        best01, nn01 = sim.max(dim=2)  # (B, N)
        nn10 = sim.max(dim=1).indices  # (B, M)
    valid = torch.ones_like(nn01, dtype=torch.bool)
    if mutual:
        valid &= torch.gather(nn10, 1, nn01) == torch.arange(n, device=dev)[None]
    if mask0 is not None:
        valid &= mask0
    if mask1 is not None:
        valid &= torch.gather(mask1, 1, nn01)
    if min_score is not None:
        valid &= best01 > min_score
    if max_distance is not None:
        valid &= _to_distance(best01, metric, is_binary) <= max_distance
    if ratio is not None:
        if m < 2 or n < 2:
            valid &= False
        else:
            assert sim is not None
            dist = _to_distance(sim, metric, is_binary)
            top0 = dist.topk(2, dim=2, largest=False).values
            top1 = dist.topk(2, dim=1, largest=False).values  # (B, 2, M)
            ok0 = top0[..., 0] < ratio * top0[..., 1]
            ok1 = torch.gather(top1[:, 0] < ratio * top1[:, 1], 1, nn01)
            valid &= ok0 & ok1
    matches0 = torch.where(valid, nn01, matches0)
    scores0 = torch.where(valid, best01.float(), scores0)
    return matches0, scores0


def mutual_nn(d0: torch.Tensor, d1: torch.Tensor, **kwargs):
    """Unbatched :func:`mutual_nn_batched`.

    Shape:
        d0: ``(N, D)``, d1: ``(M, D)``; returns ``idx0 (K,)``, ``idx1 (K,)``, ``scores (K,)``.
    """
    if d0.dim() != 2 or d1.dim() != 2:
        raise UsageError(f"descriptors must be (N, D) and (M, D); got {tuple(d0.shape)} and {tuple(d1.shape)}")
    m0, s0 = mutual_nn_batched(d0[None], d1[None], **kwargs)
    idx0 = (m0[0] >= 0).nonzero()[:, 0]
    return idx0, m0[0, idx0], s0[0, idx0]
