"""LoFTR's local feature CNN: a ResNet-18-like encoder with an FPN decoder giving a coarse
map at 1/8 and a fine map at 1/2 resolution, plus the 2-D sinusoidal positional encoding
added to the coarse map.

Parameter names (``conv1``, ``layer1`` ... ``layer1_outconv2``) are those of the official
checkpoints, so their state dicts load without renaming.

Inference (BatchNorm in eval mode) folds each BatchNorm into the preceding convolution on the
fly and, on CPU, runs the convolutions in channels-last layout (oneDNN's native layout: no
reorders between layers); the maps are returned channels-last then. Same maths; about 1.5x
faster on CPU at 640x480. Training (BatchNorm in train mode) runs the plain modules.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a bias-free ``conv`` followed by an eval-mode ``bn``."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


def _conv(x: torch.Tensor, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d] = None) -> torch.Tensor:
    """``conv`` (and the folded eval-mode ``bn``), channels-last on CPU with oneDNN (weights
    converted, so the output is channels-last whatever the input layout)."""
    w, b = (conv.weight, conv.bias) if bn is None else _fold(conv, bn)
    if x.device.type == "cpu" and torch.backends.mkldnn.is_available():
        w = w.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, w, b, conv.stride, conv.padding)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (a 1x1 conv-BN one when the stride
    or the width changes; the official sizes never change the width at stride 1).

    Shape: ``(B, cin, H, W) -> (B, cout, H / stride, W / stride)``.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn1.training:
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = x if self.downsample is None else self.downsample(x)
            return F.relu(shortcut + out)
        out = _conv(F.relu_(_conv(x, self.conv1, self.bn1)), self.conv2, self.bn2)
        shortcut = x if self.downsample is None else _conv(x, self.downsample[0], self.downsample[1])
        return F.relu_(out.add_(shortcut))


def _fpn_merge(dim_in: int, dim_out: int) -> nn.Sequential:
    """3x3 conv-BN-LeakyReLU-3x3 conv applied after adding the upsampled coarser level."""
    return nn.Sequential(_conv3x3(dim_in, dim_in), nn.BatchNorm2d(dim_in), nn.LeakyReLU(), _conv3x3(dim_in, dim_out))


class ResNetFPN(nn.Module):
    """ResNet encoder (stem 7x7/2, three stages of two residual blocks at 1/2, 1/4, 1/8)
    and a top-down FPN back to 1/2.

    Args:
        initial_dim: channels of the stem.
        block_dims: channels of the three stages; ``block_dims[2]`` is the coarse feature
            width, ``block_dims[0]`` the fine one.

    Shape:
        input ``(B, 1, H, W)`` grey in [0, 1], H and W multiples of 8.
        returns coarse ``(B, block_dims[2], H/8, W/8)`` and fine ``(B, block_dims[0], H/2, W/2)``.
    """

    def __init__(self, initial_dim: int = 128, block_dims: tuple[int, int, int] = (128, 196, 256)):
        super().__init__()
        d1, d2, d3 = block_dims
        self.conv1 = nn.Conv2d(1, initial_dim, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(initial_dim)
        self.layer1 = nn.Sequential(ResidualBlock(initial_dim, d1, 1), ResidualBlock(d1, d1))  # 1/2
        self.layer2 = nn.Sequential(ResidualBlock(d1, d2, 2), ResidualBlock(d2, d2))  # 1/4
        self.layer3 = nn.Sequential(ResidualBlock(d2, d3, 2), ResidualBlock(d3, d3))  # 1/8
        self.layer3_outconv = _conv1x1(d3, d3)
        self.layer2_outconv = _conv1x1(d2, d3)
        self.layer2_outconv2 = _fpn_merge(d3, d2)
        self.layer1_outconv = _conv1x1(d1, d2)
        self.layer1_outconv2 = _fpn_merge(d2, d1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"ResNetFPN needs H and W multiples of 8, got {tuple(x.shape[-2:])}")
        if self.bn1.training:
            s1 = self.layer1(F.relu(self.bn1(self.conv1(x))))
            s2 = self.layer2(s1)
            s3 = self.layer3(s2)
            coarse = self.layer3_outconv(s3)
            up = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=True)
            mid = self.layer2_outconv2(self.layer2_outconv(s2) + up)
            up = F.interpolate(mid, scale_factor=2.0, mode="bilinear", align_corners=True)
            fine = self.layer1_outconv2(self.layer1_outconv(s1) + up)
            return coarse, fine
        # references are dropped as soon as possible: the 1/2-resolution maps are the memory peak
        s1 = self.layer1(F.relu_(_conv(x, self.conv1, self.bn1)))
        s2 = self.layer2(s1)
        coarse = _conv(self.layer3(s2), self.layer3_outconv)
        mid = _conv(s2, self.layer2_outconv).add_(F.interpolate(coarse, scale_factor=2.0, mode="bilinear",
                                                                align_corners=True))
        del s2
        seq = self.layer2_outconv2
        mid = _conv(F.leaky_relu_(_conv(mid, seq[0], seq[1]), seq[2].negative_slope), seq[3])
        fine = _conv(s1, self.layer1_outconv)
        del s1
        fine = fine.add_(F.interpolate(mid, scale_factor=2.0, mode="bilinear", align_corners=True))
        del mid
        seq = self.layer1_outconv2
        fine = F.leaky_relu_(_conv(fine, seq[0], seq[1]), seq[2].negative_slope)
        return coarse, _conv(fine, seq[3])


def sine_position_encoding(dim: int, h: int, w: int, *, fixed: bool = True, device=None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2-D sinusoidal positional encoding of a ``h x w`` grid (positions start at 1).

    Channels cycle through ``sin(x f), cos(x f), sin(y f), cos(y f)`` over ``dim / 4``
    frequencies ``f_k = 10000^(-2k / (dim / 2))``. ``fixed=False`` reproduces the
    frequencies of the official implementation before its bug fix (``f_k = e^(-2k)``),
    which the released ``outdoor_ds`` / ``indoor_ds`` checkpoints were trained with.

    Shape: returns ``(1, dim, h, w)``.
    """
    if dim % 4:
        raise ValueError(f"positional encoding needs a width divisible by 4, got {dim}")
    k2 = torch.arange(0, dim // 2, 2, dtype=torch.float32, device=device)
    if fixed:
        freq = torch.exp(k2 * (-math.log(10000.0) / (dim // 2)))
    else:  # the official pre-fix expression: (-log(1e4) / dim) // 2 == -1
        freq = torch.exp(k2 * float((-math.log(10000.0) / dim) // 2))
    freq = freq[:, None, None]
    ys = torch.arange(1, h + 1, dtype=torch.float32, device=device)[None, :, None].expand(1, h, w)
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, None, :].expand(1, h, w)
    pe = torch.stack([torch.sin(xs * freq), torch.cos(xs * freq), torch.sin(ys * freq), torch.cos(ys * freq)], 1)
    return pe.reshape(1, dim, h, w).to(dtype)
