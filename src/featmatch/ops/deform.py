"""Deformable 3x3 convolution (DCNv1) with gathers and one matrix product.

Same maths as ``torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1))``
(stride 1, dilation 1, one offset group, no modulation mask), including its bilinear
sampling rule (corners outside the map read 0), but much faster on CPU for the small maps
of feature pyramids: torchvision's CPU kernel fills its column buffer in a serial loop,
and gets slower, not faster, with more threads. Here the four bilinear corners of every
(pixel, kernel point) are gathered as rows of a pixel-major copy of the input, weighted,
and multiplied with the weights in chunks of pixels that fit in cache.
"""

from __future__ import annotations

from typing import Optional

import torch

#: Elements of one gathered column chunk (pixels x 9 x channels): 4 MiB of float32.
CHUNK_ELEMENTS = 1 << 20


def deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable 3x3 convolution, padding 1.

    Args:
        x: input features.
        offset: per output pixel and kernel point ``k = 3 * i + j`` (row i, column j), the
            sampling offset ``(dy, dx)`` in channels ``2k, 2k + 1`` (torchvision's layout).
        weight: convolution weights; bias: optional ``(C_out,)``.

    Shape:
        x: ``(B, C, H, W)``; offset: ``(B, 18, H, W)``; weight: ``(C_out, C, 3, 3)``.
        Returns ``(B, C_out, H, W)`` in channels_last memory format.
    """
    b, c, h, w = x.shape
    cout = weight.shape[0]
    if weight.shape[1:] != (c, 3, 3) or offset.shape != (b, 18, h, w):
        raise ValueError(f"deform_conv3x3: x {tuple(x.shape)}, offset {tuple(offset.shape)} and weight "
                         f"{tuple(weight.shape)} do not fit (B, C, H, W), (B, 18, H, W), (C_out, C, 3, 3)")
    hw = h * w
    dev, dt = x.device, x.dtype
    # pixel-major input with one zero row (index b * hw) read by corners outside the map
    table = torch.empty(b * hw + 1, c, device=dev, dtype=dt)
    table[:-1].view(b, h, w, c).copy_(x.permute(0, 2, 3, 1))
    table[-1].zero_()
    wmat = weight.permute(0, 2, 3, 1).reshape(cout, 9 * c).t()  # rows ordered (k, c)
    out = torch.empty(b * hw, cout, device=dev, dtype=dt)

    off = offset.permute(0, 2, 3, 1).reshape(b, hw, 9, 2)
    k = torch.arange(9, device=dev)
    ky, kx = (k // 3 - 1).to(dt), (k % 3 - 1).to(dt)
    pix = torch.arange(hw, device=dev)
    py0 = (pix // w).to(dt)[:, None] + ky  # (hw, 9): sampling row before the offset
    px0 = (pix % w).to(dt)[:, None] + kx
    step = min(hw, max(1, CHUNK_ELEMENTS // (9 * c)))
    cols_buf, v_buf = x.new_empty(step * 9, c), x.new_empty(step * 9, c)  # reused: no page faults per chunk
    for bi in range(b):
        for s in range(0, hw, step):
            e = min(s + step, hw)
            py = py0[s:e] + off[bi, s:e, :, 0]  # (n, 9)
            px = px0[s:e] + off[bi, s:e, :, 1]
            y0f, x0f = py.floor(), px.floor()
            ly, lx = py - y0f, px - x0f
            hy, hx = 1 - ly, 1 - lx
            y0, x0 = y0f.long(), x0f.long()
            n9 = (e - s) * 9
            cols = cols_buf[:n9]
            for i, (dy, dx, wt) in enumerate(((0, 0, hy * hx), (0, 1, hy * lx), (1, 0, ly * hx), (1, 1, ly * lx))):
                yy, xx = y0 + dy, x0 + dx
                valid = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
                idx = torch.where(valid, bi * hw + yy * w + xx, b * hw).reshape(-1)
                wt = wt.reshape(-1, 1)
                if i == 0:
                    torch.index_select(table, 0, idx, out=cols).mul_(wt)
                else:
                    cols.addcmul_(torch.index_select(table, 0, idx, out=v_buf[:n9]), wt)
            cols = cols.view(e - s, 9 * c)
            if bias is None:
                torch.mm(cols, wmat, out=out[bi * hw + s:bi * hw + e])
            else:
                torch.addmm(bias, cols, wmat, out=out[bi * hw + s:bi * hw + e])
    return out.view(b, h, w, cout).permute(0, 3, 1, 2)
