"""LIFT (Yi, Trulls, Lepetit, Fua, ECCV 2016): Learned Invariant Feature Transform.

Three networks, trained separately (``featmatch train lift --stage desc|ori|det``):

* :class:`LIFTDetector` (DET): one 25x25 convolution with 16 filters followed by the
  piecewise-linear activation of eq. 5 (:func:`ghh`: max over M = 4 filters, summed over
  N = 4 groups with signs +1, -1, +1, -1) -> one score map.
* :class:`LIFTOrientation` (ORI): a small CNN on a 64x64 crop predicting ``(cos, sin)``;
  the angle is ``atan2(sin, cos)``.
* :class:`LIFTDescriptor` (DESC, Simo-Serra et al. 2015): conv 7x7x32 / tanh / L2-pool 2 /
  subtractive normalisation, conv 6x6x64 / tanh / L2-pool 3 / subtractive normalisation,
  conv 5x5x128 / tanh / L2-pool 4 -> 128-d (Euclidean distance; unnormalised in training).

Training patches (``featmatch.data.lift_patches``): ``P`` of 128x128 pixels covers 24
sigma around a keypoint (sigma = SIFT scale); the detector sees ``P`` resized to 48x48; the
Crop / Rot spatial transformers (:func:`crop_patch`, ``grid_sample``) cut the 64x64 crop
(12 sigma, half of ``P``) at the softargmax (eq. 7) location, rotated by the orientation.

:class:`LIFT` (``lift``) is the runtime pipeline of the paper's section 3.6: the detector
over a scale-space pyramid (5 scales per octave, sigma 1..16 as in the authors' code),
non-maximum suppression over position (7x7) and scale (the 2 levels above and below),
sub-pixel / sub-scale refinement, the ``top_k`` best, then orientation and descriptor only
at those points, in batches. ``Features.scales`` are OpenCV keypoint sizes (``2 sigma``,
the convention of featmatch's ``sift``), ``orientations`` the ORI angles (radians).

The authors' released Theano descriptor can be loaded into :class:`LIFTDescriptor` with
``featmatch.load("lift", descriptor_weights=PATH)`` (see :func:`read_theano_descriptor`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError, WeightsError
from ..image import MAX_PIXELS_DEFAULT, to_grey
from ..ops.maxfilter import max_filter
from ..ops.softargmax import soft_max_score, softargmax2d
from ..registry import ModelCard, WeightSpec, register
from ..types import Features
from .base import Extractor, is_int, is_number
from .nn_matcher import MNNConfig, MutualNN

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- geometry
PATCH_SIZE = 128  # P: training patch, covers SUPPORT sigma
SUPPORT = 24.0  # sigma covered by P
DET_SIZE = 48  # detector input (P resized)
CROP_SIZE = 64  # orientation / descriptor input (half of P)
CROP_SCALE = CROP_SIZE / PATCH_SIZE  # spatial-transformer scale of the crop (0.5)
DET_FILTER = 25
#: score-map pixels cropped per side after the valid convolution so that the rotated crop
#: stays inside P: ceil(48/128 * sqrt(2) * 64/2) = 17 px of the 48-px patch, 12 lost to the conv
DET_CROP = 5
DET_BORDER = (DET_FILTER - 1) // 2 + DET_CROP  # 17
#: one keypoint sigma in detector-input pixels (24 sigma -> 48 px, align-corners spacing 47/24)
DOG_SIGMA = (DET_SIZE - 1) / SUPPORT
#: Piccadilly grey mean / std (0-255) of the authors' detector / orientation inputs
KP_MEAN, KP_STD = 116.4368, 88.0831
#: and of their descriptor (patch-mean / patch-std in the released descriptor file)
DESC_MEAN, DESC_STD = 110.7539, 61.5369
#: weight-file entry (0-d tensor) with the support scale ORI / DESC were trained at
#: (``featmatch train lift --support-scale``); absent: 1.0
SUPPORT_KEY = "support_scale"
#: accepted support scales (config option and weight-file entry alike)
SUPPORT_RANGE = (0.25, 4.0)


def ghh(x: torch.Tensor, n: int = 4, m: int = 4) -> torch.Tensor:
    """Piecewise-linear activation of eq. 5 (generalised hinging hyperplanes).

    Channels are grouped in ``n`` groups of ``m`` consecutive channels; the output is
    ``sum_n delta_n max_m x[n*m + m']`` with ``delta = +1, -1, +1, ...`` (``+1`` for odd
    ``n`` counting from 1).

    Shape:
        x: ``(B, C * n * m, ...)`` -> ``(B, C, ...)``.
    """
    b, c = x.shape[:2]
    if c % (n * m):
        raise ValueError(f"ghh: {c} channels are not a multiple of n*m = {n * m}")
    g = x.reshape(b, c // (n * m), n, m, *x.shape[2:]).amax(3)
    sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n)], device=x.device, dtype=x.dtype)
    sign = sign.reshape(1, 1, n, *([1] * (x.dim() - 2)))
    return (g * sign).sum(2)


def patch_to_det_coords(xy_map: torch.Tensor) -> torch.Tensor:
    """Softargmax position on the cropped 14x14 score map -> spatial-transformer coordinates
    of ``P`` in [-1, 1]: ``x_n = (j + 17) / 23.5 - 1`` (align-corners semantics of the 48-px patch).

    Shape: ``(B, 2)`` -> ``(B, 2)``."""
    return (xy_map + DET_BORDER) / ((DET_SIZE - 1) / 2) - 1


def crop_patch(P: torch.Tensor, xy: torch.Tensor, angle: Optional[torch.Tensor] = None,
               size: int = CROP_SIZE, scale: float = CROP_SCALE) -> torch.Tensor:
    """The Crop (``angle=None``) and Rot spatial transformers: a ``size`` x ``size`` crop of
    ``P`` centred on ``xy`` (``[-1, 1]`` coordinates of ``P``, align-corners semantics),
    covering ``scale`` of its width, its axes rotated by ``angle`` (radians; the crop's x
    axis points along ``(cos a, sin a)`` in ``P``). Bilinear, border replication,
    differentiable in ``P``, ``xy`` and ``angle``.

    Shape:
        P: ``(B, C, H, W)``; xy: ``(B, 2)``; angle: ``(B,)`` -> ``(B, C, size, size)``.
    """
    b = P.shape[0]
    if angle is None:
        c = torch.ones(b, device=P.device, dtype=P.dtype)
        s = torch.zeros(b, device=P.device, dtype=P.dtype)
    else:
        c, s = torch.cos(angle).to(P.dtype), torch.sin(angle).to(P.dtype)
    theta = torch.stack([torch.stack([scale * c, -scale * s, xy[:, 0].to(P.dtype)], -1),
                         torch.stack([scale * s, scale * c, xy[:, 1].to(P.dtype)], -1)], 1)
    grid = F.affine_grid(theta, [b, P.shape[1], size, size], align_corners=True)
    return F.grid_sample(P, grid, mode="bilinear", padding_mode="border", align_corners=True)


# --------------------------------------------------------------------------- networks
class LIFTDetector(nn.Module):
    """DET: conv 25x25 (16 filters, valid) + GHH(4, 4) -> score map.

    Input grey in [0, 1]; normalised inside with the buffers ``mean`` / ``std`` (0-255).
    Shape: ``(B, 1, H, W)`` -> ``(B, 1, H - 24, W - 24)``.
    """

    def __init__(self, n: int = 4, m: int = 4, filter_size: int = DET_FILTER):
        super().__init__()
        self.n, self.m = n, m
        self.conv = nn.Conv2d(1, n * m, filter_size)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="linear")
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("mean", torch.tensor(KP_MEAN))
        self.register_buffer("std", torch.tensor(KP_STD))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0 - self.mean) / self.std

    @torch.no_grad()
    def init_dog(self, sigma: float = DOG_SIGMA, k: float = 2.0 ** (1.0 / 3.0), noise: float = 1e-3,
                 generator: Optional[torch.Generator] = None) -> None:
        """featmatch's detector warm start (not in the paper): the score becomes
        ``|DoG * x|``, SIFT's blob response, before any training.

        Filter 0 of the first (+1) GHH group is a difference of Gaussians (sigma ``sigma``
        minus ``k sigma``, zero mean, unit L2 norm), filter 1 its negative, so that the
        group's maximum is ``|DoG|``; every other filter is ``noise`` x N(0, 1) (near zero:
        the other groups add ~0 but stay trainable). ``sigma`` = 47/24 px of the 48-px
        detector input is one keypoint sigma (the patch covers 24 sigma), so the pyramid
        level of sigma ``s`` responds most to blobs of SIFT scale ``~s``."""
        f = self.conv.weight.shape[-1]
        r = torch.arange(f, dtype=torch.float64) - (f - 1) / 2
        d2 = r[None, :] ** 2 + r[:, None] ** 2

        def gauss(s: float) -> torch.Tensor:
            return torch.exp(-d2 / (2 * s * s)) / (2 * math.pi * s * s)

        dog = gauss(sigma) - gauss(k * sigma)
        dog = dog - dog.mean()
        dog = (dog / dog.norm()).to(self.conv.weight.dtype)
        w = torch.randn(self.conv.weight.shape, generator=generator, dtype=torch.float64).to(self.conv.weight)
        w = w * noise
        w[0, 0] = dog
        w[1, 0] = -dog
        self.conv.weight.copy_(w)
        self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        return ghh(self.conv(x if normalized else self.normalize(x)), self.n, self.m)

    def patch_forward(self, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoint in a training patch: softargmax (beta 10) over the cropped 14x14 map.

        Shape: P ``(B, 1, 128, 128)`` in [0, 1] -> ``xy (B, 2)`` in P's [-1, 1]
        coordinates, ``score (B,)`` (log-mean-exp soft maximum, strength 10)."""
        x = F.interpolate(P, size=(DET_SIZE, DET_SIZE), mode="bilinear", align_corners=False, antialias=True)
        s = self.forward(x)[..., DET_CROP:-DET_CROP, DET_CROP:-DET_CROP]
        return patch_to_det_coords(softargmax2d(s, 10.0)), soft_max_score(s, 10.0)


class LIFTOrientation(nn.Module):
    """ORI: conv5x5x10-ReLU-pool2, conv5x5x20-ReLU-pool2, conv3x3x50-ReLU-pool2 (tf-lift's
    pooled variant: 1250 inputs to the FC), fc 1600 + GHH(4,4) -> 100, fc 32 + GHH(4,4) -> 2
    = ``(cos, sin)``; angle = ``atan2(sin, cos)``.

    Shape: ``(B, 1, 64, 64)`` grey in [0, 1] -> angle ``(B,)`` radians.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.conv3 = nn.Conv2d(20, 50, 3)
        self.fc4 = nn.Linear(50 * 5 * 5, 1600)
        self.fc5 = nn.Linear(100, 32)
        self.register_buffer("mean", torch.tensor(KP_MEAN))
        self.register_buffer("std", torch.tensor(KP_STD))

    def cos_sin(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = ghh(self.fc4(x.flatten(1)))
        return ghh(self.fc5(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cs = self.cos_sin(x).float()
        return torch.atan2(cs[:, 1], cs[:, 0])


class SubtractiveNorm(nn.Module):
    """Torch's SpatialSubtractiveNormalization: subtract the local mean (a normalised 5x5
    kernel over all channels, zero padding, divided by the kernel's coverage map so borders
    are not darkened) from every channel.

    Shape: ``(B, C, H, W)`` -> same."""

    def __init__(self, size: int = 5, sigma: float = 1.25):
        super().__init__()
        r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * sigma ** 2))
        self.register_buffer("kernel", g / g.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = (self.kernel / self.kernel.sum()).to(x.dtype)
        pad = k.shape[-1] // 2
        # = conv2d(x, k / c replicated over the c channels): average the channels first
        mean = F.conv2d(x.mean(1, keepdim=True), k[None, None], padding=pad)
        coef = F.conv2d(torch.ones(1, 1, h, w, device=x.device, dtype=x.dtype), k[None, None], padding=pad)
        return x - mean / coef


def lp_pool2(x: torch.Tensor, k: int) -> torch.Tensor:
    """L2 pooling, window = stride = k: ``sqrt(sum of squares)``. Shape: ``(B, C, H, W)``."""
    return torch.sqrt(F.avg_pool2d(x * x, k) * (k * k) + 1e-12)


def _tanh_lp_pool2_(x: torch.Tensor, k: int) -> torch.Tensor:
    """``lp_pool2(tanh(x), k)`` overwriting ``x`` (inference only): the same operations in the
    same order, so the same values, without allocating three more maps of ``x``'s size (at a
    batch of 64 patches the first one is 28 MB, and fresh large blocks cost page faults)."""
    return torch.sqrt_(F.avg_pool2d(torch.tanh_(x).square_(), k).mul_(k * k).add_(1e-12))


class LIFTDescriptor(nn.Module):
    """DESC (Simo-Serra et al. 2015, "CNN3"); no final normalisation (Euclidean training).

    Shape: ``(B, 1, 64, 64)`` grey in [0, 1] -> ``(B, 128)``.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 7)
        self.conv2 = nn.Conv2d(32, 64, 6)
        self.conv3 = nn.Conv2d(64, 128, 5)
        self.norm1 = SubtractiveNorm()
        self.norm2 = SubtractiveNorm()
        self.register_buffer("mean", torch.tensor(DESC_MEAN))
        self.register_buffer("std", torch.tensor(DESC_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - self.mean) / self.std
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            pool = lambda t, k: lp_pool2(torch.tanh(t), k)  # noqa: E731
        else:  # inference: the same values in place (1.5x faster DESC on a 2-core CPU, measured)
            pool = _tanh_lp_pool2_
        x = self.norm1(pool(self.conv1(x), 2))
        x = self.norm2(pool(self.conv2(x), 3))
        return pool(self.conv3(x), 4).flatten(1)


class LIFTNet(nn.Module):
    """The three LIFT networks (weights only); the runtime is :class:`LIFT`."""

    def __init__(self):
        super().__init__()
        self.detector = LIFTDetector()
        self.orientation = LIFTOrientation()
        self.descriptor = LIFTDescriptor()


def gather_mapped(m: torch.Tensor, shape_from: tuple, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Values of map ``m`` at positions ``(x, y)`` of a map of shape ``shape_from`` (another
    pyramid level), mapped by the ``(size - 1)`` ratios and rounded; outside -> ``-inf``.

    Shape: m ``(h, w)``; x, y ``(K,)`` -> ``(K,)``."""
    h0, w0 = shape_from
    h, w = m.shape
    xi = torch.round(x * (w - 1) / max(w0 - 1, 1)).long()
    yi = torch.round(y * (h - 1) / max(h0 - 1, 1)).long()
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    v = m[yi.clamp(0, h - 1), xi.clamp(0, w - 1)]
    return torch.where(inside, v, torch.full_like(v, float("-inf")))


def sample_mapped(m: torch.Tensor, shape_from: tuple, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_mapped`, but bilinear between the four nearest pixels of ``m``;
    ``-inf`` if any of them with a non-zero weight is outside ``m`` or not finite (the
    padding of a score map).

    Shape: m ``(h, w)``; x, y ``(K,)`` -> ``(K,)``."""
    h0, w0 = shape_from
    h, w = m.shape
    fx = x * (w - 1) / max(w0 - 1, 1)
    fy = y * (h - 1) / max(h0 - 1, 1)
    x0, y0 = torch.floor(fx), torch.floor(fy)
    ax, ay = (fx - x0).to(m.dtype), (fy - y0).to(m.dtype)
    # the four corners at once: (4, K) indices and weights
    xi = torch.stack([x0, x0 + 1, x0, x0 + 1]).long()
    yi = torch.stack([y0, y0, y0 + 1, y0 + 1]).long()
    wt = torch.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay])
    v = m.reshape(-1)[yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)]
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & torch.isfinite(v)
    bad = (~ok & (wt > 0)).any(0)  # a pixel with weight 0 does not count
    out = (torch.where(ok, v, torch.zeros_like(v)) * wt).sum(0)
    return torch.where(bad, torch.full_like(out, float("-inf")), out)


def scale_space_nms(maps: list, radius: int = 3, levels: int = 2, threshold: float = -1e9) -> list:
    """Non-maximum suppression over position and scale (the authors' runtime).

    A pixel of level ``l`` survives if it is the maximum of its ``(2r+1)^2`` window, the
    whole window is finite (inside the valid score map), it exceeds ``threshold``, and it is
    strictly greater than the window maximum at the corresponding position (``(size - 1)``
    ratios) of each of the ``levels`` levels above and below, which must be finite; the
    first and last ``levels`` levels produce nothing.

    Shape: maps: list of ``(h_l, w_l)`` score maps (``-inf`` = invalid) -> list of
    ``(l, yx (K, 2) long, value (K,))`` per level with survivors.
    """
    k = 2 * radius + 1
    maxf = [max_filter(m[None, None], k)[0, 0] for m in maps]
    out = []
    for li in range(levels, len(maps) - levels):
        m = maps[li]
        finite = torch.isfinite(m)
        cand = (m == maxf[li]) & finite & (m > threshold)
        cand &= (-max_filter(-finite.float()[None, None], k))[0, 0] > 0
        yx = cand.nonzero()
        if yx.numel() == 0:
            continue
        v = m[yx[:, 0], yx[:, 1]]
        ok = torch.ones_like(v, dtype=torch.bool)
        for lj in range(li - levels, li + levels + 1):
            if lj != li:
                o = gather_mapped(maxf[lj], m.shape, yx[:, 1].float(), yx[:, 0].float())
                ok &= torch.isfinite(o) & (v > o)
        if bool(ok.any()):
            out.append((li, yx[ok], v[ok]))
    return out


# --------------------------------------------------------------------------- authors' descriptor
def read_theano_descriptor(path: str) -> dict:
    """The authors' released Theano descriptor (``new-CNN3-picc-iter-56k.h5``) as a state
    dict of :class:`LIFTDescriptor`.

    Conversion (checked against ``descriptor_imported.py`` and ``lasagne_tools.py`` of
    cvlab-epfl/LIFT): layer codes must be ``[1 5 4 7 1 5 4 7 1 5 4]`` (conv, tanh, L2 pool,
    subtractive norm, ...); the convolutions ``l-1/5/9-weights`` are ``(out, in, kh, kw)``
    and were applied with ``flip_filters=False`` (cross-correlation, like PyTorch), so they
    are copied unflipped; the 5x5 kernels ``l-4/8-filter`` (stored summing to 1/32, 1/64,
    Torch's per-plane division) are renormalised to sum 1 at use; ``patch-mean`` /
    ``patch-std`` (0-255 grey) become the input normalisation. L2-pool windows ``l-3/7/11-kw``
    must be 2, 3, 4.
    """
    try:
        import h5py
    except ImportError:
        raise UsageError("reading the authors' LIFT descriptor needs h5py: pip install h5py") from None
    import numpy as np

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"cannot read LIFT descriptor file {path}: {str(e).splitlines()[0]}") from None
    with f:
        def get(k: str) -> np.ndarray:
            if k not in f:
                raise WeightsError(f"{path} is not a LIFT Theano descriptor file: no '{k}'")
            return np.asarray(f[k][()])

        layers = get("layers").astype(int).ravel().tolist()
        if layers != [1, 5, 4, 7, 1, 5, 4, 7, 1, 5, 4]:
            raise WeightsError(f"{path}: unexpected layer codes {layers} (expected [1 5 4 7 1 5 4 7 1 5 4])")
        for i, k in ((3, 2), (7, 3), (11, 4)):
            if int(get(f"l-{i}-kw").ravel()[0]) != k or int(get(f"l-{i}-kh").ravel()[0]) != k:
                raise WeightsError(f"{path}: L2 pooling of layer {i} is not {k}x{k}")
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        state = {}
        for name, i in (("conv1", 1), ("conv2", 5), ("conv3", 9)):
            state[f"{name}.weight"] = t(get(f"l-{i}-weights"))
            state[f"{name}.bias"] = t(get(f"l-{i}-bias").ravel())
        for name, i in (("norm1", 4), ("norm2", 8)):
            k = t(get(f"l-{i}-filter"))
            state[f"{name}.kernel"] = k / k.sum()
        state["mean"] = t(get("patch-mean").ravel()[0])
        state["std"] = t(get("patch-std").ravel()[0])
    return state


# --------------------------------------------------------------------------- runtime
def _lift_matcher() -> MNNConfig:
    # the matcher of featmatch's sift (mutual NN + Lowe's ratio 0.8) for a like-for-like
    # comparison; the paper's metrics (eval detdesc) use plain nearest neighbours
    return MNNConfig(metric="l2", mutual=True, ratio=0.8)


@dataclass(frozen=True)
class LIFTConfig:
    """Options of the LIFT runtime pipeline (paper section 3.6, numbers of the authors' code)."""

    top_k_unlimited = 0  # class attributes (not options) read by the shared option checks
    detection_threshold_signed = True

    top_k: int = 1000  # keep the best k keypoints (by detector score); 0: all
    # NMS: the authors' runtime. SIFT's 3x3x3 neighbourhood (scales_per_octave=3, nms_radius=1,
    # scale_nms_levels=1) raises repeatability and matching score but not homography / pose
    # accuracy (docs/lift.md, "Runtime NMS")
    scales_per_octave: int = 5  # detector pyramid: 2^(1/5) between levels
    min_log2_scale: Optional[float] = None  # smallest sigma = 2^this; None: 0 if min side <= 1600 else 1
    max_log2_scale: float = 4.0  # largest sigma = 2^this (16)
    nms_radius: int = 3  # 2D NMS window (2r+1)^2
    scale_nms_levels: int = 2  # a keypoint must beat this many levels above and below
    refine: bool = True  # sub-pixel / sub-scale refinement (quadratic fit, edge test)
    edge_threshold: float = 10.0  # edge test tr^2/det < (e+1)^2/e (with refine)
    detection_threshold: float = -1e9  # minimum detector score (signed: the detector's scores can be negative)
    # ORI / DESC crops cover 12 sigma x this; None: the support the weights were trained with
    # (recorded in the weight file as ``support_scale``; 1.0, the paper's, when absent and for the
    # authors' descriptor file)
    support_scale: Optional[float] = None
    batch_size: int = 64  # patches per ORI / DESC call (small: activations stay in cache, see docs/lift.md)
    # bfloat16 autocast for the networks at inference (~1e-2 relative error, 2-4x faster
    # convolutions on CPUs with native bf16); None: on when the CPU has it in hardware
    # (AVX512-BF16 / AMX: device.cpu_native_bf16; emulated bf16 is ~2x slower than float32)
    bf16: Optional[bool] = None
    # bf16 also for the detector's score maps (off: their 8-bit mantissa moves the NMS
    # maxima and spoils the sub-pixel fit; repeatability 0.62 -> 0.57 on a held-out set, docs/lift.md)
    detector_bf16: bool = False
    # ORI / DESC weights in channels-last memory format (oneDNN's fast convolution layout):
    # float32 ORI + DESC ~1.5x faster on CPU (docs/lift.md), outputs equal to float rounding
    channels_last: bool = True
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = MAX_PIXELS_DEFAULT  # larger images are downscaled with a warning
    descriptor_weights: Optional[str] = None  # the authors' Theano descriptor .h5 (replaces DESC)
    matcher: MNNConfig = field(default_factory=_lift_matcher)  # mutual NN, Euclidean


class LIFT(Extractor):
    """LIFT extractor: multi-scale detector + NMS, then orientation and descriptor at the
    detected points. Returns ``Features`` with 128-d L2-normalised descriptors, ``scales``
    (OpenCV size = 2 sigma) and ``orientations``."""

    descriptor_dim = 128
    #: smallest image side: the detector needs >= 27 px at the first pyramid level
    min_image_side = 16

    def __init__(self, config: LIFTConfig = LIFTConfig()):
        super().__init__(config)
        c = config
        if not (is_int(c.scales_per_octave) and c.scales_per_octave >= 1):
            raise UsageError(f"scales_per_octave must be a positive integer, got {c.scales_per_octave!r}")
        if c.min_log2_scale is not None and not is_number(c.min_log2_scale):
            raise UsageError(f"min_log2_scale must be a number or None, got {c.min_log2_scale!r}")
        if not (is_int(c.nms_radius) and c.nms_radius >= 1):
            raise UsageError(f"nms_radius must be an integer >= 1, got {c.nms_radius!r}")
        if not (is_int(c.scale_nms_levels) and c.scale_nms_levels >= 0):
            raise UsageError(f"scale_nms_levels must be an integer >= 0, got {c.scale_nms_levels!r}")
        lo, hi = SUPPORT_RANGE
        if c.support_scale is not None and not (is_number(c.support_scale) and lo <= c.support_scale <= hi):
            raise UsageError(f"support_scale must be None or a number from {lo:g} to {hi:g}, got {c.support_scale!r}")
        if not (is_int(c.batch_size) and c.batch_size >= 1):
            raise UsageError(f"batch_size must be a positive integer, got {c.batch_size!r}")
        self.net = LIFTNet()
        if c.channels_last:  # load_state_dict copies into these tensors, keeping the layout
            self.net.orientation.to(memory_format=torch.channels_last)
            self.net.descriptor.to(memory_format=torch.channels_last)
        self.matcher = MutualNN(c.matcher)
        #: support scale the current ORI / DESC weights were trained with (set by load_weights)
        self.trained_support_scale = 1.0
        if c.descriptor_weights:
            self._load_authors_descriptor()

    def _load_authors_descriptor(self) -> None:
        state = read_theano_descriptor(str(self.config.descriptor_weights))
        self.net.descriptor.load_state_dict(state, strict=True)

    def remap_state_dict(self, state: dict) -> dict:
        return self.under("net.", state)

    def load_weights(self, state: dict, source: str = "state dict") -> None:
        state = dict(state)
        trained = state.pop(SUPPORT_KEY, None)
        if trained is not None:
            trained = round(float(torch.as_tensor(trained).float()), 6)  # stored as float32
            lo, hi = SUPPORT_RANGE
            if not lo <= trained <= hi:
                raise WeightsError(f"weights {source}: '{SUPPORT_KEY}' is {trained}, expected {lo:g} to {hi:g}")
        super().load_weights(state, source)
        self.trained_support_scale = trained if trained is not None else 1.0
        if self.config.descriptor_weights:  # the authors' descriptor replaces the loaded one
            self._load_authors_descriptor()
            self.trained_support_scale = 1.0  # the authors' descriptor: the paper's support

    @property
    def support_scale(self) -> float:
        """ORI / DESC crops cover ``12 sigma x`` this: config ``support_scale``, or (None) the
        support the loaded weights were trained with."""
        c = self.config.support_scale
        return float(c) if c is not None else self.trained_support_scale

    def use_bf16(self, device: torch.device) -> bool:
        """Whether inference runs the networks under bfloat16 autocast (config ``bf16``)."""
        if self.config.bf16 is not None:
            return bool(self.config.bf16)
        if device.type != "cpu":
            return False
        from ..device import cpu_native_bf16

        return cpu_native_bf16()  # emulated bf16 (AVX-512 without BF16) is ~2x slower than float32

    # -- detection ----------------------------------------------------------------------
    def log2_scales(self, h: int, w: int) -> list[float]:
        """Pyramid sigmas (log2) for an ``h`` x ``w`` image, before the size cut-off."""
        c = self.config
        a = c.min_log2_scale if c.min_log2_scale is not None else (0.0 if min(h, w) <= 1600 else 1.0)
        n = int(round((c.max_log2_scale - a) * c.scales_per_octave)) + 1
        if n < 1:
            return []
        return [a + (c.max_log2_scale - a) * i / max(n - 1, 1) for i in range(n)]

    def score_pyramid(self, g: torch.Tensor) -> list[dict]:
        """Detector score maps over the scale pyramid of one normalised grey image.

        Level with sigma ``s`` resizes the image by ``r = 23.5 / (12 s)`` (24 sigma -> the
        48-px detector input); levels stop once the short side is <= 26 px. Each map is
        padded by 12 px of ``-inf`` so that its pixels are those of the resized image.

        Shape: g ``(1, 1, H, W)`` normalised -> list of ``{"map": (h, w), "log2s", "rx", "ry"}``.
        """
        h, w = g.shape[-2:]
        out = []
        pad = (DET_FILTER - 1) // 2
        for ls in self.log2_scales(h, w):
            r = (DET_SIZE - 1) / 2 / (SUPPORT / 2 * 2.0 ** ls)
            if min(h, w) * r <= DET_FILTER + 1:
                break
            th, tw = max(int(round(h * r)), 1), max(int(round(w * r)), 1)
            x = g if (th, tw) == (h, w) else F.interpolate(g, size=(th, tw), mode="bilinear", align_corners=False,
                                                           antialias=r < 1)
            with torch.autocast(g.device.type, dtype=torch.bfloat16,
                                enabled=self.config.detector_bf16 and self.use_bf16(g.device)):
                s = self.net.detector(x, normalized=True)[0, 0].float()
            s = F.pad(s, (pad, pad, pad, pad), value=float("-inf"))
            out.append({"map": s, "log2s": ls, "rx": tw / w, "ry": th / h})
        return out

    def detect(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keypoints of one normalised grey image.

        Shape: g ``(1, 1, H, W)`` -> ``xy (N, 2)`` pixels, ``sigma (N,)``, ``score (N,)``,
        sorted by score, at most ``top_k``."""
        c = self.config
        levels = self.score_pyramid(g)
        dev = g.device
        empty = (torch.zeros(0, 2, device=dev), torch.zeros(0, device=dev), torch.zeros(0, device=dev))
        pts = []
        for li, yx, v in scale_space_nms([lv["map"] for lv in levels], c.nms_radius, c.scale_nms_levels,
                                         c.detection_threshold):
            x, y, ds, v = self._refine(levels, li, yx, v) if c.refine else (yx[:, 1].float(), yx[:, 0].float(),
                                                                            torch.zeros_like(v), v)
            lv = levels[li]
            h, w = g.shape[-2:]
            xo = ((x + 0.5) / lv["rx"] - 0.5).clamp(-0.5, w - 0.5)
            yo = ((y + 0.5) / lv["ry"] - 0.5).clamp(-0.5, h - 0.5)
            sig = 2.0 ** (lv["log2s"] + ds / c.scales_per_octave)
            pts.append(torch.stack([xo, yo, sig, v], -1))
        if not pts:
            return empty
        p = torch.cat(pts)
        order = torch.argsort(p[:, 3], descending=True)
        if c.top_k > 0:
            order = order[: c.top_k]
        p = p[order]
        return p[:, :2], p[:, 2], p[:, 3]

    def _refine(self, levels: list, li: int, yx: torch.Tensor, v0: torch.Tensor):
        """Quadratic fit in (x, y, scale) (SIFT-style): one Newton step from finite
        differences on this level and the next/previous ones; rejects non-finite fits,
        edge-like points (tr^2/det test) and offsets >= 1.5 in any coordinate.

        The neighbouring levels have other sizes: their values at this level's pixel positions
        are interpolated bilinearly (featmatch's; the nearest pixel, as the scale NMS uses, gave
        worse fits: docs/lift.md, "Bilinear scale neighbours")."""
        x, y = yx[:, 1].float(), yx[:, 0].float()
        shape = levels[li]["map"].shape
        has_prev, has_next = li > 0, li + 1 < len(levels)

        memo: dict = {}

        def val(lj: int, dx: float, dy: float) -> torch.Tensor:
            if (lj, dx, dy) not in memo:
                look = gather_mapped if lj == li else sample_mapped
                memo[lj, dx, dy] = look(levels[lj]["map"], shape, x + dx, y + dy)
            return memo[lj, dx, dy]

        def lev(d: int) -> int:
            return li + d if (d < 0 and has_prev) or (d > 0 and has_next) else li

        up, dn = lev(1), lev(-1)
        c_ = val(li, 0, 0)
        gx = (val(li, 1, 0) - val(li, -1, 0)) / 2
        gy = (val(li, 0, 1) - val(li, 0, -1)) / 2
        gs = (val(up, 0, 0) - val(dn, 0, 0)) / 2
        dxx = val(li, 1, 0) + val(li, -1, 0) - 2 * c_
        dyy = val(li, 0, 1) + val(li, 0, -1) - 2 * c_
        dss = val(up, 0, 0) + val(dn, 0, 0) - 2 * c_
        dxy = (val(li, 1, 1) - val(li, -1, 1) - val(li, 1, -1) + val(li, -1, -1)) / 4
        dxs = (val(up, 1, 0) - val(up, -1, 0) - val(dn, 1, 0) + val(dn, -1, 0)) / 4
        dys = (val(up, 0, 1) - val(up, 0, -1) - val(dn, 0, 1) + val(dn, 0, -1)) / 4
        Hm = torch.stack([torch.stack([dxx, dxy, dxs], -1), torch.stack([dxy, dyy, dys], -1),
                          torch.stack([dxs, dys, dss], -1)], -2)
        g = torch.stack([gx, gy, gs], -1)
        finite = torch.isfinite(Hm).flatten(1).all(1) & torch.isfinite(g).all(1)
        Hs = torch.where(finite[:, None, None], Hm, -torch.eye(3, device=Hm.device, dtype=Hm.dtype).expand_as(Hm))
        det3 = torch.linalg.det(Hs)
        ok = finite & (det3.abs() > 1e-12)
        Hs = torch.where(ok[:, None, None], Hs, -torch.eye(3, device=Hm.device, dtype=Hm.dtype).expand_as(Hm))
        off = -torch.linalg.solve(Hs, torch.where(ok[:, None], g, torch.zeros_like(g))[..., None])[..., 0]
        tr, det = dxx + dyy, dxx * dyy - dxy * dxy
        e = self.config.edge_threshold
        ok &= (det > 0) & (tr * tr < det * (e + 1) ** 2 / e)
        ok &= (off.abs() < 1.5).all(1) & torch.isfinite(off).all(1)
        if not (has_prev and has_next):
            off[:, 2] = 0
        return x[ok] + off[ok, 0], y[ok] + off[ok, 1], off[ok, 2], v0[ok]

    # -- orientation and description -----------------------------------------------------
    @staticmethod
    def image_pyramid(g: torch.Tensor, levels: int) -> list[torch.Tensor]:
        """Halving pyramid (2x2 average) for alias-free patch sampling.

        Shape: g ``(1, 1, H, W)`` -> list of ``(1, 1, H / 2^o, W / 2^o)``."""
        pyr = [g]
        while len(pyr) < levels and min(pyr[-1].shape[-2:]) >= 2:
            pyr.append(F.avg_pool2d(pyr[-1], 2))
        return pyr

    @staticmethod
    def sample_patches(pyr: list[torch.Tensor], xy: torch.Tensor, sigma: torch.Tensor,
                       angle: Optional[torch.Tensor] = None, size: int = CROP_SIZE) -> torch.Tensor:
        """Crops of ``size`` pixels around keypoints, as the training crops: sample spacing
        ``24 sigma / 128`` pixels, half-width 31.75 samples (12 sigma in all), axes rotated by
        ``angle``; taken from the pyramid octave whose pixel is at most the spacing.

        Shape: xy ``(N, 2)``, sigma ``(N,)``, angle ``(N,)`` -> ``(N, 1, size, size)``.
        """
        n = xy.shape[0]
        dev, dt = xy.device, pyr[0].dtype
        # sample k of the crop sits at CROP_SCALE * (2k/(size-1) - 1) of P's half width
        u = torch.linspace(-1, 1, size, device=dev) * CROP_SCALE * (PATCH_SIZE - 1) / 2 * (SUPPORT / PATCH_SIZE)
        gy, gx = torch.meshgrid(u, u, indexing="ij")  # offsets in units of sigma
        if angle is None:
            c = torch.ones(n, device=dev)
            s = torch.zeros(n, device=dev)
        else:
            c, s = torch.cos(angle), torch.sin(angle)
        ox = (c[:, None, None] * gx - s[:, None, None] * gy) * sigma[:, None, None]
        oy = (s[:, None, None] * gx + c[:, None, None] * gy) * sigma[:, None, None]
        out = torch.empty(n, 1, size, size, device=dev, dtype=dt)
        spacing = sigma * SUPPORT / PATCH_SIZE
        octave = torch.floor(torch.log2(spacing.clamp_min(1.0))).long().clamp(0, len(pyr) - 1)
        for o in octave.unique().tolist():
            idx = (octave == o).nonzero()[:, 0]
            img = pyr[o]
            h, w = img.shape[-2:]
            f = 2.0 ** o
            px = ((xy[idx, 0, None, None] + ox[idx]) + 0.5) / f - 0.5
            py = ((xy[idx, 1, None, None] + oy[idx]) + 0.5) / f - 0.5
            grid = torch.stack([px / max(w - 1, 1) * 2 - 1, py / max(h - 1, 1) * 2 - 1], -1)
            smp = F.grid_sample(img, grid.reshape(1, -1, size, 2).to(dt), mode="bilinear", padding_mode="border",
                                align_corners=True)
            out[idx] = smp.reshape(len(idx), size, size)[:, None]
        return out

    def describe(self, g: torch.Tensor, xy: torch.Tensor, sigma: torch.Tensor,
                 angle: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Orientation (ORI, unless ``angle`` is given) and descriptor (DESC) at keypoints.

        The crops cover ``12 sigma x`` :attr:`support_scale`; ``sigma`` is the keypoint's.

        Shape: g ``(1, 1, H, W)`` grey [0, 1]; xy ``(N, 2)``; sigma ``(N,)`` ->
        angles ``(N,)``, raw descriptors ``(N, 128)``.
        """
        n = xy.shape[0]
        if n == 0:
            return torch.zeros(0, device=g.device), torch.zeros(0, 128, device=g.device)
        sigma = sigma * self.support_scale  # crops of 12 sigma x support_scale
        octaves = int(math.floor(math.log2(max(float(sigma.detach().max()) * SUPPORT / PATCH_SIZE, 1.0)))) + 1
        pyr = self.image_pyramid(g, octaves)
        bs = self.config.batch_size
        angles, descs = [], []
        with torch.autocast(g.device.type, dtype=torch.bfloat16, enabled=self.use_bf16(g.device)):
            for i in range(0, n, bs):
                sl = slice(i, i + bs)
                if angle is None:
                    a = self.net.orientation(self.sample_patches(pyr, xy[sl], sigma[sl])).float()
                else:
                    a = angle[sl].float()
                d = self.net.descriptor(self.sample_patches(pyr, xy[sl], sigma[sl], a)).float()
                angles.append(a)
                descs.append(d)
        return torch.cat(angles), torch.cat(descs)

    def _extract(self, x: torch.Tensor) -> Features:
        grey = to_grey(x).float()
        b, _, h, w = grey.shape
        items = []
        for i in range(b):
            g = grey[i:i + 1]
            xy, sigma, score = self.detect(self.net.detector.normalize(g))
            if xy.shape[0] == 0:
                log.warning("LIFT found no keypoints in image %d (%dx%d)", i, w, h)
            ang, desc = self.describe(g, xy, sigma)
            desc = F.normalize(desc, dim=-1)
            items.append(Features(xy, score, desc, torch.tensor([w, h]), None, 2 * sigma, ang))
        return Features.stack(items) if b > 1 else _batched(items[0])


def _batched(f: Features) -> Features:
    return Features(f.keypoints[None], f.keypoint_scores[None], f.descriptors[None], f.image_size[None],
                    torch.ones(1, f.keypoints.shape[0], dtype=torch.bool, device=f.keypoints.device),
                    f.scales[None], f.orientations[None])


# --------------------------------------------------------------------------- registry
_PAPER = "Yi, Trulls, Lepetit, Fua, LIFT: Learned Invariant Feature Transform, ECCV 2016"

#: featmatch's trained ``lift`` checkpoint, shipped inside the package (float16)
LIFT_WEIGHTS = WeightSpec(
    filename="lift.pt",
    sha256="106ffc7637ee1fddfdd74d0f50164ba7edb91bd6b4f50473d235b7ce62205aed",
    installed=(("featmatch", "weights/lift.pt"),),
    license="Apache-2.0",
)

register(
    "lift",
    card=ModelCard(
        name="lift", family="lift", kind="sparse",
        summary="LIFT: learned detector (scale-space pyramid + NMS), orientation and 128-d descriptor; MNN (L2)",
        paper=_PAPER, code_license="Apache-2.0", weights=LIFT_WEIGHTS, weights_origin="featmatch",
        input="RGB or grey float [0, 1], any size (converted to grey)",
        notes=("trained by featmatch on CPU (four sessions, ~190 min of one thread in all) on quadruplets from "
               "synthetic warps of 2,245 photos: DESC 2,450 x 32-64 pairs with the paper's mined pairs, 1,000 x 128 "
               "with in-batch hardest negatives (--negatives batch), then 2,000 x 128 at a wider support "
               "(--support-scale 1.4, 96,000 quadruplets); ORI 400 + 1,550 x 32, then 1,000 x 32 at support 1.4 "
               "(orientation error 7.4 deg); DET = featmatch's DoG warm start (the detector stage's training did "
               "not beat it on validation); ORI / DESC crops of 12 x 1.4 sigma (recorded in the file); MNN + ratio "
               "0.8 like sift. Fourth checkpoint, 2026-12-04 (Zen 5, bf16 ORI / DESC): homography MHA@3 40.0 "
               "(SIFT 42.9), pose AUC@10 79.0 (float32 77.5; SIFT 80.7), matching score 0.158 (SIFT 0.180): docs/lift.md. "
               "descriptor_weights=PATH loads the authors' Theano descriptor"),
        missing_weights="featmatch's LIFT checkpoint (weights/lift.pt) is not installed; pass weights=PATH "
                        "(a `featmatch train lift` run's model.pt) or pretrained=False"),
    config_cls=LIFTConfig, build=LIFT,
)
