"""LoFTR (Sun et al., CVPR 2021): detector-free local feature matching with transformers.

:class:`LoFTR` holds the network (module names equal those of the official checkpoints, so
``outdoor_ds.ckpt`` / ``indoor_ds.ckpt`` load strictly after stripping the Lightning
``matcher.`` prefix) and the inference front door (:meth:`DenseMatcher.match`):

1. grey conversion (ITU-R 601 luma, as OpenCV's grey read of the reference demo) and
   zero padding at the bottom/right to multiples of 8, with validity masks at 1/8;
2. backbone (1/8 and 1/2 maps; one pass for both images when their sizes agree) and 2-D
   sinusoidal positional encoding on the coarse map;
3. coarse transformer, coarse matching (dual-softmax or optimal transport), threshold,
   border removal, mutual nearest neighbour;
4. coarse-to-fine refinement of image-1 positions (5x5 windows at 1/2, fine transformer,
   heatmap expectation and standard deviation).

Image-0 points are the coarse cell anchors ``8 * (col, row)`` (the pixel each cell's
receptive field is centred on); image-1 points are ``8 * (col, row)`` of the matched cell
plus the refined offset (at most ``2 * (window // 2)`` pixels per axis). ``symmetric=True``
also matches image 1 against image 0 and returns the union, so the result does not depend
on the order of the images.

:meth:`LoFTR.forward` is the training entry point: full confidence matrix, and fine
expectations for any coarse matches the caller chooses (see
``featmatch.train.losses.loftr``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ...errors import UsageError, WeightsError
from ...types import Matches, check_shape
from ..base import DenseMatcher, check_subpixel
from .backbone import ResNetFPN, sine_position_encoding
from .coarse import (CoarseMatches, CoarseMatching, border_keep, dual_softmax, dual_softmax_inference,
                     select_dual_softmax_blocked, select_matches, similarity)
from .fine import FinePreprocess, expectation_and_std
from .transformer import LocalFeatureTransformer

log = logging.getLogger(__name__)

#: pixel stride of the coarse (1/8) and fine (1/2) feature maps
COARSE_STRIDE = 8
FINE_STRIDE = 2
#: LoFTR's default pixel budget per image (1280 x 960): larger images are downscaled with a warning
LOFTR_MAX_PIXELS = 1280 * 960


@dataclass(frozen=True)
class LoFTRConfig:
    """Options of LoFTR. Defaults are the paper's / official ``loftr_ds`` sizes.

    The coarse transformer width is ``block_dims[2]`` and the fine one ``block_dims[0]``.
    Fields marked (net) change the parameters: a checkpoint fits only the config it was
    trained with.
    """

    # -- network (net)
    initial_dim: int = 128  # (net) channels of the backbone stem
    block_dims: tuple[int, int, int] = (128, 196, 256)  # (net) widths of the 1/2, 1/4, 1/8 stages
    coarse_heads: int = 8  # (net) attention heads of the coarse transformer
    coarse_layers: tuple[str, ...] = ("self", "cross") * 4  # (net) layer kinds of the coarse transformer
    coarse_attention: str = "linear"  # "linear" (elu+1 kernel, the paper) or "full" (softmax, quadratic)
    pos_encoding_fix: bool = False  # False: positional frequencies of outdoor_ds/indoor_ds (pre-fix code)
    match_type: str = "dual_softmax"  # (net) "dual_softmax" or "sinkhorn" (optimal transport + dustbin)
    fine_window: int = 5  # side w of the w x w refinement windows at 1/2 resolution (odd)
    fine_concat_coarse: bool = True  # (net) merge the coarse transformer feature into the windows
    fine_heads: int = 8  # (net) attention heads of the fine transformer
    fine_layers: tuple[str, ...] = ("self", "cross")  # (net) layer kinds of the fine transformer
    fine_attention: str = "linear"  # "linear" or "full" attention in the fine transformer
    # -- coarse matching
    threshold: float = 0.2  # keep coarse matches whose confidence exceeds this
    border: int = 2  # ignore cells within this many cells of the (valid) image border
    temperature: float = 0.1  # dual-softmax temperature
    sinkhorn_iters: int = 3  # Sinkhorn iterations (match_type="sinkhorn")
    sinkhorn_bin_init: float = 1.0  # initial dustbin score before training (sinkhorn)
    sinkhorn_prefilter: bool = True  # at inference, drop cells whose best assignment is the dustbin
    # -- inference
    symmetric: bool = False  # also match image 1 -> image 0 and return the union (order-independent)
    resize: Optional[int] = None  # resize so the long side is this many pixels (None: keep)
    max_pixels: int = LOFTR_MAX_PIXELS  # larger images are downscaled with a warning (memory/time guard)
    max_matrix_elements: int = 1 << 25  # coarse matrix entries held at once; larger pairs run in row blocks
    fine_batch: int = 4096  # coarse matches refined per fine-transformer pass
    # final sub-pixel step, not in the paper: "lk" moves the image-1 points by translation-only
    # Lucas-Kanade on the grey images at the caller's resolution (kept only when the patch
    # correlation improves, at most lk_max_move px); "none" (paper presets) keeps LoFTR's output
    subpixel: str = "none"
    lk_radius: int = 7  # patch half-size of the Lucas-Kanade step (pixels)
    lk_max_move: float = 4.0  # refinements that move a point further than this are rejected


def _validate(c: LoFTRConfig) -> None:
    def bad(msg: str) -> None:
        raise UsageError(f"LoFTR config: {msg}")

    if c.coarse_attention not in ("linear", "full") or c.fine_attention not in ("linear", "full"):
        bad(f"attention must be 'linear' or 'full', got {c.coarse_attention!r} / {c.fine_attention!r}")
    if c.match_type not in ("dual_softmax", "sinkhorn"):
        bad(f"match_type must be 'dual_softmax' or 'sinkhorn', got {c.match_type!r}")
    check_subpixel(c)
    for name in ("coarse_layers", "fine_layers"):
        kinds = getattr(c, name)
        if not kinds or any(k not in ("self", "cross") for k in kinds):
            bad(f"{name} must be a non-empty list of 'self'/'cross', got {list(kinds)}")
    if c.fine_window < 1 or c.fine_window % 2 == 0:
        bad(f"fine_window must be odd and positive, got {c.fine_window}")
    if c.block_dims[2] % c.coarse_heads or c.block_dims[0] % c.fine_heads:
        bad(f"block_dims {c.block_dims} must be divisible by the heads ({c.coarse_heads} coarse, {c.fine_heads} fine)")
    if c.block_dims[2] % 4:
        bad(f"coarse width block_dims[2]={c.block_dims[2]} must be divisible by 4 (positional encoding)")
    if not 0 <= c.threshold < 1:  # a match probability: >= 1 keeps nothing, < 0 is the same as 0
        bad(f"threshold must be in [0, 1) (coarse match confidence), got {c.threshold}")
    if c.temperature <= 0:
        bad(f"temperature must be positive, got {c.temperature}")
    if c.border < 0 or c.sinkhorn_iters < 1:
        bad("border must be >= 0 and sinkhorn_iters >= 1")
    if c.max_matrix_elements < 1 or c.fine_batch < 1 or c.max_pixels < 64:
        bad("max_matrix_elements and fine_batch must be >= 1, max_pixels >= 64")
    if c.resize is not None and c.resize < 8:
        bad(f"resize must be at least 8 pixels, got {c.resize}")


def to_luma(x: torch.Tensor) -> torch.Tensor:
    """RGB -> grey with ITU-R 601 weights (OpenCV's ``IMREAD_GRAYSCALE``); grey passes through.

    Shape: ``(B, 1|3, H, W) -> (B, 1, H, W)``.
    """
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def pad_to_multiple(x: torch.Tensor, multiple: int = COARSE_STRIDE) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Zero-pad bottom/right to multiples of ``multiple``; coarse validity mask.

    A coarse cell is valid when its anchor pixel ``8 * (col, row)`` lies inside the
    original image. (Padding to the next multiple of 8 therefore never invalidates a cell;
    the mask is None then, and matters for inputs padded further, e.g. in training.)

    Shape: x ``(B, C, H, W)`` -> padded ``(B, C, H', W')`` and mask ``(B, H'/8 * W'/8)`` or None.
    """
    h, w = x.shape[-2:]
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, wp - w, 0, hp - h))
    return x, coarse_mask_from_size(x.shape[0], (h, w), (hp, wp), x.device)


def coarse_mask_from_size(b: int, size_hw: tuple[int, int], padded_hw: tuple[int, int],
                          device) -> Optional[torch.Tensor]:
    """Validity of the coarse cells of an image of ``size_hw`` padded to ``padded_hw``
    (None when every cell is valid). Shape: ``(B, h * w)`` bool."""
    hc, wc = padded_hw[0] // COARSE_STRIDE, padded_hw[1] // COARSE_STRIDE
    rows = torch.arange(hc, device=device) * COARSE_STRIDE < size_hw[0]
    cols = torch.arange(wc, device=device) * COARSE_STRIDE < size_hw[1]
    if bool(rows.all()) and bool(cols.all()):
        return None
    return (rows[:, None] & cols[None, :]).reshape(1, -1).expand(b, -1)


def _coarse_mask_from_pixels(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Pixel mask ``(B, H, W)`` -> coarse mask ``(B, H/8 * W/8)`` (value at each cell anchor)."""
    if mask is None:
        return None
    return mask[:, ::COARSE_STRIDE, ::COARSE_STRIDE].reshape(mask.shape[0], -1).bool()


class LoFTR(DenseMatcher):
    """LoFTR: coarse transformer matching at 1/8, refined at 1/2 (see module docstring)."""

    min_image_side = 8

    def __init__(self, config: LoFTRConfig = LoFTRConfig()):
        _validate(config)
        super().__init__(config)
        d_fine, _, d_coarse = config.block_dims
        self.backbone = ResNetFPN(config.initial_dim, config.block_dims)
        self.loftr_coarse = LocalFeatureTransformer(d_coarse, config.coarse_heads, config.coarse_layers,
                                                    config.coarse_attention)
        self.coarse_matching = CoarseMatching(config.match_type, config.sinkhorn_bin_init)
        self.fine_preprocess = FinePreprocess(d_coarse, d_fine, config.fine_window, config.fine_concat_coarse)
        self.loftr_fine = LocalFeatureTransformer(d_fine, config.fine_heads, config.fine_layers,
                                                  config.fine_attention)

    # -- weights -------------------------------------------------------------------------
    def remap_state_dict(self, state: dict) -> dict:
        """Official Lightning checkpoints: strip ``matcher.``; drop the (recomputed)
        positional-encoding buffer. Other keys are already featmatch's names."""
        out = {}
        for k, v in state.items():
            nk = k[len("matcher."):] if k.startswith("matcher.") else k
            if nk == "pos_encoding.pe":
                continue
            out[nk] = v
        has_bin = "coarse_matching.bin_score" in out
        if has_bin and self.config.match_type != "sinkhorn":
            raise WeightsError("checkpoint has an optimal-transport dustbin (coarse_matching.bin_score); "
                               "load it with match_type='sinkhorn'")
        if not has_bin and self.config.match_type == "sinkhorn" and any(k.startswith("backbone.") for k in out):
            raise WeightsError("checkpoint has no dustbin score (a dual-softmax model); load it with "
                               "match_type='dual_softmax'")
        return out

    # -- network pieces ------------------------------------------------------------------
    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone + positional encoding.

        Shape: image ``(B, 1, H, W)``, H and W multiples of 8 -> coarse ``(B, Cc, H/8, W/8)``
        (with positional encoding), fine ``(B, Cf, H/2, W/2)``.
        """
        coarse, fine = self.backbone(image)
        pe = self._position_encoding(coarse)
        if torch.is_grad_enabled() and coarse.requires_grad:
            return coarse + pe, fine
        return coarse.add_(pe), fine

    def _position_encoding(self, coarse: torch.Tensor) -> torch.Tensor:
        """The positional encoding for ``coarse``'s size, device and dtype, computed once per
        combination (a small per-instance cache; constants, not state-dict entries), in
        ``coarse``'s memory layout."""
        cl = coarse.is_contiguous(memory_format=torch.channels_last) and not coarse.is_contiguous()
        key = (tuple(coarse.shape[1:]), coarse.device, coarse.dtype, self.config.pos_encoding_fix, cl)
        cache = self.__dict__.setdefault("_pe_cache", {})
        pe = cache.get(key)
        if pe is None:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, also usable in training
                pe = sine_position_encoding(coarse.shape[1], coarse.shape[2], coarse.shape[3],
                                            fixed=self.config.pos_encoding_fix, device=coarse.device,
                                            dtype=coarse.dtype)
                if cl:
                    pe = pe.contiguous(memory_format=torch.channels_last)
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = pe
        return pe

    def transform(self, coarse0: torch.Tensor, coarse1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                  mask1: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse transformer on the flattened maps.

        Shape: coarse maps ``(B, C, h, w)`` -> tokens ``(B, h*w, C)`` (row-major cells).
        """
        t0 = coarse0.flatten(2).transpose(1, 2).contiguous()
        t1 = coarse1.flatten(2).transpose(1, 2).contiguous()
        return self.loftr_coarse(t0, t1, mask0, mask1)

    def confidence(self, tokens0: torch.Tensor, tokens1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                   mask1: Optional[torch.Tensor] = None):
        """Full coarse confidence matrix ``(B, L, S)`` and its log: the log-confidence
        ``(B, L, S)`` (dual-softmax) or the log assignment with dustbins ``(B, L+1, S+1)``."""
        c = self.config
        return self.coarse_matching.confidence(tokens0, tokens1, temperature=c.temperature, iters=c.sinkhorn_iters,
                                               prefilter=c.sinkhorn_prefilter and not self.training,
                                               mask0=mask0, mask1=mask1)

    def refine(self, fine0: torch.Tensor, fine1: torch.Tensor, tokens0: torch.Tensor, tokens1: torch.Tensor,
               b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, w0: int, w1: int):
        """Fine expectations for coarse matches ``(b, i, j)`` (any set, e.g. GT in training).

        Shape: ids ``(M,)`` -> expectation ``(M, 2)`` in [-1, 1] window units, std ``(M,)``.
        """
        if b.numel() == 0:
            z = fine0.new_zeros(0)
            return z.view(0, 2), z
        win0, win1 = self.fine_preprocess(fine0, fine1, tokens0, tokens1, b, i, j, w0, w1)
        win0, win1 = self.loftr_fine(win0, win1)
        return expectation_and_std(win0, win1)

    def match_points(self, i: torch.Tensor, j: torch.Tensor, expectation: torch.Tensor, w0: int, w1: int):
        """Pixel positions (of the padded input) of refined matches.

        Shape: i, j ``(M,)``, expectation ``(M, 2)`` -> points0, points1 ``(M, 2)``.
        """
        p0 = torch.stack([i % w0, i // w0], -1).to(expectation.dtype) * COARSE_STRIDE
        p1 = torch.stack([j % w1, j // w1], -1).to(expectation.dtype) * COARSE_STRIDE
        return p0, p1 + expectation * (self.config.fine_window // 2) * FINE_STRIDE

    def forward(self, image0: torch.Tensor, image1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                mask1: Optional[torch.Tensor] = None, coarse_ids: Optional[tuple] = None) -> dict:
        """Differentiable forward pass (training and analysis).

        Args:
            image0, image1: grey images, H and W multiples of 8.
            mask0, mask1: optional pixel validity masks (False = padding).
            coarse_ids: optional ``(b, i, j)`` coarse matches to refine instead of the
                predicted ones, or a function of the predicted :class:`CoarseMatches`
                returning them (training samples predictions + ground truth).

        Shape:
            image0 ``(B, 1, H0, W0)``, image1 ``(B, 1, H1, W1)``, masks ``(B, H, W)`` bool.
            returns a dict: ``conf`` ``(B, L, S)`` and ``log_conf`` (its log, exact where
            ``conf`` underflows); ``log_assignment`` ``(B, L+1, S+1)`` (sinkhorn) or None;
            ``hw0_c``, ``hw1_c`` coarse sizes; ``mask0_c``/``mask1_c`` ``(B, L)``/``(B, S)`` or
            None; the predicted coarse matches ``b, i, j, mconf`` ``(M,)``; for the refined ids
            ``(b_f, i_f, j_f)`` ``(M',)``: ``expectation`` ``(M', 2)``,
            ``std`` ``(M',)``, ``points0``/``points1`` ``(M', 2)`` pixels.
        """
        for name, img in (("image0", image0), ("image1", image1)):
            check_shape(name, img, (-1, 1, -1, -1))
            if img.shape[-1] % COARSE_STRIDE or img.shape[-2] % COARSE_STRIDE:
                raise UsageError(f"{name}: H and W must be multiples of 8 for forward(), got {tuple(img.shape[-2:])}")
        if image0.shape[0] != image1.shape[0]:
            raise UsageError(f"image0 and image1 batches differ: {image0.shape[0]} vs {image1.shape[0]}")
        m0, m1 = _coarse_mask_from_pixels(mask0), _coarse_mask_from_pixels(mask1)
        (c0, f0), (c1, f1) = self._encode_pair(image0, image1)
        (h0, w0), (h1, w1) = c0.shape[-2:], c1.shape[-2:]
        t0, t1 = self.transform(c0, c1, m0, m1)
        conf, log_c = self.confidence(t0, t1, m0, m1)
        sinkhorn = self.config.match_type == "sinkhorn"
        n = conf.shape[0]
        keep0 = border_keep(n, h0, w0, self.config.border, m0, conf.device)
        keep1 = border_keep(n, h1, w1, self.config.border, m1, conf.device)
        with torch.no_grad():
            pred = select_matches(conf.detach(), self.config.threshold, keep0, keep1)
        if callable(coarse_ids):
            coarse_ids = coarse_ids(pred)
        bf, i_f, jf = coarse_ids if coarse_ids is not None else (pred.b, pred.i, pred.j)
        expectation, std = self.refine(f0, f1, t0, t1, bf, i_f, jf, w0, w1)
        p0, p1 = self.match_points(i_f, jf, expectation, w0, w1)
        return {"conf": conf, "log_conf": log_c[:, :-1, :-1] if sinkhorn else log_c,
                "log_assignment": log_c if sinkhorn else None, "hw0_c": (h0, w0), "hw1_c": (h1, w1),
                "mask0_c": m0, "mask1_c": m1, "b": pred.b, "i": pred.i, "j": pred.j, "mconf": pred.conf,
                "b_f": bf, "i_f": i_f, "j_f": jf, "expectation": expectation, "std": std,
                "points0": p0, "points1": p1}

    # -- inference -----------------------------------------------------------------------
    def _encode_pair(self, x0: torch.Tensor, x1: torch.Tensor):
        if x0.shape == x1.shape:  # one backbone pass for both images
            c, f = self.encode(torch.cat([x0, x1], 0))
            n = x0.shape[0]
            return (c[:n], f[:n]), (c[n:], f[n:])
        return self.encode(x0), self.encode(x1)

    def _select(self, t0: torch.Tensor, t1: torch.Tensor, m0, m1, hw0, hw1) -> CoarseMatches:
        c = self.config
        n, l, s = t0.shape[0], t0.shape[1], t1.shape[1]
        keep0 = border_keep(n, hw0[0], hw0[1], c.border, m0, t0.device)
        keep1 = border_keep(n, hw1[0], hw1[1], c.border, m1, t0.device)
        if c.match_type == "dual_softmax" and n * l * s > c.max_matrix_elements:
            rows = max(1, c.max_matrix_elements // max(1, n * s))
            return select_dual_softmax_blocked(lambda r0, r1: similarity(t0[:, r0:r1], t1), n, l, s,
                                               c.temperature, c.threshold, keep0, keep1, m0, m1, rows)
        if c.match_type == "dual_softmax" and not (torch.is_grad_enabled() and t0.requires_grad):
            conf = dual_softmax_inference(t0, t1, c.temperature, m0, m1)
        elif c.match_type == "dual_softmax":
            conf = dual_softmax(similarity(t0, t1), c.temperature, m0, m1)
        else:
            conf, _ = self.confidence(t0, t1, m0, m1)
        return select_matches(conf, c.threshold, keep0, keep1)

    def match_one_way(self, enc0, enc1, m0, m1, sizes0_wh, sizes1_wh) -> list[Matches]:
        """Matches of image 0 against image 1 from encoded features (no resizing).

        Args:
            enc0, enc1: ``encode()`` outputs of the padded images.
            m0, m1: coarse validity masks or None.
            sizes0_wh, sizes1_wh: ``(W, H)`` of the unpadded images (points outside are dropped).
        """
        (c0, f0), (c1, f1) = enc0, enc1
        hw0, hw1 = tuple(c0.shape[-2:]), tuple(c1.shape[-2:])
        t0, t1 = self.transform(c0, c1, m0, m1)
        cm = self._select(t0, t1, m0, m1, hw0, hw1)
        step = self.config.fine_batch
        parts = [self.refine(f0, f1, t0, t1, cm.b[k:k + step], cm.i[k:k + step], cm.j[k:k + step], hw0[1], hw1[1])[0]
                 for k in range(0, cm.b.numel(), step)]
        expectation = torch.cat(parts, 0) if parts else t0.new_zeros(0, 2)
        p0, p1 = self.match_points(cm.i, cm.j, expectation, hw0[1], hw1[1])
        inside = _inside(p0, sizes0_wh) & _inside(p1, sizes1_wh)
        out = []
        for bi in range(c0.shape[0]):
            sel = (cm.b == bi) & inside
            out.append(Matches(p0[sel], p1[sel], cm.conf[sel].to(p0.dtype)))
        return out

    def _match(self, x0: torch.Tensor, x1: torch.Tensor) -> list[Matches]:
        size0, size1 = (x0.shape[-1], x0.shape[-2]), (x1.shape[-1], x1.shape[-2])
        g0, m0 = pad_to_multiple(to_luma(x0))
        g1, m1 = pad_to_multiple(to_luma(x1))
        enc0, enc1 = self._encode_pair(g0, g1)
        fwd = self.match_one_way(enc0, enc1, m0, m1, size0, size1)
        if not self.config.symmetric:
            return fwd
        bwd = self.match_one_way(enc1, enc0, m1, m0, size1, size0)
        return [_union(a, Matches(b.points1, b.points0, b.scores)) for a, b in zip(fwd, bwd)]


def _inside(p: torch.Tensor, size_wh) -> torch.Tensor:
    w, h = size_wh
    return (p[:, 0] >= -0.5) & (p[:, 0] <= w - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= h - 0.5)


def _union(a: Matches, b: Matches) -> Matches:
    """Both match sets, ordered by score (ties by coordinate sum, symmetric in the images)."""
    p0 = torch.cat([a.points0, b.points0])
    p1 = torch.cat([a.points1, b.points1])
    sc = torch.cat([a.scores, b.scores])
    order = torch.argsort((p0 + p1).sum(-1), stable=True)
    order = order[torch.argsort(-sc[order], stable=True)]
    return Matches(p0[order], p1[order], sc[order])
