"""A faster in-place SELU for inference on CPU.

``torch.selu`` evaluates ``expm1``, which on CPU is about 10x slower than ``exp`` (and than
the memory traffic of the map). :func:`selu_` computes the same function as
``scale * (max(x, 0) + alpha * (exp2(min(x, 0) * log2(e)) - 1))`` (``exp2`` is itself 2-3x
faster than ``exp``), in chunks, with a reused scratch buffer. The result differs from
``torch.selu`` by about one float32 ulp of ``scale * alpha`` (``exp(x) - 1`` instead of
``expm1(x)`` near 0: an absolute error below 1e-6). Not differentiable (in-place).
"""

from __future__ import annotations

from typing import Optional

import torch

#: SELU constants (Klambauer et al., 2017), as in ``torch.nn.functional.selu``.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_LOG2E = 1.4426950408889634
#: Elements per chunk (4 MiB of float32): few chunks per map, so that with several threads the
#: number of parallel regions (each one a barrier, slow when threads are descheduled) stays
#: small; callers that apply many SELUs pass one scratch buffer for all (fresh memory costs
#: page faults).
CHUNK = 1 << 20


def _flat(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view over the elements of a dense tensor in any memory order (no copy)."""
    if x.is_contiguous():
        return x.view(-1)
    # a dense, non-overlapping tensor is a permutation of a contiguous one (e.g. channels_last)
    y = x.permute(sorted(range(x.dim()), key=lambda d: (x.stride(d), x.size(d)), reverse=True))
    if y.is_contiguous():
        return y.view(-1)
    raise ValueError("selu_ needs a dense tensor (contiguous in some dimension order)")


def selu_(x: torch.Tensor, scratch: Optional[torch.Tensor] = None) -> torch.Tensor:
    """In-place SELU of a dense float tensor (contiguous in any dimension order); returns ``x``.

    Args:
        x: the tensor to transform.
        scratch: optional 1-D buffer of ``min(x.numel(), CHUNK)`` elements or more, reused
            for the negative part (repeated multi-megabyte allocations cost page faults).

    Shape: any; the tensor is modified in place and returned.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        raise ValueError("selu_ is for inference only; use torch.nn.functional.selu with autograd")
    flat = _flat(x)
    n = flat.numel()
    step = min(n, CHUNK)
    if scratch is None or scratch.numel() < step:
        scratch = flat.new_empty(step)
    for i in range(0, n, step):
        t = flat[i:i + step]
        # exp(v) as exp2(v * log2(e)): exp2 is about 2.5x faster than exp in torch on CPU
        neg = torch.mul(t, _LOG2E, out=scratch[:t.numel()]).clamp_(max=0.0).exp2_()
        t.clamp_(min=0.0).add_(neg, alpha=SELU_ALPHA).sub_(SELU_ALPHA).mul_(SELU_SCALE)
    return x
