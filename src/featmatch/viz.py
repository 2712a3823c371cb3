"""Match visualisation: two images side by side, inliers green, outliers red.

Drawn with OpenCV (imported lazily) and written atomically.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np

from .errors import UsageError
from .image import read_image
from .io import atomic_path


def _as_uint8_rgb(image: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if hasattr(image, "detach"):  # tensor (C, H, W) / (1, C, H, W)
        t = image.detach().cpu()
        if t.dim() == 4:
            t = t[0]
        if t.dim() == 3:
            t = t.permute(1, 2, 0)
        image = t.numpy()
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] < 3:
        raise UsageError(f"cannot draw an image of shape {a.shape}")
    return np.ascontiguousarray(a[..., :3])


#: default bound on the width and height of a match image (an 8000x6000 pair would
#: otherwise give a 16000x6000 canvas, >100 MB as PNG)
MAX_SIZE_DEFAULT = 2400


def draw_matches(image0: Any, image1: Any, points0: Any, points1: Any,
                 inliers: Optional[Any] = None, *, max_lines: Optional[int] = 2000, gap: int = 10,
                 title: Optional[str] = None, inliers_only: bool = False,
                 max_size: Optional[int] = MAX_SIZE_DEFAULT) -> np.ndarray:
    """Side-by-side RGB canvas with match lines (green inliers, red outliers, or cyan when
    no inlier mask is given).

    Args:
        max_lines: draw at most this many matches, an even spread over them (None: all).
        inliers_only: draw only the inliers (needs ``inliers``).
        max_size: downscale the canvas so its width and height are at most this many
            pixels (None: full size). Lines, dots and the title scale with the canvas.

    Shape:
        points0, points1: ``(K, 2)``; inliers: ``(K,)`` bool or None. Returns ``(H, W, 3)``
        uint8.
    """
    import cv2

    a, b = _as_uint8_rgb(image0), _as_uint8_rgb(image1)
    p0 = np.asarray(points0.detach().cpu() if hasattr(points0, "detach") else points0, dtype=np.float64).reshape(-1, 2)
    p1 = np.asarray(points1.detach().cpu() if hasattr(points1, "detach") else points1, dtype=np.float64).reshape(-1, 2)
    if len(p0) != len(p1):
        raise UsageError(f"points0 and points1 differ in length: {len(p0)} vs {len(p1)}")
    if max_lines is not None and max_lines < 0:
        raise UsageError(f"max_lines must be >= 0 or None, got {max_lines}")
    if max_size is not None and max_size < 64:
        raise UsageError(f"max_size must be >= 64 pixels or None, got {max_size}")
    inl = None if inliers is None else np.asarray(inliers).astype(bool).reshape(-1)
    if inl is not None and len(inl) != len(p0):
        raise UsageError(f"inliers has {len(inl)} entries for {len(p0)} matches")
    if inliers_only and inl is None:
        raise UsageError("inliers_only needs an inlier mask (fit a geometry: --geometry homography|fundamental)")
    h = max(a.shape[0], b.shape[0])
    full_w = a.shape[1] + gap + b.shape[1]
    s = 1.0
    if max_size is not None and max(h, full_w) > max_size:
        s = min(max_size / h, (max_size - gap) / (a.shape[1] + b.shape[1]))
        size = lambda im: (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s)))  # noqa: E731
        a = cv2.resize(a, size(a), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size(b), interpolation=cv2.INTER_AREA)
        p0, p1 = (p0 + 0.5) * s - 0.5, (p1 + 0.5) * s - 0.5
        h = max(a.shape[0], b.shape[0])
    canvas = np.full((h, a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    off = a.shape[1] + gap
    canvas[: b.shape[0], off:] = b
    order = np.arange(len(p0)) if not inliers_only else np.flatnonzero(inl)
    if max_lines is not None and len(order) > max_lines:  # deterministic, even spread
        order = order[np.linspace(0, len(order) - 1, max_lines).astype(int)] if max_lines else order[:0]
    if inl is not None:  # outliers first so inliers are drawn on top
        order = order[np.argsort(inl[order], kind="stable")]
    shift = 4
    width = canvas.shape[1]
    thick = max(1, round(width / 1600))  # lines and dots grow with the canvas
    radius = 2 * thick
    for i in order:
        color = (0, 200, 255) if inl is None else ((40, 200, 40) if inl[i] else (230, 40, 40))
        x0, y0 = p0[i]
        x1, y1 = p1[i]
        pa = (int(round(x0 * 16)), int(round(y0 * 16)))
        pb = (int(round((x1 + off) * 16)), int(round(y1 * 16)))
        cv2.line(canvas, pa, pb, color, thick, cv2.LINE_AA, shift)
        cv2.circle(canvas, pa, radius * 16, color, -1, cv2.LINE_AA, shift)
        cv2.circle(canvas, pb, radius * 16, color, -1, cv2.LINE_AA, shift)
    if title:
        # text height ~2.5% of the canvas width, at least 14 px: readable at any size
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = max(14.0, 0.025 * width) / 22.0
        t = max(1, round(scale * 1.5))
        (_, th), _ = cv2.getTextSize(title, font, scale, t)
        org = (round(8 * max(1.0, scale)), round(8 * max(1.0, scale)) + th)
        cv2.putText(canvas, title, org, font, scale, (0, 0, 0), t + 2 * max(1, t // 2) + 1, cv2.LINE_AA)
        cv2.putText(canvas, title, org, font, scale, (255, 255, 255), t, cv2.LINE_AA)
    return canvas


def save_image(path: Union[str, os.PathLike], rgb: np.ndarray) -> None:
    """Write an RGB uint8 image atomically (format from the extension)."""
    import cv2

    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        raise UsageError(f"cannot write image {path}: unknown extension; use .png or .jpg")
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise UsageError(f"cannot write image {path}; use a .png or .jpg file name")


def save_matches_plot(path: Union[str, os.PathLike], image0: Any, image1: Any, points0: Any, points1: Any,
                      inliers: Optional[Any] = None, **kwargs: Any) -> None:
    """:func:`draw_matches` then :func:`save_image`."""
    save_image(path, draw_matches(image0, image1, points0, points1, inliers, **kwargs))
