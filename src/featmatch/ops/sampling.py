"""Sampling dense feature maps at sparse positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize_grid(points: torch.Tensor, size_wh, *, align_corners: bool = False) -> torch.Tensor:
    """Map pixel ``(x, y)`` to ``grid_sample``'s [-1, 1] coordinates.

    ``align_corners=False`` uses the pixel-centre convention ``(2p + 1) / size - 1``;
    ``align_corners=True`` uses ``2p / (size - 1) - 1``.

    Shape:
        points: ``(..., 2)``; size_wh: ``(W, H)``.
    """
    w, h = size_wh
    size = torch.tensor([w, h], dtype=points.dtype, device=points.device)
    if align_corners:
        return 2.0 * points / (size - 1) - 1.0
    return (2.0 * points + 1.0) / size - 1.0


def sample_at(fmap: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear",
              align_corners: bool = False) -> torch.Tensor:
    """Sample ``fmap`` at normalised positions.

    Shape:
        fmap: ``(B, C, H, W)``; grid: ``(B, N, 2)`` in [-1, 1]; returns ``(B, N, C)``.
    """
    out = F.grid_sample(fmap, grid[:, :, None, :].to(fmap.dtype), mode=mode,
                        align_corners=align_corners)
    return out[..., 0].transpose(1, 2)
