"""Ground-truth correspondences: warp pixels by a homography or by depth + pose.

All functions are differentiable-free torch code working on batches.
Pixel convention: ``(x, y)``, centre of the top-left pixel at ``(0, 0)``.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..types import check_shape


def warp_points_homography(points: torch.Tensor, H: torch.Tensor, size1_wh: Optional[tuple] = None):
    """Apply ``H_0to1`` to points; optionally flag those landing inside image 1.

    Shape:
        points: ``(B, N, 2)``; H: ``(B, 3, 3)``.
        returns ``(B, N, 2)`` warped points and ``(B, N)`` bool validity (finite, positive
        depth, inside ``size1_wh`` = ``(W, H)`` if given, with the -0.5 .. W-0.5 extent).
    """
    check_shape("points", points, (-1, -1, 2))
    check_shape("H", H, (-1, 3, 3))
    ph = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ H.transpose(1, 2).to(points.dtype)
    z = ph[..., 2:]
    valid = z[..., 0] > 1e-8
    out = ph[..., :2] / torch.where(valid[..., None], z, torch.ones_like(z))
    if size1_wh is not None:
        w, h = size1_wh
        valid &= (out[..., 0] >= -0.5) & (out[..., 0] <= w - 0.5) & (out[..., 1] >= -0.5) & (out[..., 1] <= h - 0.5)
    return out, valid


def _sample_depth(depth: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour depth lookup. depth ``(B, H, W)``, pts ``(B, N, 2)`` -> ``(B, N)``
    (0 outside the image)."""
    b, h, w = depth.shape
    x = pts[..., 0].round().long()
    y = pts[..., 1].round().long()
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))
    d = torch.gather(depth.reshape(b, -1), 1, idx)
    return torch.where(inside, d, torch.zeros_like(d))


def warp_points_depth(points0: torch.Tensor, depth0: torch.Tensor, depth1: torch.Tensor,
                      K0: torch.Tensor, K1: torch.Tensor, T_0to1: torch.Tensor,
                      rel_tol: float = 0.05):
    """Warp pixels of image 0 into image 1 with depth and relative pose; occlusion-checked.

    A point is valid when it has depth in image 0, projects in front of camera 1 and inside
    image 1, and its depth in camera 1 agrees with image 1's depth map there within
    ``rel_tol`` (relative), i.e. it is not occluded (the LoFTR / MegaDepth convention).

    Shape:
        points0: ``(B, N, 2)``; depth0: ``(B, H0, W0)``; depth1: ``(B, H1, W1)`` (0 = unknown);
        K0, K1: ``(B, 3, 3)``; T_0to1: ``(B, 4, 4)`` mapping camera-0 to camera-1 coordinates.
        returns warped points ``(B, N, 2)`` and validity ``(B, N)``.
    """
    check_shape("points0", points0, (-1, -1, 2))
    check_shape("K0", K0, (-1, 3, 3))
    check_shape("T_0to1", T_0to1, (-1, 4, 4))
    z0 = _sample_depth(depth0, points0)
    ones = torch.ones_like(points0[..., :1])
    rays = torch.cat([points0, ones], -1) @ torch.linalg.inv(K0).transpose(1, 2)
    X0 = rays * z0[..., None]
    X1 = X0 @ T_0to1[:, :3, :3].transpose(1, 2) + T_0to1[:, None, :3, 3]
    z1 = X1[..., 2]
    front = z1 > 1e-6
    proj = X1 @ K1.transpose(1, 2)
    pts1 = proj[..., :2] / torch.where(front, z1, torch.ones_like(z1))[..., None]
    h1, w1 = depth1.shape[-2:]
    inside = (pts1[..., 0] >= -0.5) & (pts1[..., 0] <= w1 - 0.5) & (pts1[..., 1] >= -0.5) & (pts1[..., 1] <= h1 - 0.5)
    d1 = _sample_depth(depth1, pts1)
    consistent = (d1 > 0) & ((d1 - z1).abs() <= rel_tol * z1.abs())
    valid = (z0 > 0) & front & inside & consistent
    return pts1, valid
