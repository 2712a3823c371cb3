"""DRC-Net (Li et al., NeurIPS 2020): dual-resolution correspondence networks.

:class:`DRCNet` holds the network with the reference's module names
(``FeatureExtraction``, ``NeighConsensus``), so the released checkpoint
(``dualrc-net.pth.tar``, keys prefixed ``module.``) loads strictly after the mapping in
:meth:`DRCNet.remap_state_dict`. Pipeline (reference ``lib/model_v2.py`` + ``lib/tools.py``):

1. fine (1/4) and coarse (1/16) maps from :class:`~.backbone.FeatureExtraction`, each
   L2-normalised over channels (epsilon 1e-6 inside the root);
2. full 4D correlation of the coarse maps -> soft mutual filter -> symmetric
   neighbourhood consensus (Conv4d 3x3x3x3, channels [16, 1], ReLU) -> soft mutual filter;
3. matches (:func:`extract_matches`): queries = the 16 fine cells of each of the top
   ``query_fraction`` coarse cells of image A (ranked by their best filtered score); for a
   query the coarse scores, sampled bilinearly at its position and normalised to sum 1, are
   upsampled (nearest) to B's fine grid and multiplied by the fine cosine similarities; the
   argmax is the match. The same from B back to A; only exact round trips are kept, scored
   by the sum of both products, best ``num_matches`` first. The fine products are computed
   for ``chunk`` queries at a time (never a full fine-resolution 4D tensor).

Coordinates: the reference's image coordinate of fine cell ``i`` is ``4 i`` (sampling) and
``4 (i + 0.5)`` (output, pixel-corner convention); featmatch returns ``4 i + 1.5``, the
centre of the cell's 4x4 pixel block in featmatch's pixel-centre convention.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ...errors import UsageError, WeightsError
from ...ops.conv4d import from_reference_layout
from ...types import Matches, check_shape
from ..base import DenseMatcher, is_int
from .backbone import BACKBONES, FPN_VARIANTS, FeatureExtraction, remap_torchvision_resnet
from .ncons import NeighConsensus, correlation_4d, l2_normalize, mutual_matching

log = logging.getLogger(__name__)

COARSE_STRIDE = 16  # image pixels per coarse cell
FINE_STRIDE = 4  # image pixels per fine cell
RATIO = COARSE_STRIDE // FINE_STRIDE  # fine cells per coarse cell (per axis)
#: state-dict prefix of the frozen backbone (the light presets ship everything else: the head)
BACKBONE_PREFIX = "FeatureExtraction.backbone."


@dataclass(frozen=True)
class DRCNetConfig:
    """Options of :class:`DRCNet`. Fields marked (net) change the parameters."""

    backbone: str = "resnet101"  # (net) frozen backbone: resnet101 | xfeat | aliked-t16 | aliked-n16
    fpn: str = "1024"  # (net) "1024" (reference default: coarse = raw last stage) or "two_heads"
    feature_dim: int = 256  # (net) channels of both maps with fpn="two_heads" (256 = reference variant)
    ncons_kernel_sizes: tuple[int, ...] = (3, 3)  # (net) Conv4d kernel size per NC layer
    ncons_channels: tuple[int, ...] = (16, 1)  # (net) output channels per NC layer (last must be 1)
    num_matches: int = 2000  # keep the best this many cycle-consistent matches
    query_fraction: float = 0.5  # share of image-A coarse cells whose fine cells are queried
    chunk: int = 1000  # queries per chunk of the fine products (memory ~ chunk x fine cells of B)
    resize: Optional[int] = None  # long side before matching (None: as given; the reference tests use 1600)
    max_pixels: int = 1024 * 768  # larger images (after resize) are downscaled with a warning
    subcell: bool = False  # featmatch's parabolic sub-cell refinement of B's match (not in the paper)
    backbone_weights: Optional[str] = None  # torchvision ResNet-101 .pth loaded strictly at build (resnet101)


def _validate(c: DRCNetConfig) -> None:
    if c.backbone not in BACKBONES:
        raise UsageError(f"backbone must be one of {', '.join(BACKBONES)}; got '{c.backbone}'")
    if c.fpn not in FPN_VARIANTS:
        raise UsageError(f"fpn must be one of {', '.join(FPN_VARIANTS)}; got '{c.fpn}'")
    if c.fpn == "1024" and c.backbone != "resnet101":
        raise UsageError("fpn='1024' uses the raw ResNet layer3 as coarse map; use fpn='two_heads' with "
                         f"backbone '{c.backbone}'")
    if not (is_int(c.feature_dim) and c.feature_dim >= 1):
        raise UsageError(f"feature_dim must be a positive integer, got {c.feature_dim!r}")
    ks, ch = tuple(c.ncons_kernel_sizes), tuple(c.ncons_channels)
    if len(ks) != len(ch) or not ch or ch[-1] != 1 or any(not is_int(k) or k < 1 or k % 2 == 0 for k in ks) \
            or any(not is_int(v) or v < 1 for v in ch):
        raise UsageError(f"ncons_kernel_sizes {ks} must be odd sizes and ncons_channels {ch} positive, "
                         "of the same length, ending with 1")
    if not (is_int(c.num_matches) and c.num_matches >= 0):
        raise UsageError(f"num_matches must be an integer >= 0, got {c.num_matches!r}")
    if not (isinstance(c.query_fraction, (int, float)) and 0 < c.query_fraction <= 1):
        raise UsageError(f"query_fraction must be in (0, 1], got {c.query_fraction!r}")
    if not (is_int(c.chunk) and c.chunk >= 1):
        raise UsageError(f"chunk must be a positive integer, got {c.chunk!r}")
    if c.backbone_weights is not None and c.backbone != "resnet101":
        raise UsageError("backbone_weights is for the resnet101 backbone (torchvision's ResNet-101 file)")


# --------------------------------------------------------------------------- match extraction
def prior_rows(corr: torch.Tensor, source_to_target: bool = True) -> torch.Tensor:
    """The filtered coarse scores as one row per coarse cell of the query image: a view of
    ``corr`` for A -> B, a transposed copy for B -> A (made once per direction, see
    :func:`coarse_prior`).

    Shape: ``(B, 1, hA, wA, hB, wB)`` -> ``(B, hA * wA, hB * wB)`` (A -> B) or
    ``(B, hB * wB, hA * wA)`` (B -> A), contiguous.
    """
    b, _, ha, wa, hb, wb = corr.shape
    rows = corr.reshape(b, ha * wa, hb * wb)
    return rows.contiguous() if source_to_target else rows.transpose(1, 2).contiguous()


def coarse_corners(points: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The four coarse cells around ``points / 16`` on an ``h x w`` grid (floor/ceil clamped to
    the grid, no half-cell shift) and their bilinear weights, in the order (y_lo, x_lo),
    (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi).

    Shape: points ``(B, N, 2)`` -> flat cell indices ``(B, N, 4)`` (long), weights ``(B, N, 4)``.
    """
    kp = points / COARSE_STRIDE
    hi_lim = kp.new_tensor([w - 1, h - 1])
    lo = torch.clamp_min(torch.floor(kp), 0)
    hi = torch.minimum(torch.ceil(kp), hi_lim)
    lo = torch.minimum(lo, hi_lim)  # only matters for points outside the image
    wu = kp - lo
    wl = 1 - wu
    ix = torch.stack([lo[..., 0], hi[..., 0], lo[..., 0], hi[..., 0]], -1).long()
    iy = torch.stack([lo[..., 1], lo[..., 1], hi[..., 1], hi[..., 1]], -1).long()
    cx = torch.stack([wl[..., 0], wu[..., 0], wl[..., 0], wu[..., 0]], -1)
    cy = torch.stack([wl[..., 1], wl[..., 1], wu[..., 1], wu[..., 1]], -1)
    return iy * w + ix, cx * cy


def coarse_prior(corr: torch.Tensor, points: torch.Tensor, source_to_target: bool = True,
                 rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Filtered coarse scores of query points over the other image's coarse cells, sampled
    bilinearly at ``points / 16`` (floor/ceil cells clamped to the grid, no half-cell shift)
    and divided by their sum (+1e-15). As the reference, a query with both coordinates
    <= 1e-10 gets an all-zero prior (and one with one such coordinate is halved before the
    normalisation).

    The four corner cells (:func:`coarse_corners`) have their rows of scores copied whole
    (``index_select`` on :func:`prior_rows`, any batch size) rather than gathered element by
    element from the query image's grid: the same products and sums in the same order
    (bit-identical to the reference's ``gather``, tested), ~1.5x faster per call at 1024x768
    (whole match extraction ~5 %).

    Args:
        corr: filtered 4D scores.
        points: query positions in the reference's image coordinates (fine cell ``i`` at
            ``4 i``) of image A (``source_to_target``) or B.
        rows: ``prior_rows(corr, source_to_target)``, to reuse across chunks of queries.

    Shape: corr ``(B, 1, hA, wA, hB, wB)``, points ``(B, N, 2)`` -> ``(B, N, h, w)``, the
    other image's coarse grid.
    """
    b, _, ha, wa, hb, wb = corr.shape
    if source_to_target:
        h, w, ho, wo = ha, wa, hb, wb
    else:
        h, w, ho, wo = hb, wb, ha, wa
    if rows is None:
        rows = prior_rows(corr, source_to_target)
    c = rows.shape[2]
    n = points.shape[1]
    idx, coeff = coarse_corners(points, h, w)
    flat = idx + (torch.arange(b, device=idx.device) * rows.shape[1])[:, None, None]  # rows of all batch items
    corners = rows.reshape(b * rows.shape[1], c).index_select(0, flat.reshape(-1))
    prior = (corners.view(b, n, 4, c) * coeff[..., None]).sum(dim=2)  # (B, N, L)
    # the rest in the reference's (B, L, N) layout, so the normalising sum adds in its order
    prior = prior.transpose(1, 2).contiguous()
    valid = (points / COARSE_STRIDE > 1e-10).to(prior.dtype).mean(dim=2)  # (B, N)
    prior = (prior * valid[:, None, :]).permute(0, 2, 1)
    prior = prior / (prior.sum(dim=2, keepdim=True) + 1e-15)
    return prior.reshape(b, n, ho, wo)


def query_descriptors(fine_q: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Fine descriptors of query points at ``round(points / 4)``, clamped to the map.

    Shape: fine_q ``(B, C, H, W)``, points ``(B, N, 2)`` (reference image coordinates) -> ``(B, C, N)``.
    """
    b, c, hq, wq = fine_q.shape
    p = torch.round(points / FINE_STRIDE).long()
    x = p[..., 0].clamp_max(wq - 1)
    y = p[..., 1].clamp_max(hq - 1)
    idx = (y * wq + x).unsqueeze(1).expand(-1, c, -1)
    return torch.gather(fine_q.reshape(b, c, hq * wq), 2, idx)


def fine_scores(prior: torch.Tensor, fine_q: torch.Tensor, fine_t: torch.Tensor, points: torch.Tensor,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fine score maps of query points: (coarse prior, nearest-upsampled to the target's fine
    grid) x (cosine of the query's fine descriptor, at ``round(points / 4)`` clamped to the
    map, with every target fine descriptor).

    ``out`` (inference only, no autograd): a contiguous ``(B, >= N, Ht * Wt)`` buffer reused
    across chunks; the scores are written into its first N rows in place, the same values.
    At 1024x768 one chunk's map is ~200 MB: allocating it anew per chunk (twice) cost more
    in page faults than the products themselves.

    Shape: prior ``(B, N, h, w)``, fine_q ``(B, C, Hq, Wq)``, fine_t ``(B, C, Ht, Wt)``,
    points ``(B, N, 2)`` -> ``(B, N, Ht * Wt)``.
    """
    b, c = fine_q.shape[:2]
    ht, wt = fine_t.shape[-2:]
    n = points.shape[1]
    desc = query_descriptors(fine_q, points)  # (B, C, N)
    h, w = prior.shape[-2:]
    nearest = ht == RATIO * h and wt == RATIO * w  # nearest upsampling by broadcasting (no copy)
    if out is not None and torch.is_grad_enabled() and (desc.requires_grad or fine_t.requires_grad
                                                         or prior.requires_grad):
        raise ValueError("fine_scores: out= is for inference (in-place products); call it without out")
    cos = torch.bmm(desc.transpose(1, 2), fine_t.reshape(b, c, ht * wt),
                    out=None if out is None else out[:, :n])  # (B, N, Ht*Wt)
    if nearest:
        maps, factor = cos.view(b, n, h, RATIO, w, RATIO), prior.reshape(b, n, h, 1, w, 1)
    else:
        maps, factor = cos, F.interpolate(prior, size=(ht, wt), mode="nearest").reshape(b, n, ht * wt)
    if out is not None:
        maps.mul_(factor)
        return cos
    return (maps * factor).reshape(b, n, ht * wt)


def best_fine(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of fine score maps -> positions in the reference's image coordinates
    (``4 * fine index``) and scores. Shape: ``(B, N, H*W)`` -> ``(B, N, 2)``, ``(B, N)``."""
    s, idx = torch.max(scores, dim=2)
    y = torch.div(idx, width, rounding_mode="floor")
    x = idx - y * width
    return torch.stack([x, y], -1).to(scores.dtype) * FINE_STRIDE, s


def parabola_offsets(lo: torch.Tensor, mid: torch.Tensor, hi: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Peak offset of the parabola through ``(-1, lo), (0, mid), (1, hi)``:
    ``(lo - hi) / (2 (lo - 2 mid + hi))`` clamped to +/- 0.5; 0 where ``inside`` is False or
    the three values are not a maximum (curvature >= 0)."""
    curv = lo - 2 * mid + hi
    ok = inside & (curv < 0)
    d = torch.where(ok, (lo - hi) / (2 * torch.where(ok, curv, -torch.ones_like(curv))), torch.zeros_like(curv))
    return d.clamp(-0.5, 0.5)


def subcell_offsets(desc: torch.Tensor, fine_t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """featmatch's sub-cell refinement (not in the paper): per axis, a parabola through the
    correlation (dot product) of the query's fine descriptor with B's fine descriptors at
    the matched cell and its two neighbours gives the peak's offset in fine cells
    (:func:`parabola_offsets`; none at the map border). It fits the raw fine correlation, not
    the fine scores: those carry the nearest-upsampled coarse prior, which jumps at coarse
    cell borders (an earlier version fitted the scores; measured worse, docs/drcnet.md).

    Shape: desc ``(B, C, N)`` (:func:`query_descriptors`), fine_t ``(B, C, H, W)``, pos
    ``(B, N, 2)`` fine cell indices of the matches in B -> ``(B, N, 2)`` offsets ``(dx, dy)``.
    """
    b, c, h, w = fine_t.shape
    flat = fine_t.reshape(b, c, h * w)
    x, y = pos[..., 0].long(), pos[..., 1].long()

    def corr_at(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(1).expand(-1, c, -1)
        return (torch.gather(flat, 2, idx) * desc).sum(1)  # (B, N)

    mid = corr_at(x, y)
    offs = [parabola_offsets(corr_at(x - 1, y), mid, corr_at(x + 1, y), (x > 0) & (x < w - 1)),
            parabola_offsets(corr_at(x, y - 1), mid, corr_at(x, y + 1), (y > 0) & (y < h - 1))]
    return torch.stack(offs, -1)


def query_points(corr: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Queries of image A: the fine cells of the best ``floor(fraction * hA * wA)`` coarse
    cells (ranked by their maximum over B), ordered as the reference (4x4 offset major,
    cell rank minor), in the reference's image coordinates (``4 * fine index``).

    Shape: corr ``(1, 1, hA, wA, hB, wB)`` -> ``(1, 16 * k, 2)``.
    """
    _, _, ha, wa, _, _ = corr.shape
    k = int(math.floor(ha * wa * fraction))
    best = corr.reshape(1, ha * wa, -1).max(dim=2)[0]
    _, order = torch.sort(best, dim=1, descending=True)
    order = order[:, :k]
    y = torch.div(order, wa, rounding_mode="floor").to(corr.dtype) * RATIO
    x = (order - torch.div(order, wa, rounding_mode="floor") * wa).to(corr.dtype) * RATIO
    xs, ys = [], []
    for i in range(RATIO):
        for j in range(RATIO):
            xs.append(x + j)
            ys.append(y + i)
    return torch.stack([torch.cat(xs, 1), torch.cat(ys, 1)], -1) * FINE_STRIDE


def find_matches(corr: torch.Tensor, fine_q: torch.Tensor, fine_t: torch.Tensor, points: torch.Tensor,
                 source_to_target: bool, chunk: int, subcell: bool = False):
    """Best fine match of every query, ``chunk`` queries at a time.

    Shape: points ``(1, N, 2)`` -> matches ``(1, N, 2)`` (reference image coordinates), scores
    ``(1, N)`` and, with ``subcell``, the sub-cell offsets ``(1, N, 2)`` (fine cells, see
    :func:`subcell_offsets`; None without).
    """
    wt = fine_t.shape[-1]
    ms, ss, os_ = [], [], []
    buf = None
    if not torch.is_grad_enabled() and points.shape[1]:  # one score buffer for all chunks (see fine_scores)
        buf = fine_t.new_empty(points.shape[0], min(chunk, points.shape[1]), fine_t.shape[-2] * wt)
    rows = prior_rows(corr, source_to_target) if points.shape[1] else None
    for k in range(0, points.shape[1], chunk):
        q = points[:, k:k + chunk]
        prior = coarse_prior(corr, q, source_to_target, rows)
        sc = fine_scores(prior, fine_q, fine_t, q, out=buf)
        m, s = best_fine(sc, wt)
        ms.append(m)
        ss.append(s)
        if subcell:
            os_.append(subcell_offsets(query_descriptors(fine_q, q), fine_t, m / FINE_STRIDE))
    if not ms:
        empty = points.new_zeros(1, 0, 2)
        return empty, points.new_zeros(1, 0), (empty if subcell else None)
    return torch.cat(ms, 1), torch.cat(ss, 1), (torch.cat(os_, 1) if subcell else None)


def extract_matches(corr: torch.Tensor, fine_a: torch.Tensor, fine_b: torch.Tensor, num_matches: int = 2000,
                    query_fraction: float = 0.5, chunk: int = 1000,
                    subcell: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's match extraction (``ImgMatcher``) for one pair.

    Returns:
        fine cell indices ``(K, 2)`` of A and of B as ``(x, y)`` floats, and scores ``(K,)``
        (s_AB + s_BA), best first. Pixel position in featmatch's convention: ``4 i + 1.5``.
        With ``subcell`` (featmatch's option, not the reference's) B's indices carry the
        sub-cell offsets of the A -> B fine correlation (:func:`subcell_offsets`); the cycle
        check and the scores are the reference's.

    Shape: corr ``(1, 1, hA, wA, hB, wB)``, fine maps ``(1, C, 4 hA, 4 wA)`` / ``(1, C, 4 hB, 4 wB)``.
    """
    q = query_points(corr, query_fraction)
    m, s1, off = find_matches(corr, fine_a, fine_b, q, True, chunk, subcell)
    back, s2, _ = find_matches(corr, fine_b, fine_a, m, False, chunk)
    keep = (q == back).all(dim=2)[0]
    qa, mb = q[0][keep] / FINE_STRIDE, m[0][keep] / FINE_STRIDE
    if off is not None:
        mb = mb + off[0][keep]
    scores = s2[0][keep] + s1[0][keep]
    scores, order = torch.sort(scores, descending=True)
    order = order[:num_matches]
    return qa[order], mb[order], scores[:num_matches]


# --------------------------------------------------------------------------- model
class DRCNet(DenseMatcher):
    """DRC-Net dense matcher (see the module docstring).

    ``forward`` (training, analysis) returns the filtered coarse 4D scores and the
    L2-normalised fine maps; ``match`` (inherited) runs the reference's match extraction.
    """

    min_image_side = COARSE_STRIDE

    def __init__(self, config: DRCNetConfig = DRCNetConfig()):
        _validate(config)
        super().__init__(config)
        self.FeatureExtraction = FeatureExtraction(config.backbone, config.fpn, config.feature_dim)
        self.NeighConsensus = NeighConsensus(config.ncons_kernel_sizes, config.ncons_channels)
        self.backbone_sha256: Optional[str] = None
        if config.backbone_weights is not None:
            self.load_backbone_weights(config.backbone_weights)

    # -- weights -------------------------------------------------------------------------
    def load_backbone_weights(self, path: str) -> None:
        """Load torchvision's ImageNet ResNet-101 file (``resnet101-*.pth``) into the frozen
        backbone, strictly (layer4 and fc are dropped; every other key must fit). Never
        downloads; reports the file's sha256 (a logged warning, so the CLI prints it)."""
        from pathlib import Path

        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(f"backbone_weights: file not found: {p} (torchvision's resnet101 .pth)")
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        from ... import hub

        state = remap_torchvision_resnet(hub.read_state_dict(p))
        own = self.FeatureExtraction.extractor_list.state_dict()
        state = {k[len("extractor_list."):]: v for k, v in state.items() if k.startswith("extractor_list.")} \
            if all(k.startswith("extractor_list.") for k in state) else state
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise WeightsError(f"backbone_weights {p} is not torchvision's ResNet-101: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise WeightsError(f"backbone_weights {p}: '{k}' has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        self.FeatureExtraction.extractor_list.load_state_dict(state, strict=True)
        self.backbone_sha256 = digest
        # a warning so that the CLI (WARNING level) shows which file the backbone came from
        log.warning("DRC-Net backbone: torchvision ResNet-101 weights %s (sha256 %s)", p, digest)

    def remap_state_dict(self, state: dict) -> dict:
        """Reference checkpoint -> this module: strip ``module.`` (DataParallel); Conv4d
        weights from the reference's pre-permuted ``(k, C_out, C_in, k, k, k)`` layout to
        ``(C_out, C_in, k, k, k, k)``. All other names are the reference's. Checkpoints of
        the light presets that hold only the trained head + NC get the frozen backbone from
        its official weights (hub, sha256-checked)."""
        official = any(k.startswith("module.") for k in state)
        out = {}
        own = self.state_dict()
        for k, v in state.items():
            nk = k[len("module."):] if k.startswith("module.") else k
            if nk.startswith("NeighConsensus.conv.") and nk.endswith(".weight") and v.dim() == 6:
                if official or (nk in own and tuple(v.shape) != tuple(own[nk].shape)
                                and tuple(from_reference_layout(v).shape) == tuple(own[nk].shape)):
                    v = from_reference_layout(v)
            out[nk] = v
        bb = BACKBONE_PREFIX
        if self.config.backbone != "resnet101" and not any(k.startswith(bb) for k in out):
            out.update({bb + k: v for k, v in official_backbone_state(self.config.backbone).items()})
        return out

    def train(self, mode: bool = True):
        """As nn.Module.train, but the frozen backbone always stays in eval mode (BatchNorm
        running statistics), as in the reference."""
        super().train(mode)
        for m in self.FeatureExtraction.frozen_modules():
            m.eval()
        return self

    # -- network -------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised fine and coarse maps.

        Shape: ``(B, C, H, W)`` (H, W multiples of 16) -> ``(B, D, H/4, W/4)``, ``(B, D', H/16, W/16)``.
        """
        fine, coarse = self.FeatureExtraction(x)
        return l2_normalize(fine), l2_normalize(coarse)

    def filter(self, coarse0: torch.Tensor, coarse1: torch.Tensor) -> torch.Tensor:
        """Correlation -> mutual filter -> NC -> mutual filter. Shape -> ``(B, 1, hA, wA, hB, wB)``."""
        corr = correlation_4d(coarse0, coarse1)
        return mutual_matching(self.NeighConsensus(mutual_matching(corr)))

    def forward(self, image0: torch.Tensor, image1: torch.Tensor) -> dict:
        """Shape: images ``(B, C, H, W)``, H and W multiples of 16 -> dict ``corr``
        ``(B, 1, H0/16, W0/16, H1/16, W1/16)``, ``fine0`` ``(B, D, H0/4, W0/4)``, ``fine1``."""
        for name, img in (("image0", image0), ("image1", image1)):
            check_shape(name, img, (-1, -1, -1, -1))
            if img.shape[-1] % COARSE_STRIDE or img.shape[-2] % COARSE_STRIDE:
                raise UsageError(f"{name}: H and W must be multiples of 16 for forward(), got {tuple(img.shape[-2:])}")
        if image0.shape[0] != image1.shape[0]:
            raise UsageError(f"image0 and image1 batches differ: {image0.shape[0]} vs {image1.shape[0]}")
        if image0.shape == image1.shape:
            f, c = self.features(torch.cat([image0, image1], 0))
            n = image0.shape[0]
            f0, f1, c0, c1 = f[:n], f[n:], c[:n], c[n:]
        else:
            f0, c0 = self.features(image0)
            f1, c1 = self.features(image1)
        return {"corr": self.filter(c0, c1), "fine0": f0, "fine1": f1}

    # -- inference -----------------------------------------------------------------------
    def _match(self, x0: torch.Tensor, x1: torch.Tensor) -> list[Matches]:
        sizes, xs = [], []
        for x in (x0, x1):
            h, w = x.shape[-2:]
            th, tw = h // COARSE_STRIDE * COARSE_STRIDE, w // COARSE_STRIDE * COARSE_STRIDE
            xs.append(F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False) if (th, tw) != (h, w) else x)
            sizes.append((w / tw, h / th))
        out = self.forward(xs[0], xs[1])
        c = self.config
        res = []
        for b in range(x0.shape[0]):
            fa, fb, sc = extract_matches(out["corr"][b:b + 1].float(), out["fine0"][b:b + 1].float(),
                                         out["fine1"][b:b + 1].float(), c.num_matches, c.query_fraction, c.chunk,
                                         c.subcell)
            p0 = fa * FINE_STRIDE + (FINE_STRIDE / 2 - 0.5)
            p1 = fb * FINE_STRIDE + (FINE_STRIDE / 2 - 0.5)
            if sizes[0] != (1.0, 1.0):
                p0 = (p0 + 0.5) * p0.new_tensor(sizes[0]) - 0.5
            if sizes[1] != (1.0, 1.0):
                p1 = (p1 + 0.5) * p1.new_tensor(sizes[1]) - 0.5
            res.append(Matches(p0, p1, sc))
        return res


_BACKBONE_MODEL = {"xfeat": "xfeat", "aliked-t16": "aliked.t16", "aliked-n16": "aliked.n16"}


def official_backbone_state(backbone: str) -> dict:
    """State dict (``net.*`` keys) of the official XFeat / ALIKED network for a light
    backbone, from the featmatch cache (sha256-checked by the hub; never downloaded here)."""
    from ... import hub

    name = _BACKBONE_MODEL[backbone]
    if backbone == "xfeat":
        from ..xfeat import remap_official

        from ...registry import weights_path

        state = remap_official(hub.read_state_dict(weights_path(name)))
    else:  # the ALIKED model's own loader (its remapping), then its network's state
        from ...registry import load

        state = load(name).net.state_dict()
    return {"net." + k: v for k, v in state.items()}
