"""Coarse matching: the confidence matrix between the 1/8 cells of two images and the
selection of coarse matches from it.

Two differentiable matching layers (paper section 3.3):

* dual-softmax: ``P = softmax_row(S / t) * softmax_col(S / t)`` with ``S = <f0, f1> / C``;
* optimal transport: log-domain Sinkhorn on ``S`` augmented with a learnt dustbin score.

Selection keeps a pair ``(i, j)`` when ``P[i, j]`` exceeds the threshold, is the maximum
of its row and of its column (mutual nearest neighbour), and neither cell lies within
``border`` cells of the valid image extent.

At inference the dual-softmax selection can run in row blocks (:func:`select_dual_softmax_blocked`)
without ever holding the ``L x S`` matrix, so memory stays linear in the number of cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

#: logit given to masked (padded) cells, as the official code (finite: keeps softmax NaN-free)
MASKED_LOGIT = -1e9


@dataclass
class CoarseMatches:
    """Selected coarse matches of a batch.

    Shape: ``b``, ``i``, ``j`` ``(M,)`` long (batch item, flattened cell of image 0,
    flattened cell of image 1 as ``row * w + col``); ``conf`` ``(M,)``.
    """

    b: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    conf: torch.Tensor


def _pair_mask(mask0: Optional[torch.Tensor], mask1: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``(N, L, S)`` bool, True where both cells are valid (None when nothing is masked)."""
    if mask0 is None and mask1 is None:
        return None
    if mask0 is None:
        return mask1.bool()[:, None, :]
    if mask1 is None:
        return mask0.bool()[:, :, None]
    return mask0.bool()[:, :, None] & mask1.bool()[:, None, :]


def similarity(feat0: torch.Tensor, feat1: torch.Tensor) -> torch.Tensor:
    """Scaled dot products ``<f0_i, f1_j> / C`` (each side divided by sqrt(C), as the reference).

    Shape: feat0 ``(N, L, C)``, feat1 ``(N, S, C)`` -> ``(N, L, S)``.
    """
    scale = feat0.shape[-1] ** 0.5
    return torch.einsum("nlc,nsc->nls", feat0 / scale, feat1 / scale)


def dual_softmax(sim: torch.Tensor, temperature: float, mask0: Optional[torch.Tensor] = None,
                 mask1: Optional[torch.Tensor] = None, *, return_log: bool = False):
    """Dual-softmax confidence ``softmax_row(sim / t) * softmax_col(sim / t)``.

    Masked pairs get the logit :data:`MASKED_LOGIT` and confidence 0. With ``return_log``
    also returns ``log_softmax_row + log_softmax_col`` (exact log-confidence, for losses
    whose gradient must not vanish where the confidence underflows).

    Shape: sim ``(N, L, S)``, masks ``(N, L)``/``(N, S)`` bool -> ``(N, L, S)`` in [0, 1]
    (and the ``(N, L, S)`` log-confidence).
    """
    logits = sim.float() / temperature  # float32 softmax also under autocast (a no-op in float32)
    valid = _pair_mask(mask0, mask1)
    if valid is not None:
        logits = logits.masked_fill(~valid, MASKED_LOGIT)
    if return_log:
        log_conf = torch.log_softmax(logits, dim=1) + torch.log_softmax(logits, dim=2)
        conf = log_conf.exp()
    else:
        conf = torch.softmax(logits, dim=1) * torch.softmax(logits, dim=2)
    if valid is not None:
        conf = conf.masked_fill(~valid, 0.0)
    return (conf, log_conf) if return_log else conf


def dual_softmax_inference(feat0: torch.Tensor, feat1: torch.Tensor, temperature: float,
                           mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`dual_softmax` of :func:`similarity` without autograd, with fewer passes over the
    ``(N, L, S)`` matrix: the scales ``1 / (C t)`` are applied to ``feat0`` before the GEMM,
    the column softmax runs in place on the logits (``exp(x - max) / sum`` along columns;
    PyTorch's softmax over a non-last dimension is several times slower) and multiplies the
    row softmax in place. Equal to :func:`dual_softmax` up to float rounding.

    Shape: feat0 ``(N, L, C)``, feat1 ``(N, S, C)``, masks ``(N, L)``/``(N, S)`` bool -> ``(N, L, S)``.
    """
    if feat0.dtype in (torch.float16, torch.bfloat16):
        return dual_softmax(similarity(feat0, feat1), temperature, mask0, mask1)
    logits = torch.bmm(feat0 * (1.0 / (feat0.shape[-1] * temperature)), feat1.transpose(1, 2))
    valid = _pair_mask(mask0, mask1)
    if valid is not None:
        logits.masked_fill_(~valid, MASKED_LOGIT)
    conf = torch.softmax(logits, dim=2)
    col = logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    conf.mul_(col.div_(col.sum(dim=1, keepdim=True)))
    if valid is not None:
        conf.masked_fill_(~valid, 0.0)
    return conf


def log_optimal_transport(scores: torch.Tensor, bin_score: torch.Tensor, iters: int,
                          mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Entropic optimal transport with a dustbin row and column, in log space.

    The ``(L+1) x (S+1)`` couplings (scores bordered by ``bin_score``) are balanced by
    ``iters`` Sinkhorn iterations towards marginals ``1`` per cell and ``S`` (``L``) for the
    dustbin row (column), all divided by ``L + S``; the result is scaled back by ``L + S``
    so a confident match has probability close to 1.

    Shape: scores ``(N, L, S)``, bin_score scalar -> log assignment ``(N, L+1, S+1)``.
    """
    n, l, s = scores.shape
    valid = _pair_mask(mask0, mask1)
    if valid is not None:
        scores = scores.masked_fill(~valid, MASKED_LOGIT)
    bins_col = bin_score.to(scores).expand(n, l, 1)
    bins_row = bin_score.to(scores).expand(n, 1, s + 1)
    couplings = torch.cat([torch.cat([scores, bins_col], 2), bins_row], 1)
    log_total = torch.log(torch.tensor(float(l + s), device=scores.device, dtype=scores.dtype))
    log_mu = torch.cat([torch.zeros(l, device=scores.device, dtype=scores.dtype),
                        torch.log(torch.tensor([float(s)], device=scores.device, dtype=scores.dtype))]) - log_total
    log_nu = torch.cat([torch.zeros(s, device=scores.device, dtype=scores.dtype),
                        torch.log(torch.tensor([float(l)], device=scores.device, dtype=scores.dtype))]) - log_total
    u = torch.zeros(n, l + 1, device=scores.device, dtype=scores.dtype)
    v = torch.zeros(n, s + 1, device=scores.device, dtype=scores.dtype)
    for _ in range(iters):
        u = log_mu[None] - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu[None] - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :] + log_total


def border_keep(n: int, h: int, w: int, border: int, mask: Optional[torch.Tensor], device) -> torch.Tensor:
    """Cells at least ``border`` cells inside the valid extent (rows/columns counted from
    the mask as in the reference ``mask_border_with_padding``).

    Shape: mask ``(N, h * w)`` bool or None -> ``(N, h * w)`` bool.
    """
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    if mask is None:
        h_end = torch.full((n, 1, 1), h, device=device)
        w_end = torch.full((n, 1, 1), w, device=device)
    else:
        m = mask.view(n, h, w).long()
        h_end = m.sum(1).amax(-1).view(n, 1, 1)
        w_end = m.sum(2).amax(-1).view(n, 1, 1)
    keep = (rows >= border) & (cols >= border) & (rows < h_end - border) & (cols < w_end - border)
    if mask is not None:
        keep = keep & mask.view(n, h, w).bool()
    return keep.reshape(n, h * w)


def select_matches(conf: torch.Tensor, threshold: float, keep0: torch.Tensor, keep1: torch.Tensor) -> CoarseMatches:
    """Mutual-nearest-neighbour matches above ``threshold`` whose cells are both kept.

    For each row the first maximum is taken; it is a match when it is also the maximum of
    its column, exceeds ``max(threshold, 0)`` and both cells are kept.

    Shape: conf ``(N, L, S)``, keep0 ``(N, L)``, keep1 ``(N, S)`` bool.
    """
    row_max, row_arg = conf.max(dim=2)
    col_max = conf.amax(dim=1)
    return _finish(row_max, row_arg, col_max, threshold, keep0, keep1)


def _finish(row_max, row_arg, col_max, threshold, keep0, keep1) -> CoarseMatches:
    ok = ((row_max > max(threshold, 0.0)) & (torch.gather(col_max, 1, row_arg) == row_max)
          & keep0 & torch.gather(keep1, 1, row_arg))
    b, i = torch.where(ok)
    return CoarseMatches(b, i, row_arg[b, i], row_max[b, i])


def select_dual_softmax_blocked(sim_fn, n: int, l: int, s: int, temperature: float, threshold: float,
                                keep0: torch.Tensor, keep1: torch.Tensor, mask0: Optional[torch.Tensor],
                                mask1: Optional[torch.Tensor], block_rows: int) -> CoarseMatches:
    """Dual-softmax selection computed over row blocks (two passes, no ``L x S`` matrix).

    Pass 1 accumulates the row and column log-sum-exps of ``sim / t``; pass 2 forms each
    block's confidences ``exp(2 sim / t - lse_row - lse_col)`` and keeps the row maxima and
    running column maxima. Gives the matches of :func:`dual_softmax` + :func:`select_matches`
    (confidences equal up to float rounding).

    Args:
        sim_fn: ``(row_start, row_end) -> (N, rows, S)`` similarity block.
        block_rows: rows per block.
    """
    dev = keep0.device
    valid_cols = None if mask1 is None else mask1.bool()[:, None, :]
    row_lse, col_max_logit, col_sum = [], None, None
    for r0 in range(0, l, block_rows):
        r1 = min(l, r0 + block_rows)
        logits = _masked_block(sim_fn(r0, r1) / temperature, mask0, valid_cols, r0, r1)
        row_lse.append(torch.logsumexp(logits, dim=2))
        bmax = logits.amax(dim=1)
        if col_max_logit is None:
            col_max_logit = bmax
            col_sum = torch.exp(logits - bmax[:, None]).sum(1)
        else:
            new_max = torch.maximum(col_max_logit, bmax)
            col_sum = col_sum * torch.exp(col_max_logit - new_max) + torch.exp(logits - new_max[:, None]).sum(1)
            col_max_logit = new_max
    lse_r = torch.cat(row_lse, 1)
    lse_c = col_max_logit + torch.log(col_sum)
    row_max = torch.empty(n, l, device=dev, dtype=lse_r.dtype)
    row_arg = torch.empty(n, l, device=dev, dtype=torch.long)
    col_max = torch.zeros(n, s, device=dev, dtype=lse_r.dtype)
    pair_ok = _pair_mask(mask0, mask1)
    for r0 in range(0, l, block_rows):
        r1 = min(l, r0 + block_rows)
        logits = _masked_block(sim_fn(r0, r1) / temperature, mask0, valid_cols, r0, r1)
        conf = torch.exp(2.0 * logits - lse_r[:, r0:r1, None] - lse_c[:, None, :])
        if pair_ok is not None:
            conf = conf.masked_fill(~pair_ok[:, r0:r1].expand(n, r1 - r0, s), 0.0)
        row_max[:, r0:r1], row_arg[:, r0:r1] = conf.max(dim=2)
        col_max = torch.maximum(col_max, conf.amax(dim=1))
    return _finish(row_max, row_arg, col_max, threshold, keep0, keep1)


def _masked_block(logits, mask0, valid_cols, r0, r1):
    if mask0 is None and valid_cols is None:
        return logits
    ok = torch.ones_like(logits, dtype=torch.bool)
    if mask0 is not None:
        ok = ok & mask0.bool()[:, r0:r1, None]
    if valid_cols is not None:
        ok = ok & valid_cols
    return logits.masked_fill(~ok, MASKED_LOGIT)


class CoarseMatching(nn.Module):
    """The coarse matching layer; holds the dustbin score of optimal transport.

    Args:
        match_type: ``"dual_softmax"`` or ``"sinkhorn"``.
        bin_init: initial dustbin score (sinkhorn only; a learnt parameter ``bin_score``).
    """

    def __init__(self, match_type: str = "dual_softmax", bin_init: float = 1.0):
        super().__init__()
        if match_type not in ("dual_softmax", "sinkhorn"):
            raise ValueError(f"match_type must be 'dual_softmax' or 'sinkhorn', got {match_type!r}")
        self.match_type = match_type
        if match_type == "sinkhorn":
            self.bin_score = nn.Parameter(torch.tensor(float(bin_init)))

    def confidence(self, feat0: torch.Tensor, feat1: torch.Tensor, *, temperature: float, iters: int,
                   prefilter: bool, mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None):
        """Confidence matrix and its log: the dual-softmax log-confidence ``(N, L, S)``, or
        for sinkhorn the log assignment with dustbins ``(N, L+1, S+1)``.

        With ``prefilter`` (sinkhorn at inference) rows and columns whose most likely
        assignment is the dustbin get confidence 0 (the log assignment is unchanged).

        Shape: feat0 ``(N, L, C)``, feat1 ``(N, S, C)`` -> conf ``(N, L, S)`` and the log.
        """
        sim = similarity(feat0, feat1)
        if self.match_type == "dual_softmax":
            return dual_softmax(sim, temperature, mask0, mask1, return_log=True)
        log_assign = log_optimal_transport(sim, self.bin_score, iters, mask0, mask1)
        full = log_assign.exp()
        conf = full[:, :-1, :-1]
        if prefilter:
            l, s = conf.shape[1:]
            to_bin0 = full.argmax(dim=2)[:, :-1] == s
            to_bin1 = full.argmax(dim=1)[:, :-1] == l
            conf = conf.masked_fill(to_bin0[:, :, None] | to_bin1[:, None, :], 0.0)
        valid = _pair_mask(mask0, mask1)
        if valid is not None:
            conf = conf.masked_fill(~valid, 0.0)
        return conf, log_assign
