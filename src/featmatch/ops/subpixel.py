"""Sub-pixel refinement of matches on image intensities (translation-only Lucas-Kanade).

:func:`refine_translation` moves each point of one image so that the patch around it
best matches the patch around its partner in the other image: inverse-compositional
Lucas-Kanade (Baker & Matthews 2004) with a translation warp, on zero-mean, unit-variance
patches (so affine brightness changes do not matter) under a Gaussian window. A refined
point is kept only if it moved at most ``max_move`` pixels, the normalised
cross-correlation went up and ends at ``min_ncc`` or more; otherwise the input point is
returned unchanged. All matches are refined at once (``grid_sample`` gathers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..types import check_shape


def _sample(img: torch.Tensor, pts: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``img`` at ``pts + offsets`` (border pixels repeated).

    Shape: img ``(1, H, W)``, pts ``(N, 2)``, offsets ``(K, 2)`` -> ``(N, K)``.
    """
    h, w = img.shape[-2:]
    xy = pts[:, None, :] + offsets[None]
    grid = torch.stack([xy[..., 0] * (2.0 / max(w - 1, 1)) - 1.0, xy[..., 1] * (2.0 / max(h - 1, 1)) - 1.0], -1)
    out = F.grid_sample(img[None], grid[None].to(img.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out[0, 0]


def _normalise(patch: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero weighted mean, unit weighted std per row; returns the patch and its std."""
    mean = (patch * weight).sum(-1, keepdim=True)
    centred = patch - mean
    std = ((centred ** 2 * weight).sum(-1, keepdim=True)).sqrt().clamp_min(1e-6)
    return centred / std, std[:, 0]


def refine_translation(fixed: torch.Tensor, moving: torch.Tensor, p_fixed: torch.Tensor, p_moving: torch.Tensor,
                       radius: int = 5, iters: int = 6, max_move: float = 2.0, min_ncc: float = 0.5,
                       min_std: float = 2e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine ``p_moving`` so the ``moving`` patch around it matches the ``fixed`` patch
    around ``p_fixed`` (see module docstring).

    Args:
        fixed, moving: grey images, float.
        p_fixed, p_moving: matched pixel positions ``(x, y)`` (pixel centres at integers).
        radius: patch half-size in pixels (patch ``2 r + 1`` square).
        iters: Gauss-Newton iterations.
        max_move: refinements moving a point further than this (pixels, per axis) are rejected.
        min_ncc: refined patches must reach this normalised cross-correlation.
        min_std: patches flatter than this (intensity std) are left alone.

    Shape: fixed ``(1, H0, W0)``, moving ``(1, H1, W1)``, points ``(N, 2)`` -> refined
    ``(N, 2)`` (``p_moving``'s dtype) and accepted ``(N,)`` bool.
    """
    check_shape("fixed", fixed, (1, -1, -1))
    check_shape("moving", moving, (1, -1, -1))
    check_shape("p_fixed", p_fixed, (-1, 2))
    check_shape("p_moving", p_moving, (p_fixed.shape[0], 2))
    n = p_fixed.shape[0]
    if n == 0:
        return p_moving.clone(), torch.zeros(0, dtype=torch.bool, device=p_moving.device)
    dev, dt = fixed.device, fixed.dtype
    r = int(radius)
    ar = torch.arange(-r - 1, r + 2, device=dev, dtype=dt)  # one extra ring for the gradients
    gy, gx = torch.meshgrid(ar, ar, indexing="ij")
    big = torch.stack([gx, gy], -1).reshape(-1, 2)
    side = 2 * r + 3
    inner = torch.zeros(side, side, dtype=torch.bool, device=dev)
    inner[1:-1, 1:-1] = True
    inner = inner.flatten()
    offsets = big[inner]
    sigma = 0.5 * (r + 1)
    weight = torch.exp(-(offsets ** 2).sum(-1) / (2 * sigma ** 2))
    weight = weight / weight.sum()

    pf = p_fixed.to(dt)
    tpl_big = _sample(fixed, pf, big).view(n, side, side)
    tpl, std_t = _normalise(tpl_big.flatten(1)[:, inner], weight)
    grad_x = ((tpl_big[:, 1:-1, 2:] - tpl_big[:, 1:-1, :-2]) * 0.5).flatten(1) / std_t[:, None]
    grad_y = ((tpl_big[:, 2:, 1:-1] - tpl_big[:, :-2, 1:-1]) * 0.5).flatten(1) / std_t[:, None]
    hxx = (grad_x * grad_x * weight).sum(-1)
    hxy = (grad_x * grad_y * weight).sum(-1)
    hyy = (grad_y * grad_y * weight).sum(-1)
    det = hxx * hyy - hxy ** 2
    # well-conditioned Hessians only (textured in both directions)
    trace = hxx + hyy
    ok = (std_t > min_std) & (det > 1e-3 * trace ** 2) & (trace > 0)

    p0 = p_moving.to(dt)
    p = p0.clone()
    cur, _ = _normalise(_sample(moving, p, offsets), weight)
    ncc0 = (cur * tpl * weight).sum(-1)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    for _ in range(iters):
        err = cur - tpl
        bx = (grad_x * err * weight).sum(-1)
        by = (grad_y * err * weight).sum(-1)
        dx = (hyy * bx - hxy * by) / safe_det
        dy = (hxx * by - hxy * bx) / safe_det
        step = torch.stack([dx, dy], -1).clamp(-1.0, 1.0)
        p = torch.where(ok[:, None], p - step, p)
        cur, _ = _normalise(_sample(moving, p, offsets), weight)
    ncc = (cur * tpl * weight).sum(-1)
    accepted = ok & ((p - p0).abs().amax(-1) <= max_move) & (ncc > ncc0) & (ncc >= min_ncc)
    out = torch.where(accepted[:, None], p, p0)
    return out.to(p_moving.dtype), accepted
