"""Differentiable keypoint detection (DKD) of ALIKED: iterative NMS, threshold or top-k
selection, soft-argmax refinement."""

from __future__ import annotations

import torch

from ...ops.maxfilter import max_filter
from ...ops.sampling import normalize_grid, sample_at
from .network import MAX_KEYPOINTS_DEFAULT, SOFTARGMAX_TEMPERATURE


def iterative_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """SuperPoint-style NMS: local maxima in a ``2r+1`` window, then two rounds that
    recover maxima outside the suppressed neighbourhoods. Non-maxima are set to 0.

    Shape: ``(B, 1, H, W) -> (B, 1, H, W)``.
    """
    k = 2 * radius + 1

    def pool(t: torch.Tensor) -> torch.Tensor:
        return max_filter(t, k)  # = F.max_pool2d(t, k, 1, radius), separable and faster on CPU

    zeros = torch.zeros_like(scores)
    is_max = scores == pool(scores)
    for _ in range(2):
        suppressed = pool(is_max.float()) > 0
        rest = torch.where(suppressed, zeros, scores)
        is_max = is_max | ((rest == pool(rest)) & ~suppressed)
    return torch.where(is_max, scores, zeros)


def detect_keypoints(scores: torch.Tensor, *, radius: int, top_k: int, threshold: float,
                     max_keypoints: int = MAX_KEYPOINTS_DEFAULT):
    """Integer keypoints from a score map (DKD selection, without refinement).

    Modes, as in the reference: ``threshold > 0``: NMS maxima above ``threshold`` (if an
    image has none: above its mean score), at most ``top_k`` (or ``max_keypoints`` when
    ``top_k <= 0``) of them, best first; ``threshold <= 0`` and ``top_k > 0``: the
    ``top_k`` best NMS maxima; both ``<= 0``: maxima above the mean score. Pixels closer
    than ``radius`` to the border are never selected.

    Shape:
        scores: ``(B, 1, H, W)``.
        returns: ``positions (B, N, 2)`` long ``(x, y)``, ``mask (B, N)`` bool, sorted by
        score (descending) within each image.
    """
    b, _, h, w = scores.shape
    nms = iterative_nms(scores, radius)
    inner = torch.zeros_like(nms, dtype=torch.bool)
    inner[..., radius:h - radius, radius:w - radius] = True
    nms = nms.masked_fill(~inner, 0.0).reshape(b, -1)
    mean = scores.reshape(b, -1).mean(dim=1, keepdim=True)
    if threshold > 0:
        cand = nms > threshold
        empty = ~cand.any(dim=1, keepdim=True)
        cand = torch.where(empty, nms > mean, cand)
    elif top_k > 0:
        cand = nms > 0
    else:
        cand = nms > mean
    limit = top_k if top_k > 0 else max_keypoints

    nz = cand.nonzero()  # (K, 2): image, flat index; raster order
    vals = nms[nz[:, 0], nz[:, 1]]
    order = torch.sort(vals, descending=True, stable=True).indices
    order = order[torch.sort(nz[order, 0], stable=True).indices]  # group by image, keep score order
    nz = nz[order]
    counts = torch.bincount(nz[:, 0], minlength=b)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(nz.shape[0], device=scores.device) - starts[nz[:, 0]]
    keep = slot < limit
    nz, slot = nz[keep], slot[keep]
    n = int(min(int(counts.max()) if counts.numel() else 0, limit))
    pos = torch.zeros(b, n, 2, dtype=torch.long, device=scores.device)
    mask = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    if nz.numel():
        idx = nz[:, 1]
        pos[nz[:, 0], slot] = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1)
        mask[nz[:, 0], slot] = True
    return pos, mask


def refine_keypoints(scores: torch.Tensor, positions: torch.Tensor, radius: int,
                     temperature: float = SOFTARGMAX_TEMPERATURE):
    """Soft-argmax refinement in the ``(2r+1)^2`` window and bilinear keypoint scores.

    Shape:
        scores: ``(B, 1, H, W)``; positions: ``(B, N, 2)`` long ``(x, y)``.
        returns: keypoints ``(B, N, 2)`` float pixels, keypoint_scores ``(B, N)``.
    """
    b, _, h, w = scores.shape
    d = torch.arange(-radius, radius + 1, device=scores.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    offsets = torch.stack([dx.reshape(-1), dy.reshape(-1)], -1)  # (k*k, 2) as (x, y), raster order
    xs = (positions[..., 0:1] + offsets[:, 0]).clamp(0, w - 1)  # (B, N, k*k)
    ys = (positions[..., 1:2] + offsets[:, 1]).clamp(0, h - 1)
    flat = scores.reshape(b, h * w)
    window = flat.gather(1, (ys * w + xs).reshape(b, -1)).reshape(*xs.shape)
    weights = torch.softmax(window / temperature, dim=-1)
    kp = positions.to(scores.dtype) + weights @ offsets.to(scores.dtype)
    grid = normalize_grid(kp, (w, h), align_corners=True)
    kscores = sample_at(scores, grid, "bilinear", align_corners=True)[..., 0]
    return kp, kscores
