"""Coarse 4D correlation, soft mutual filter and the neighbourhood-consensus network.

Same order of operations as DRC-Net's reference (``lib/model_v2.py``): correlation of the
L2-normalised coarse maps (no ReLU, no normalisation), soft mutual filter, symmetric NC
network (Conv4d + ReLU per layer, the last one included), soft mutual filter.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...ops.conv4d import Conv4d


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Channel L2 normalisation with the reference's epsilon inside the root:
    ``x / sqrt(sum(x^2) + eps)``. Shape: ``(B, C, H, W)`` -> same."""
    return x / torch.sqrt(torch.sum(x * x, 1, keepdim=True) + eps)


def correlation_4d(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """All-pairs dot products of two feature maps.

    Shape: fa ``(B, C, hA, wA)``, fb ``(B, C, hB, wB)`` -> ``(B, 1, hA, wA, hB, wB)``.
    """
    b, c, ha, wa = fa.shape
    hb, wb = fb.shape[-2:]
    corr = torch.bmm(fa.reshape(b, c, ha * wa).transpose(1, 2), fb.reshape(b, c, hb * wb))
    return corr.view(b, 1, ha, wa, hb, wb)


def mutual_matching(corr: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft mutual nearest-neighbour filter: ``C * (C / max_B C) * (C / max_A C)``.

    Shape: ``(B, 1, hA, wA, hB, wB)`` -> same.
    """
    b, _, ha, wa, hb, wb = corr.shape
    cb = corr.view(b, ha * wa, hb, wb)
    ca = corr.view(b, ha, wa, hb * wb)
    rb = cb / (cb.max(dim=1, keepdim=True)[0] + eps)
    ra = ca / (ca.max(dim=3, keepdim=True)[0] + eps)
    return corr * (ra.view_as(corr) * rb.view_as(corr))


class NeighConsensus(nn.Module):
    """Symmetric neighbourhood consensus: ``net(x) + P(net(P(x)))``, ``P`` swapping the A and
    B index pairs; ``net`` = [Conv4d(k_i, c_{i-1} -> c_i) + ReLU] per layer. Attribute
    names match the reference (``conv.0``, ``conv.2``, ... are the Conv4d layers).

    Shape: ``(B, 1, hA, wA, hB, wB)`` -> ``(B, channels[-1], hA, wA, hB, wB)``.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (3, 3), channels: Sequence[int] = (16, 1),
                 symmetric: bool = True):
        super().__init__()
        if len(kernel_sizes) != len(channels) or not channels:
            raise ValueError(f"kernel_sizes {tuple(kernel_sizes)} and channels {tuple(channels)} must have the same length")
        layers: list[nn.Module] = []
        cin = 1
        for k, cout in zip(kernel_sizes, channels):
            layers += [Conv4d(cin, cout, k, bias=True), nn.ReLU(inplace=True)]
            cin = cout
        self.conv = nn.Sequential(*layers)
        self.symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            return self.conv(x)
        return self.conv(x) + self.conv(x.permute(0, 1, 4, 5, 2, 3)).permute(0, 1, 4, 5, 2, 3)
