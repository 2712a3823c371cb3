"""SIFT / ORB / AKAZE (OpenCV) baselines: smoke, shapes, invariants, bad input."""

import numpy as np
import pytest
import torch

import featmatch
from featmatch.errors import UsageError
from featmatch.models import classical
from featmatch.types import Features, Matches

from conftest import fixture_image, textured

NAMES = [n for n in ("sift", "orb", "akaze") if n in featmatch.list_models()]
DTYPES = {"sift": (torch.float32, 128), "orb": (torch.uint8, 32), "akaze": (torch.uint8, 61)}


def test_sift_and_orb_are_registered():
    assert {"sift", "orb"} <= set(featmatch.list_models())
    for n in NAMES:
        card = featmatch.model_card(n)
        assert card.weights is None and card.weights_origin == "none" and card.kind == "sparse"
        assert card.code_license == "Apache-2.0"


@pytest.mark.parametrize("name", NAMES)
def test_extract_shapes_and_invariants(name):
    img = textured(150, 190, seed=3)
    model = featmatch.load(name, top_k=200)
    f = model.extract(img)
    assert isinstance(f, Features) and not f.is_batched
    dtype, dim = DTYPES[name]
    n = len(f)
    assert 0 < n <= 200
    assert f.descriptors.shape == (n, dim) and f.descriptors.dtype == dtype
    assert f.keypoints.shape == (n, 2) and f.keypoint_scores.shape == (n,)
    assert f.scales.shape == (n,) and f.orientations.shape == (n,)
    assert f.image_size == (190, 150)
    assert (f.keypoints >= -0.5).all() and (f.keypoints[:, 0] <= 189.5).all() and (f.keypoints[:, 1] <= 149.5).all()
    assert torch.all(f.keypoint_scores[:-1] >= f.keypoint_scores[1:])  # strongest first
    assert (f.orientations >= 0).all() and (f.orientations < 2 * np.pi + 1e-6).all()
    if dtype == torch.float32:
        assert torch.allclose(f.descriptors.norm(dim=-1), torch.ones(n), atol=1e-5)
    g = model.extract(img)  # deterministic
    assert torch.equal(f.keypoints, g.keypoints) and torch.equal(f.descriptors, g.descriptors)


@pytest.mark.parametrize("name", NAMES)
def test_match_recovers_a_shift_in_caller_pixels(name):
    a = textured(160, 200, seed=1)
    b = np.roll(a, (5, 7), axis=(0, 1))
    for resize in (None, 150):
        m = featmatch.load(name, resize=resize).match(a, b)
        assert isinstance(m, Matches) and len(m) >= 20
        d = (m.points1 - m.points0).numpy()
        tol = 0.01 if resize is None else 1.0
        assert np.allclose(np.median(d, 0), (7, 5), atol=tol)
        assert (m.scores >= 0).all() and (m.scores <= 1).all()
        f0 = m.features0
        assert torch.equal(f0.keypoints[m.indices0], m.points0)


def test_rootsift_and_ratio_test():
    img = textured(140, 180, seed=4)
    f = featmatch.load("sift", rootsift=True).extract(img)
    assert (f.descriptors >= 0).all()
    assert torch.allclose(f.descriptors.norm(dim=-1), torch.ones(len(f)), atol=1e-5)
    a, b = textured(140, 180, seed=4), np.roll(textured(140, 180, seed=4), 3, axis=1)
    loose = featmatch.load("sift", matcher={"ratio": None}).match(a, b)
    strict = featmatch.load("sift", matcher={"ratio": 0.5}).match(a, b)
    assert len(strict) < len(loose)


@pytest.mark.parametrize("name", NAMES)
def test_batch_blank_and_tiny(name):
    model = featmatch.load(name)
    batch = torch.from_numpy(np.stack([textured(96, 128, seed=s) for s in (1, 2)])).permute(0, 3, 1, 2)
    f = model.extract(batch)
    assert f.is_batched and f.mask.shape[0] == 2 and f.descriptors.dtype == DTYPES[name][0]
    assert f[0].keypoints.shape[0] == int(f.mask[0].sum())
    blank = model.extract(np.full((64, 64), 128, np.uint8))
    assert len(blank) == 0 and blank.descriptors.shape == (0, DTYPES[name][1])
    tiny = model.match(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert len(tiny) == 0
    assert len(model.match_features(blank, blank)) == 0


def test_bad_options_raise():
    with pytest.raises(UsageError, match="top_kk"):
        featmatch.load("sift", top_kk=10)
    with pytest.raises(UsageError, match="top_k"):
        featmatch.load("orb", top_k=0)


def test_akaze_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(classical, "akaze_factory", lambda: None)
    with pytest.raises(classical.ModelUnavailableError, match="contrib"):
        classical.AKAZE()


@pytest.mark.parametrize("name", NAMES)
def test_pixel_convention_on_a_2x_upscale(name):
    """OpenCV's coordinate offsets are corrected: matching an image with its centre-aligned
    2x bilinear upscale gives points1 = (points0 + 0.5) * 2 - 0.5 without bias."""
    import cv2

    a = np.ascontiguousarray(fixture_image("xfeat_a.png")[40:160, 60:220])  # real photo crop, 160x120
    b = cv2.resize(a, (320, 240), interpolation=cv2.INTER_LINEAR)
    opts = {"threshold": 1e-4} if name == "akaze" else {}
    m = featmatch.load(name, **opts).match(a, b)
    r = (m.points1 - ((m.points0 + 0.5) * 2 - 0.5)).numpy()
    r = r[np.linalg.norm(r, axis=1) < 3]
    assert len(r) >= 20
    assert np.all(np.abs(np.median(r, 0)) < 0.15), np.median(r, 0)
