"""Translation-only Lucas-Kanade refinement (featmatch.ops.subpixel)."""

import cv2
import numpy as np
import pytest
import torch

from featmatch.ops.subpixel import refine_translation

from conftest import textured


def _pair(shift):
    img = cv2.GaussianBlur(textured(160, 200, seed=7, channels=1), (0, 0), 1.0).astype(np.float32) / 255
    moved = cv2.warpAffine(img, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (200, 160), flags=cv2.INTER_LINEAR)
    return torch.from_numpy(img)[None], torch.from_numpy(moved)[None]


def _points(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.uniform(20, [180, 140], size=(n, 2)), dtype=torch.float32)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (2.3, -1.6), (-0.5, 0.75)])
def test_recovers_subpixel_translations_without_bias(shift):
    fixed, moving = _pair(shift)
    p = _points()
    noise = torch.tensor(np.random.default_rng(1).uniform(-1, 1, size=(len(p), 2)), dtype=torch.float32)
    start = p + torch.tensor(shift) + noise
    out, ok = refine_translation(fixed, moving, p, start)
    assert ok.float().mean() > 0.8
    err = out[ok] - p[ok] - torch.tensor(shift)
    assert err.mean(0).abs().max() < 0.03  # no bias
    assert err.abs().mean() < 0.1
    assert torch.equal(out[~ok], start[~ok])  # rejected points are returned unchanged


def test_flat_patches_and_far_starts_are_left_alone():
    fixed = torch.full((1, 64, 64), 0.5)
    p = torch.tensor([[30.0, 30.0]])
    out, ok = refine_translation(fixed, fixed, p, p + 0.7)
    assert not ok.any() and torch.equal(out, p + 0.7)
    f, m = _pair((0.0, 0.0))
    q = _points(50)
    out, ok = refine_translation(f, m, q, q + 6.0, max_move=1.0)  # would have to move 6 px
    assert torch.equal(out[~ok], (q + 6.0)[~ok]) and ((out - q - 6.0).abs().amax(-1) <= 1.0).all()


def test_empty_and_shapes():
    f, m = _pair((0.0, 0.0))
    out, ok = refine_translation(f, m, torch.zeros(0, 2), torch.zeros(0, 2))
    assert out.shape == (0, 2) and ok.shape == (0,)
    with pytest.raises(Exception, match="p_moving"):
        refine_translation(f, m, torch.zeros(3, 2), torch.zeros(4, 2))
