"""The LoFTR transformer: interleaved self- and cross-attention layers over two token sets.

Attention is linear (Katharopoulos et al. 2020, feature map ``elu(x) + 1``; cost linear in
the number of tokens, the paper's choice) or full softmax attention (quadratic; an option).
Parameter names (``layers.N.q_proj`` ...) are those of the official checkpoints.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """The feature map ``elu(x) + 1``. Without autograd as ``exp(min(x, 0)) + max(x, 0)``
    in place (equal up to float rounding; PyTorch's CPU ``elu`` kernel is several times
    slower than these three passes)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.elu(x) + 1.0
    return x.clamp(max=0.0).exp_().add_(x.clamp(min=0.0))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: Optional[torch.Tensor] = None,
                     kv_mask: Optional[torch.Tensor] = None, eps: float = 1e-6) -> torch.Tensor:
    """Multi-head linear attention with the ``elu + 1`` kernel.

    ``out_l = phi(q_l) sum_s phi(k_s) v_s^T / (phi(q_l) . sum_s phi(k_s) + eps)``; masked keys
    and values are zeroed, masked queries give zeros. The reference divides the values by
    the sequence length ``S`` before the sums and multiplies the result back (to keep fp16
    finite); the two cancel, so float32/float64 skip them and half precision keeps them.

    Shape: q ``(N, L, H, D)``, k ``(N, S, H, D)``, v ``(N, S, H, V)``, masks ``(N, L)`` /
    ``(N, S)`` bool -> ``(N, L, H, V)``.
    """
    qf = _elu_plus_one(q)
    kf = _elu_plus_one(k)
    if q_mask is not None:
        qf = qf * q_mask[:, :, None, None]
    if kv_mask is not None:
        kf = kf * kv_mask[:, :, None, None]
        v = v * kv_mask[:, :, None, None]
    s = v.shape[1]
    half = v.dtype in (torch.float16, torch.bfloat16)
    if half:
        v = v / s
    kv = torch.einsum("nshd,nshv->nhdv", kf, v)
    denom = torch.einsum("nlhd,nhd->nlh", qf, kf.sum(dim=1)) + eps
    out = torch.einsum("nlhd,nhdv->nlhv", qf, kv)
    if half:
        return out * (s / denom)[..., None]
    return out / denom[..., None]


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: Optional[torch.Tensor] = None,
                   kv_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-head scaled dot-product (softmax) attention; masked keys get no weight.

    Shape: as :func:`linear_attention`.
    """
    logits = torch.einsum("nlhd,nshd->nlsh", q, k) / q.shape[-1] ** 0.5
    if kv_mask is not None:
        logits = logits.masked_fill(~kv_mask.bool()[:, None, :, None], float("-inf"))
    weights = torch.softmax(logits, dim=2)
    if kv_mask is not None:  # a query whose keys are all masked: zeros instead of NaN
        weights = torch.nan_to_num(weights, nan=0.0)
    out = torch.einsum("nlsh,nshd->nlhd", weights, v)
    if q_mask is not None:
        out = out * q_mask[:, :, None, None]
    return out


class AttentionLayer(nn.Module):
    """One LoFTR encoder layer: multi-head attention of ``x`` over ``source``, merge,
    LayerNorm, then an MLP on ``[x, message]`` and LayerNorm, added to ``x``.

    Shape: x ``(N, L, C)``, source ``(N, S, C)``, masks ``(N, L)``/``(N, S)`` -> ``(N, L, C)``.
    """

    def __init__(self, dim: int, heads: int, attention: str = "linear"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attend = linear_attention if attention == "linear" else full_attention
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(2 * dim, dim, bias=False))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, source: torch.Tensor, x_mask: Optional[torch.Tensor] = None,
                source_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, c = x.shape[0], x.shape[2]
        split = (n, -1, self.heads, c // self.heads)
        msg = self.attend(self.q_proj(x).view(split), self.k_proj(source).view(split),
                          self.v_proj(source).view(split), x_mask, source_mask)
        msg = self.norm1(self.merge(msg.reshape(n, -1, c)))
        msg = self.norm2(self.mlp(torch.cat([x, msg], dim=2)))
        return x + msg


class LocalFeatureTransformer(nn.Module):
    """A stack of attention layers, each ``"self"`` (both sets attend to themselves) or
    ``"cross"`` (set 0 attends to set 1, then set 1 to the updated set 0).

    Shape: feat0 ``(N, L, C)``, feat1 ``(N, S, C)``, masks ``(N, L)``/``(N, S)`` bool ->
    the two updated sets.
    """

    def __init__(self, dim: int, heads: int, layer_types: Sequence[str], attention: str = "linear"):
        super().__init__()
        bad = [t for t in layer_types if t not in ("self", "cross")]
        if bad:
            raise ValueError(f"transformer layers must be 'self' or 'cross', got {bad[0]!r}")
        if attention not in ("linear", "full"):
            raise ValueError(f"attention must be 'linear' or 'full', got {attention!r}")
        self.dim = dim
        self.layer_types = tuple(layer_types)
        self.layers = nn.ModuleList(AttentionLayer(dim, heads, attention) for _ in self.layer_types)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, feat0: torch.Tensor, feat1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                mask1: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if feat0.shape[-1] != self.dim or feat1.shape[-1] != self.dim:
            raise ValueError(f"transformer expects {self.dim}-d tokens, got {feat0.shape[-1]} and {feat1.shape[-1]}")
        for layer, kind in zip(self.layers, self.layer_types):
            if kind == "self":
                feat0, feat1 = layer(feat0, feat0, mask0, mask0), layer(feat1, feat1, mask1, mask1)
            else:
                feat0 = layer(feat0, feat1, mask0, mask1)
                feat1 = layer(feat1, feat0, mask1, mask0)
        return feat0, feat1
