"""4D convolution over correlation tensors (NCNet / DRC-Net neighbourhood consensus).

A 4D cross-correlation with stride 1 and zero padding ``k // 2`` on every axis (the output
has the input's size), written as ``k1`` batched 3D convolutions: the first spatial axis
``H1`` is folded into the batch, and kernel slice ``d`` of that axis is applied to the
input shifted by ``d - k1 // 2`` along it. The sum over the ``k1`` slices is the 4D result;
there is no Python loop over the 4D extent (only over the kernel's first axis).

oneDNN's 3D convolution is slow with one input or one output channel (NC's layers are
1 -> 16 and 16 -> 1), so two equivalent arrangements take those shapes (same sums, another
order; chosen by shape, measured at DRC-Net's 48x64x48x64 coarse correlation, one thread):

* ``C_in * k1 <= 8`` (e.g. 1 -> 16): the ``k1`` shifted copies of the input along ``H1``
  become input channels of **one** 3D convolution (3.8 s -> 1.7 s; differentiable);
* ``C_out * k1 * k2 <= 18`` without autograd (e.g. 16 -> 1 at inference): one 2D convolution
  over ``(H2, W2)`` with the ``k1 x k2`` kernel slices stacked as output channels, a few
  ``H1`` rows at a time, then shifted sums along ``H1`` and ``W1`` (10.2 s -> 2.2 s);
* otherwise ``k1`` batched 3D convolutions as above.

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
    c = x.shape[1]
    co, _, k1, k2 = weight.shape[:4]
    if c * k1 <= 8:
        return _conv4d_stacked_input(x, weight, bias)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                              or (bias is not None and bias.requires_grad))
    if co * k1 * k2 <= 18 and not needs_grad:
        return _conv4d_stacked_output(x, weight, bias)
    return _conv4d_slices(x, weight, bias)


def _conv4d_slices(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """:func:`conv4d` as ``k1`` batched 3D convolutions, one per kernel slice of ``H1``."""
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


def _conv4d_stacked_input(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """:func:`conv4d` for few input channels: the ``k1`` copies of the input shifted along
    ``H1`` are the ``k1 * C_in`` channels of one 3D convolution over ``(W1, H2, W2)``."""
    b, c, h1, w1, h2, w2 = x.shape
    co, _, k1, k2, k3, k4 = weight.shape
    p1 = k1 // 2
    xp = F.pad(x, (0, 0, 0, 0, 0, 0, p1, p1)) if p1 else x
    cols = torch.stack([xp[:, :, d:d + h1] for d in range(k1)], 2)  # (B, C, k1, H1, W1, H2, W2)
    cols = cols.permute(0, 3, 2, 1, 4, 5, 6).reshape(b * h1, k1 * c, w1, h2, w2)  # channel = d * C + c
    w = weight.permute(0, 2, 1, 3, 4, 5).reshape(co, k1 * c, k2, k3, k4)
    y = F.conv3d(cols, w, bias, padding=(k2 // 2, k3 // 2, k4 // 2))
    return y.view(b, h1, co, w1, h2, w2).transpose(1, 2)


def _conv4d_stacked_output(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           max_elements: int = 16_000_000) -> torch.Tensor:
    """:func:`conv4d` for few output channels, without autograd (in-place sums): a 2D
    convolution over ``(H2, W2)`` whose output channels are the ``k1 * k2 * C_out`` kernel
    slices, a block of ``H1`` rows at a time (at most ``max_elements`` values per block);
    slice ``(d1, d2)`` of input cell ``(r, j)`` adds to output cell ``(r - d1 + k1 // 2,
    j - d2 + k2 // 2)``."""
    b, c, h1, w1, h2, w2 = x.shape
    co, _, k1, k2, k3, k4 = weight.shape
    p1, p2 = k1 // 2, k2 // 2
    xs = x.permute(0, 2, 3, 1, 4, 5)  # (B, H1, W1, C, H2, W2)
    w = weight.permute(2, 3, 0, 1, 4, 5).reshape(k1 * k2 * co, c, k3, k4)
    out = x.new_zeros(b, h1, w1, co, h2, w2)
    rows = max(1, max_elements // max(1, b * w1 * k1 * k2 * co * h2 * w2))
    for r0 in range(0, h1, rows):
        r1 = min(h1, r0 + rows)
        y = F.conv2d(xs[:, r0:r1].reshape(b * (r1 - r0) * w1, c, h2, w2), w, padding=(k3 // 2, k4 // 2))
        y = y.view(b, r1 - r0, w1, k1, k2, co, h2, w2)
        for d1 in range(k1):
            o0 = r0 - d1 + p1  # output row of input row r0
            lo, hi = max(o0, 0), min(o0 + r1 - r0, h1)
            if lo >= hi:
                continue
            for d2 in range(k2):
                s2 = p2 - d2  # output column = input column + s2
                jlo, jhi = max(s2, 0), min(w1 + s2, w1)
                if jlo < jhi:
                    out[:, lo:hi, jlo:jhi] += y[:, lo - o0:hi - o0, jlo - s2:jhi - s2, d1, d2]
    if bias is not None:
        out += bias.view(1, 1, 1, co, 1, 1)
    return out.permute(0, 3, 1, 2, 4, 5)


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
