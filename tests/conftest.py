"""Shared test helpers: small synthetic images, weight availability, quiet threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
FIXTURES = Path(__file__).parent / "fixtures"

#: loftr.tiny options without its inference defaults (resize to 640, Lucas-Kanade step), so
#: the small test images are matched as they are
LOFTR_TINY_RAW = {"resize": None, "subpixel": "none"}


def textured(h: int = 192, w: int = 256, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A blob-textured uint8 image with corners and edges (no external data)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(8, 40)), y0 + int(rng.integers(8, 40))),
                      float(rng.uniform(0, 1)), -1)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if channels == 3:
        img = np.stack([img, np.roll(img, 3, 1), 255 - img], -1)
    return img


def fixture_image(name: str) -> np.ndarray:
    import cv2

    return cv2.imread(str(FIXTURES / name))[..., ::-1].copy()


def need_weights(name: str) -> None:
    from featmatch import hub

    if hub.cached_path(name) is None:
        pytest.skip(f"weights for {name} not cached (run: featmatch download {name})")


@pytest.fixture
def tex():
    return textured()
