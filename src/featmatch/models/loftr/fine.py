"""Coarse-to-fine refinement (paper section 3.4).

For every coarse match ``(i, j)`` a ``w x w`` window of the 1/2 feature map is cropped
around each cell (cell ``i`` sits on fine cell ``4 i``); optionally the coarse transformer
feature of the cell is projected and merged into every window position; a small
transformer then runs on the window pair, and the centre feature of window 0 is correlated
with window 1. The softmax heatmap's expectation is the sub-pixel match position in
image 1 (normalised to [-1, 1] over the window), its standard deviation the uncertainty
that weights the fine loss.

Parameter names (``down_proj``, ``merge_feat``) are those of the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def crop_windows(fmap: torch.Tensor, b: torch.Tensor, cells: torch.Tensor, coarse_w: int, window: int,
                 stride: int) -> torch.Tensor:
    """``window x window`` crops of ``fmap`` centred on fine cell ``stride * (row, col)`` of
    each coarse cell (zero outside the map).

    Shape: fmap ``(B, C, Hf, Wf)``; b, cells ``(M,)`` long (flattened coarse index
    ``row * coarse_w + col``) -> ``(M, window * window, C)``, positions row-major.
    """
    r = window // 2
    hf, wf = fmap.shape[-2:]
    offs = torch.arange(-r, r + 1, device=fmap.device)
    rows = (cells // coarse_w * stride)[:, None] + offs  # (M, w) window rows in the map
    cols = (cells % coarse_w * stride)[:, None] + offs
    # gather from the (B, Hf, Wf, C) view (contiguous for a channels-last map) with clamped
    # indices, then zero the positions outside the map: no padded copy of the whole map
    win = fmap.permute(0, 2, 3, 1)[b[:, None, None], rows.clamp(0, hf - 1)[:, :, None],
                                   cols.clamp(0, wf - 1)[:, None, :]]  # (M, w, w, C)
    outside = ((rows < 0) | (rows >= hf))[:, :, None] | ((cols < 0) | (cols >= wf))[:, None, :]
    if bool(outside.any()):
        win = win.masked_fill_(outside[..., None], 0.0)
    return win.reshape(b.shape[0], window * window, fmap.shape[1])


class FinePreprocess(nn.Module):
    """Window cropping plus (optionally) the coarse feature merged into every position.

    Args:
        coarse_dim, fine_dim: feature widths.
        window: window side ``w`` (odd).
        concat_coarse: merge ``down_proj(coarse feature)`` into the window features with
            ``merge_feat`` (the official ``fine_concat_coarse_feat``).
    """

    def __init__(self, coarse_dim: int, fine_dim: int, window: int = 5, concat_coarse: bool = True):
        super().__init__()
        self.window = window
        self.fine_dim = fine_dim
        self.concat_coarse = concat_coarse
        if concat_coarse:
            self.down_proj = nn.Linear(coarse_dim, fine_dim, bias=True)
            self.merge_feat = nn.Linear(2 * fine_dim, fine_dim, bias=True)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")

    def forward(self, fine0: torch.Tensor, fine1: torch.Tensor, coarse0: torch.Tensor, coarse1: torch.Tensor,
                b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, coarse_w0: int, coarse_w1: int):
        """Shape: fine maps ``(B, Cf, 4h, 4w)``, coarse tokens ``(B, L, Cc)``/``(B, S, Cc)``,
        ids ``(M,)`` -> two ``(M, w*w, Cf)`` window feature sets."""
        win0 = crop_windows(fine0, b, i, coarse_w0, self.window, fine0.shape[-1] // coarse_w0)
        win1 = crop_windows(fine1, b, j, coarse_w1, self.window, fine1.shape[-1] // coarse_w1)
        if not self.concat_coarse:
            return win0, win1
        # merge_feat([window, ctx]) = window @ W_win^T + (ctx @ W_ctx^T + bias): the context
        # term once per match instead of once per window position, no concatenated copies
        cf = win0.shape[-1]
        w = self.merge_feat.weight
        ctx0 = F.linear(self.down_proj(coarse0[b, i]), w[:, cf:], self.merge_feat.bias)  # (M, Cf)
        ctx1 = F.linear(self.down_proj(coarse1[b, j]), w[:, cf:], self.merge_feat.bias)
        w_win = w[:, :cf]
        return F.linear(win0, w_win).add_(ctx0[:, None, :]), F.linear(win1, w_win).add_(ctx1[:, None, :])


def expectation_and_std(win0: torch.Tensor, win1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap expectation of the centre feature of window 0 over window 1.

    ``heat = softmax(<f0_centre, f1_k> / sqrt(C))``; the expectation of the window grid
    (x, y normalised to [-1, 1]) and ``std = sqrt(var_x) + sqrt(var_y)`` (variances clamped
    at 1e-10).

    Shape: win0, win1 ``(M, w*w, C)`` -> expectation ``(M, 2)`` (x, y), std ``(M,)``.
    """
    m, ww, c = win1.shape
    w = int(round(ww ** 0.5))
    centre = win0[:, ww // 2]
    logits = torch.einsum("mc,mrc->mr", centre, win1)
    # softmax and moments in float32 even under autocast (a bfloat16 variance E[x^2] - E[x]^2
    # cancels to noise); a no-op in float32
    with torch.autocast(win1.device.type, enabled=False):
        heat = torch.softmax(logits.float() / c ** 0.5, dim=1)
        lin = torch.linspace(-1.0, 1.0, w, device=win1.device, dtype=heat.dtype)
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (w*w, 2), row-major
        mean = heat @ grid
        var = heat @ (grid ** 2) - mean ** 2
        std = var.clamp_min(1e-10).sqrt().sum(-1)
    return mean, std
