"""4D convolution over correlation tensors (NCNet / DRC-Net neighbourhood consensus).

A 4D cross-correlation with stride 1 and zero padding ``k // 2`` on every axis (the output
has the input's size), written as ``k1`` batched 3D convolutions: the first spatial axis
``H1`` is folded into the batch, and kernel slice ``d`` of that axis is applied to the
input shifted by ``d - k1 // 2`` along it. The sum over the ``k1`` slices is the 4D result;
there is no Python loop over the 4D extent (only over the kernel's first axis).

Weights use the standard layout ``(C_out, C_in, k1, k2, k3, k4)``. The DRC-Net / NCNet
reference stores them pre-permuted as ``(k1, C_out, C_in, k2, k3, k4)``; convert with
:func:`from_reference_layout` / :func:`to_reference_layout`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def conv4d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """4D cross-correlation, stride 1, zero padding ``k // 2`` (size preserving; odd kernels).

    Shape:
        x ``(B, C_in, H1, W1, H2, W2)``, weight ``(C_out, C_in, k1, k2, k3, k4)``,
        bias ``(C_out,)`` -> ``(B, C_out, H1, W1, H2, W2)``.
    """
    if x.dim() != 6:
        raise ValueError(f"conv4d: x must be (B, C, H1, W1, H2, W2), got shape {tuple(x.shape)}")
    if weight.dim() != 6 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv4d: weight {tuple(weight.shape)} does not fit input channels {x.shape[1]}")
    if any(k % 2 == 0 for k in weight.shape[2:]):
        raise ValueError(f"conv4d: kernel sizes must be odd, got {tuple(weight.shape[2:])}")
    b, c, h1, w1, h2, w2 = x.shape
    co, _, k1, k2, k3, k4 = weight.shape
    p1 = k1 // 2
    # (B, H1 + 2 p1, C, W1, H2, W2): H1 next to the batch axis, zero-padded
    xs = x.transpose(1, 2)
    if p1:
        xs = F.pad(xs, (0, 0, 0, 0, 0, 0, 0, 0, p1, p1))
    xs = xs.contiguous()
    pad3 = (k2 // 2, k3 // 2, k4 // 2)
    out = None
    for d in range(k1):
        sl = xs[:, d:d + h1].reshape(b * h1, c, w1, h2, w2)
        y = F.conv3d(sl, weight[:, :, d], bias if d == 0 else None, padding=pad3)
        if out is None:
            out = y
        elif torch.is_grad_enabled() and (y.requires_grad or out.requires_grad):
            out = out + y
        else:
            out.add_(y)
    return out.view(b, h1, co, w1, h2, w2).transpose(1, 2)


def conv4d_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Direct 4D cross-correlation by explicit sums over the kernel offsets (slow; tests).

    Shape: as :func:`conv4d`.
    """
    b, c, h1, w1, h2, w2 = x.shape
    co, _, k1, k2, k3, k4 = weight.shape
    p = (k1 // 2, k2 // 2, k3 // 2, k4 // 2)
    xp = F.pad(x, (p[3], p[3], p[2], p[2], p[1], p[1], p[0], p[0])) if any(p) else x
    out = x.new_zeros(b, co, h1, w1, h2, w2)
    for a in range(k1):
        for bb in range(k2):
            for cc in range(k3):
                for dd in range(k4):
                    patch = xp[:, :, a:a + h1, bb:bb + w1, cc:cc + h2, dd:dd + w2]  # (B, Ci, ...)
                    out += torch.einsum("bixyzw,oi->boxyzw", patch, weight[:, :, a, bb, cc, dd])
    if bias is not None:
        out += bias.view(1, -1, 1, 1, 1, 1)
    return out


def from_reference_layout(w: torch.Tensor) -> torch.Tensor:
    """``(k1, C_out, C_in, k2, k3, k4)`` (NCNet / DRC-Net storage) -> ``(C_out, C_in, k1, ..., k4)``."""
    return w.permute(1, 2, 0, 3, 4, 5).contiguous()


def to_reference_layout(w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`from_reference_layout`."""
    return w.permute(2, 0, 1, 3, 4, 5).contiguous()


class Conv4d(nn.Module):
    """4D convolution layer (stride 1, size-preserving zero padding, bias).

    Shape: ``(B, C_in, H1, W1, H2, W2) -> (B, C_out, H1, W1, H2, W2)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"Conv4d: kernel_size must be odd, got {kernel_size}")
        k = kernel_size
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same initialisation as torch's _ConvNd (what the reference's Conv4d inherits)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size ** 4
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv4d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"
