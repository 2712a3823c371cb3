"""Reading images and turning anything image-like into a ``(B, C, H, W)`` float tensor.

All functions here either return a valid image or raise :class:`ImageReadError` /
:class:`UsageError` with a one-line message naming the file or the argument and the fix.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageReadError, UsageError

log = logging.getLogger(__name__)

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]

#: Images with more pixels than this are downscaled (with a warning) by the extractors.
MAX_PIXELS_DEFAULT = 8_000_000


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an image file as RGB (or grey) ``uint8`` / ``float32`` numpy array.

    8-bit files give ``uint8``; 16-bit files give ``float32`` in [0, 1]. Alpha is dropped.

    Shape:
        returns ``(H, W, 3)`` for colour files, ``(H, W)`` for grey ones.

    Raises:
        ImageReadError: missing, empty, directory, corrupt or unsupported file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"image not found: {p}")
    if p.is_dir():
        raise ImageReadError(f"expected an image file but got a directory: {p}")
    if p.stat().st_size == 0:
        raise ImageReadError(f"image file is empty (0 bytes): {p}")
    import cv2

    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt or not an image; use PNG, JPEG, PPM, TIFF...): {p}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        else:
            raise ImageReadError(f"unsupported number of channels ({img.shape[2]}): {p}")
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype in (np.float32, np.float64):
        img = img.astype(np.float32)
        mx = float(np.nanmax(img)) if img.size else 0.0
        if mx > 1.0:
            img = img / mx
    elif img.dtype != np.uint8:
        raise ImageReadError(f"unsupported pixel type {img.dtype}: {p}")
    return np.ascontiguousarray(img)


def _array_to_tensor(a: np.ndarray, name: str) -> torch.Tensor:
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.number)):
        raise UsageError(f"{name}: unsupported array dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise UsageError(f"{name}: array of shape {a.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.shape[2] == 4:
        a = a[..., :3]
    if a.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    elif a.dtype == np.uint16:
        t = torch.from_numpy(a.astype(np.float32) / 65535.0)
    elif np.issubdtype(a.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    else:
        raise UsageError(f"{name}: unsupported array dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")
    return t.permute(2, 0, 1)[None]


def to_tensor(image: ImageLike, *, name: str = "image", device: Any = None) -> torch.Tensor:
    """Convert a path, numpy array or tensor to a float32 ``(B, C, H, W)`` tensor in [0, 1].

    Accepts: a file path; numpy ``(H, W)``, ``(H, W, 3|4)`` (RGB, uint8 / uint16 / float in
    [0, 1]); tensors ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` (float in [0, 1] or uint8).
    C is 1 (grey) or 3 (RGB); models convert to grey themselves when they need to.

    Raises:
        ImageReadError / UsageError with a one-line message.
    """
    if isinstance(image, (str, os.PathLike)):
        t = _array_to_tensor(read_image(image), str(image))
    elif isinstance(image, np.ndarray):
        t = _array_to_tensor(image, name)
    elif isinstance(image, torch.Tensor):
        t = image
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t[None]
        elif t.dim() != 4:
            raise UsageError(f"{name}: tensor of shape {tuple(image.shape)} is not an image; expected (H, W), (C, H, W) or (B, C, H, W)")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.dtype == torch.bool or not (t.is_floating_point()):
            raise UsageError(f"{name}: unsupported tensor dtype {t.dtype}; use float in [0, 1] or uint8")
        else:
            t = t.float()
        if t.shape[1] == 4:
            t = t[:, :3]
        if t.shape[1] not in (1, 3):
            raise UsageError(f"{name}: tensor has {t.shape[1]} channels; expected 1 (grey) or 3 (RGB) in dim 1 of (B, C, H, W)")
    else:
        raise UsageError(f"{name}: expected a path, numpy array or torch tensor, got {type(image).__name__}")
    if t.numel() == 0:
        raise UsageError(f"{name}: image is empty (shape {tuple(t.shape)})")
    mn, mx = (float(v) for v in torch.aminmax(t))  # one pass; NaN and inf propagate
    if not (math.isfinite(mn) and math.isfinite(mx)):
        raise UsageError(f"{name}: image contains NaN or infinite values")
    if mx > 1.0 + 1e-3:
        raise UsageError(f"{name}: float image values go up to {mx:g}; expected [0, 1] (divide by 255)")
    if device is not None:
        t = t.to(device)
    return t.contiguous()


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """Average the channels: ``(B, C, H, W) -> (B, 1, H, W)``."""
    return x if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)


def resize_image(x: torch.Tensor, size_hw: tuple[int, int], *, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of a ``(B, C, H, W)`` tensor to ``(h, w)``."""
    if tuple(x.shape[-2:]) == tuple(size_hw):
        return x
    return F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False, antialias=antialias)


def fit_size(h: int, w: int, *, long_side: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
    """Target ``(h, w)`` so that the long side is ``long_side`` (if given) and the pixel
    count is at most ``max_pixels``; aspect ratio kept, at least 1 px per side."""
    s = 1.0
    if long_side:
        s = long_side / max(h, w)
    if max_pixels and h * w * s * s > max_pixels:
        s = (max_pixels / (h * w)) ** 0.5
    if s == 1.0:
        return h, w
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def scale_points(points: torch.Tensor, scale_xy: Any) -> torch.Tensor:
    """Map points of a resized image back to the original: ``(p + 0.5) * s - 0.5``.

    ``scale_xy`` is ``original_size / resized_size`` per axis, ``(sx, sy)`` or a tensor
    broadcastable to ``points``.
    """
    s = torch.as_tensor(scale_xy, dtype=points.dtype, device=points.device)
    return (points + 0.5) * s - 0.5
