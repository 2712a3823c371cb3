"""Contract suite over every registered model, random weights, no network."""

import numpy as np
import pytest
import torch

import featmatch
from featmatch.types import Features, Matches

from conftest import textured


@pytest.fixture(scope="module", params=featmatch.list_models())
def model(request):
    torch.manual_seed(0)
    return featmatch.load(request.param, pretrained=False)


def test_match_contract(model):
    a = textured(160, 224, seed=1)
    b = np.roll(a, (5, 7), axis=(0, 1))
    m = model.match(a, b)
    assert isinstance(m, Matches)
    k = len(m)
    assert m.points0.shape == (k, 2) and m.points1.shape == (k, 2) and m.scores.shape == (k,)
    if k:
        assert float(m.points0[:, 0].min()) >= -0.5 and float(m.points0[:, 0].max()) <= 224 - 0.5
        assert float(m.points0[:, 1].max()) <= 160 - 0.5


def test_extract_contract(model):
    if not hasattr(model, "extract"):
        pytest.skip("dense matcher")
    f = model.extract(textured(100, 130, seed=2))
    assert isinstance(f, Features) and not f.is_batched
    assert f.image_size == (130, 100)
    if len(f) and f.descriptors.is_floating_point():
        assert torch.allclose(f.descriptors.norm(dim=-1), torch.ones(len(f)), atol=1e-4)
    if len(f):
        assert (f.keypoints >= -0.5).all() and (f.keypoints[:, 0] <= 129.5).all() and (f.keypoints[:, 1] <= 99.5).all()


def test_blank_and_tiny_images_give_empty_results(model):
    blank = np.full((64, 64, 3), 127, np.uint8)
    m = model.match(blank, blank)  # any count is acceptable; it must not crash
    assert isinstance(m, Matches) and m.points0.shape[1:] == (2,)
    tiny = np.zeros((1, 1), np.uint8)
    m = model.match(tiny, tiny)
    assert len(m) == 0
