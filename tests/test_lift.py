"""LIFT: networks, spatial transformers, softargmax, scale-space NMS, runtime, losses,
training steps, the patch data and the authors' descriptor file layout."""

import math

import numpy as np
import pytest
import torch

import featmatch
from featmatch.errors import UsageError, WeightsError
from featmatch.models.lift import (CROP_SCALE, LIFT, LIFTConfig, LIFTDescriptor, LIFTDetector, LIFTNet, LIFTOrientation,
                                   SubtractiveNorm, crop_patch, gather_mapped, ghh, patch_to_det_coords,
                                   sample_mapped, scale_space_nms)
from featmatch.ops.softargmax import soft_max_score, softargmax2d
from featmatch.train.losses.lift import (classification_loss, descriptor_batch_hinge_loss, descriptor_hinge_loss,
                                         detector_loss, mining_ratio, orientation_loss, overlap_loss)

from conftest import textured


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions: one thread is faster (and fairer on a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- networks
def test_ghh_matches_hand_computation():
    x = torch.arange(16.0).reshape(1, 16, 1, 1)
    assert ghh(x).item() == pytest.approx(3 - 7 + 11 - 15)  # group maxima 3, 7, 11, 15
    y = torch.randn(2, 32, 3)
    g = y.reshape(2, 2, 4, 4, 3).amax(3)
    assert torch.allclose(ghh(y), g[:, :, 0] - g[:, :, 1] + g[:, :, 2] - g[:, :, 3])


def test_network_shapes():
    torch.manual_seed(0)
    det, ori, desc = LIFTDetector(), LIFTOrientation(), LIFTDescriptor()
    assert det(torch.rand(2, 1, 48, 48)).shape == (2, 1, 24, 24)
    xy, score = det.patch_forward(torch.rand(3, 1, 128, 128))
    assert xy.shape == (3, 2) and score.shape == (3,)
    assert (xy.abs() <= 6.5 / 23.5 + 1e-5).all()  # the detector moves the point by at most 0.277
    assert ori(torch.rand(5, 1, 64, 64)).shape == (5,)
    d = desc(torch.rand(4, 1, 64, 64))
    assert d.shape == (4, 128) and (d >= 0).all() and (d <= 4 + 1e-4).all()  # tanh + L2 pool 4x4


def test_detector_mapping_constants():
    j = torch.tensor([[0.0, 13.0]])
    assert torch.allclose(patch_to_det_coords(j), torch.tensor([[17 / 23.5 - 1, 30 / 23.5 - 1]]))


def test_subtractive_norm_of_constant_is_zero_including_borders():
    x = torch.full((1, 3, 9, 11), 2.5)
    assert SubtractiveNorm()(x).abs().max() < 1e-5


# --------------------------------------------------------------------------- softargmax
def test_softargmax_matches_hand_computation():
    s = torch.tensor([[0.0, 0.1, 0.0], [0.2, 0.0, 0.0]])
    w = torch.exp(10 * s)
    w = w / w.sum()
    x = (w * torch.tensor([0.0, 1.0, 2.0])).sum()
    y = (w * torch.tensor([[0.0], [1.0]])).sum()
    assert torch.allclose(softargmax2d(s[None, None], 10.0), torch.stack([x, y])[None], atol=1e-6)
    lme = 0.2 + math.log(float(torch.exp(10 * (s - 0.2)).mean())) / 10
    assert soft_max_score(s[None], 10.0).item() == pytest.approx(lme, abs=1e-6)
    # a sharp peak: the argmax
    p = torch.full((1, 1, 5, 7), -10.0)
    p[0, 0, 3, 5] = 10.0
    assert torch.allclose(softargmax2d(p), torch.tensor([[5.0, 3.0]]))


# --------------------------------------------------------------------------- Crop / Rot
def test_crop_identity_and_gradients():
    P = torch.rand(2, 1, 16, 16, requires_grad=True)
    out = crop_patch(P, torch.zeros(2, 2), None, size=16, scale=1.0)
    assert torch.allclose(out, P, atol=1e-5)
    xy = torch.zeros(2, 2, requires_grad=True)
    a = torch.zeros(2, requires_grad=True)
    crop_patch(P, xy, a, size=8).sum().backward()
    assert P.grad.abs().sum() > 0 and xy.grad is not None and a.grad is not None


def test_rot_equivariance_on_rotated_patch():
    torch.manual_seed(0)
    P = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 132, 132), 5, 1)  # smooth, 128x128
    Pr = torch.rot90(P, 1, dims=(-2, -1))  # content rotated by -90 deg (x right, y down)
    alpha = -math.pi / 2
    xy = torch.tensor([[0.1, -0.15]])
    rxy = torch.tensor([[math.cos(alpha) * 0.1 + math.sin(alpha) * 0.15, math.sin(alpha) * 0.1 - math.cos(alpha) * 0.15]])
    for theta in (0.0, 0.7, -2.0):
        a = crop_patch(P, xy, torch.tensor([theta]))
        b = crop_patch(Pr, rxy, torch.tensor([theta + alpha]))
        assert torch.allclose(a, b, atol=1e-4)
    # an orientation estimator that is exactly equivariant (the angle of the intensity
    # centroid) + Rot gives the same rotated crop of the rotated patch
    def centroid_angle(c):
        u = torch.linspace(-1, 1, c.shape[-1])
        gy, gx = torch.meshgrid(u, u, indexing="ij")
        w = c[:, 0] - c[:, 0].mean((-2, -1), keepdim=True)
        return torch.atan2((w * gy).sum((-2, -1)), (w * gx).sum((-2, -1)))

    t1 = centroid_angle(crop_patch(P, xy))
    t2 = centroid_angle(crop_patch(Pr, rxy))
    assert abs(math.remainder(float(t2 - t1) - alpha, 2 * math.pi)) < 1e-3
    assert torch.allclose(crop_patch(P, xy, t1), crop_patch(Pr, rxy, t2), atol=1e-3)


# --------------------------------------------------------------------------- NMS over scales
def _maps(values, h=21, w=21, y=10, x=10):
    maps = []
    for v in values:
        m = torch.zeros(h, w)
        m[y, x] = v
        m[:2], m[-2:], m[:, :2], m[:, -2:] = -math.inf, -math.inf, -math.inf, -math.inf
        maps.append(m)
    return maps


def test_scale_space_nms():
    out = scale_space_nms(_maps([1.0, 1.0, 2.0, 1.0, 1.0]), radius=3, levels=2)
    assert len(out) == 1 and out[0][0] == 2 and out[0][1].tolist() == [[10, 10]]
    assert scale_space_nms(_maps([1.0, 1.0, 2.0, 3.0, 1.0]), 3, 2) == []  # beaten one level up
    assert scale_space_nms(_maps([3.0, 1.0, 2.0, 1.0, 1.0]), 3, 2) == []  # beaten two levels down
    assert scale_space_nms(_maps([2.0, 1.0, 1.0, 1.0, 1.0]), 3, 2) == []  # first levels produce nothing
    # a peak whose window touches the invalid (-inf) border is dropped
    assert scale_space_nms(_maps([1.0, 1.0, 2.0, 1.0, 1.0], y=3, x=10), 3, 2) == []
    # two peaks in one level closer than the window: only the larger
    maps = _maps([0.5, 0.5, 2.0, 0.5, 0.5])
    maps[2][10, 12] = 1.5
    out = scale_space_nms(maps, 3, 2)
    assert out[0][1].tolist() == [[10, 10]]


# --------------------------------------------------------------------------- runtime
@pytest.fixture(scope="module")
def lift_random():
    torch.manual_seed(0)
    return featmatch.load("lift", pretrained=False, top_k=50, bf16=False)


def test_extract_shapes_and_invariants(lift_random):
    img = textured(120, 160, seed=3)
    f = lift_random.extract(img)
    n = len(f)
    assert 0 < n <= 50
    assert f.descriptors.shape == (n, 128) and f.scales.shape == (n,) and f.orientations.shape == (n,)
    assert torch.allclose(f.descriptors.norm(dim=-1), torch.ones(n), atol=1e-4)
    assert (f.keypoints[:, 0] >= -0.5).all() and (f.keypoints[:, 0] <= 159.5).all()
    assert (f.scales >= 2 * 0.9).all() and (f.orientations.abs() <= math.pi + 1e-5).all()
    assert (f.keypoint_scores[:-1] >= f.keypoint_scores[1:]).all()


@pytest.mark.parametrize("sigma", [3.0, 6.0])
def test_dog_initialised_detector_finds_a_blob_at_its_scale(sigma):
    """featmatch's DoG warm start: a bright Gaussian blob of scale sigma is the best point,
    found at its centre, at about its scale (SIFT's convention: the DoG level's sigma)."""
    torch.manual_seed(0)
    m = featmatch.load("lift", pretrained=False, top_k=5, bf16=False)
    m.net.detector.init_dog(generator=torch.Generator().manual_seed(0))
    h, w, cx, cy = 128, 160, 83.0, 61.0
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    img = 0.3 + 0.5 * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    f = m.extract(img[None].expand(3, -1, -1).contiguous())
    assert len(f) >= 1
    assert (f.keypoints[0] - torch.tensor([cx, cy])).norm() < 1.0
    s = float(f.scales[0]) / 2  # Features.scales are 2 sigma
    assert sigma / 1.5 < s < sigma * 1.5, s


def test_describe_at_given_points_is_batched_consistently(lift_random):
    g = torch.from_numpy(textured(96, 96, seed=4, channels=1)).float()[None, None] / 255
    xy = torch.tensor([[40.0, 50.0], [60.0, 30.0], [20.3, 70.9]])
    sigma = torch.tensor([1.5, 3.0, 6.0])
    with torch.no_grad():
        a_all, d_all = lift_random.describe(g, xy, sigma)
        a_one, d_one = lift_random.describe(g, xy[1:2], sigma[1:2])
    assert torch.allclose(d_all[1], d_one[0], atol=1e-4) and torch.allclose(a_all[1], a_one[0], atol=1e-5)


def test_bf16_inference_is_close_to_float32(lift_random):
    g = torch.from_numpy(textured(96, 96, seed=4, channels=1)).float()[None, None] / 255
    xy, sigma = torch.tensor([[40.0, 50.0], [60.0, 30.0]]), torch.tensor([2.0, 4.0])
    fast = featmatch.load("lift", pretrained=False, bf16=True)
    fast.load_state_dict(lift_random.state_dict())
    with torch.no_grad():
        _, d32 = lift_random.describe(g, xy, sigma, torch.zeros(2))
        _, d16 = fast.describe(g, xy, sigma, torch.zeros(2))
    assert torch.nn.functional.cosine_similarity(d32, d16).min() > 0.99


def test_support_scale_widens_the_crops_not_the_reported_scales(lift_random):
    g = torch.from_numpy(textured(128, 128, seed=6, channels=1)).float()[None, None] / 255
    base, wide = (featmatch.load("lift", pretrained=False, top_k=50, bf16=False, support_scale=k) for k in (1.0, 1.5))
    base.load_state_dict(lift_random.state_dict())
    wide.load_state_dict(lift_random.state_dict())
    xy, sigma = torch.tensor([[60.0, 64.0], [40.0, 70.0]]), torch.tensor([2.0, 3.0])
    with torch.no_grad():
        a1, d1 = wide.describe(g, xy, sigma)
        a0, d0 = base.describe(g, xy, 1.5 * sigma)
    assert torch.allclose(a1, a0) and torch.allclose(d1, d0)
    img = (g[0, 0].numpy() * 255).astype(np.uint8)
    f0, f1 = base.extract(img), wide.extract(img)
    assert len(f0) > 0 and torch.equal(f0.keypoints, f1.keypoints) and torch.equal(f0.scales, f1.scales)
    assert not torch.allclose(f0.descriptors, f1.descriptors)
    with pytest.raises(featmatch.errors.UsageError, match="support_scale"):
        featmatch.load("lift", pretrained=False, support_scale=0)


def test_weights_carry_their_trained_support_scale(lift_random, tmp_path):
    """A weight file with a ``support_scale`` entry (export_lift.py of a --support-scale run)
    sets the default crops; an explicit option overrides it; files without the entry, and the
    authors' descriptor, use the paper's 1.0; a bad entry is a one-line WeightsError."""
    from featmatch.models.lift import SUPPORT_KEY

    g = torch.from_numpy(textured(128, 128, seed=6, channels=1)).float()[None, None] / 255
    xy, sigma = torch.tensor([[60.0, 64.0], [40.0, 70.0]]), torch.tensor([2.0, 3.0])
    state = {f"net.{k}": v for k, v in lift_random.net.state_dict().items()}
    plain, marked = tmp_path / "plain.pt", tmp_path / "marked.pt"
    torch.save(state, plain)
    torch.save({**state, SUPPORT_KEY: torch.tensor(1.4)}, marked)
    kw = dict(top_k=50, bf16=False)
    m_plain = featmatch.load("lift", weights=str(plain), **kw)
    m_marked = featmatch.load("lift", weights=str(marked), **kw)
    m_forced = featmatch.load("lift", weights=str(marked), support_scale=1.0, **kw)
    m_wide = featmatch.load("lift", weights=str(plain), support_scale=1.4, **kw)
    assert (m_plain.support_scale, m_marked.support_scale, m_forced.support_scale) == (1.0, 1.4, 1.0)
    with torch.no_grad():
        d = {k: m.describe(g, xy, sigma)[1] for k, m in
             {"plain": m_plain, "marked": m_marked, "forced": m_forced, "wide": m_wide}.items()}
    assert torch.equal(d["marked"], d["wide"]) and torch.equal(d["forced"], d["plain"])
    assert not torch.allclose(d["marked"], d["plain"])
    bad = tmp_path / "bad.pt"
    torch.save({**state, SUPPORT_KEY: torch.tensor(40.0)}, bad)
    with pytest.raises(WeightsError, match="support_scale"):
        featmatch.load("lift", weights=str(bad), **kw)


def test_detector_score_maps_stay_float32_under_bf16(lift_random):
    """bf16 speeds up ORI / DESC only: the detector's score maps (NMS, sub-pixel fit) are the
    float32 ones unless detector_bf16=True."""
    g = lift_random.net.detector.normalize(torch.from_numpy(textured(96, 96, seed=4, channels=1)).float()[None, None] / 255)
    fast = featmatch.load("lift", pretrained=False, bf16=True)
    fast.load_state_dict(lift_random.state_dict())
    both = featmatch.load("lift", pretrained=False, bf16=True, detector_bf16=True)
    both.load_state_dict(lift_random.state_dict())
    with torch.no_grad():
        ref, a, b = (m.score_pyramid(g) for m in (lift_random, fast, both))
    assert len(ref) == len(a) == len(b) > 0
    for r, x in zip(ref, a):
        assert torch.equal(r["map"], x["map"])
    assert any(not torch.equal(r["map"], x["map"]) for r, x in zip(ref, b))


@pytest.mark.parametrize("bf16", [False, True])
def test_descriptor_inference_path_equals_the_autograd_path(bf16):
    """DESC runs in place at inference (no autograd): the same values as the training path."""
    from featmatch.models.lift import LIFTDescriptor

    torch.manual_seed(0)
    d = LIFTDescriptor()
    x = torch.rand(6, 1, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        train = d(x)
        assert train.requires_grad
        with torch.inference_mode():
            infer = d(x)
    assert torch.equal(train.detach(), infer)
    train.sum().backward()  # the autograd path still differentiates
    assert d.conv1.weight.grad is not None and d.conv1.weight.grad.abs().sum() > 0
    d.conv1.requires_grad_(False)  # partly frozen: still the autograd path for the rest
    d(x).sum().backward()
    assert d.conv3.weight.grad.abs().sum() > 0


def test_channels_last_networks_give_the_same_features(lift_random):
    """The default channels-last ORI / DESC weights (a speed setting) change nothing but
    float rounding; loading weights keeps the layout; the option is validated."""
    assert lift_random.net.descriptor.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    plain = featmatch.load("lift", pretrained=False, channels_last=False, bf16=False, top_k=50)
    plain.load_state_dict(lift_random.state_dict())
    assert plain.net.descriptor.conv2.weight.is_contiguous()
    assert lift_random.net.orientation.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    img = textured(96, 128, seed=7, channels=1)
    with torch.no_grad():
        f0, f1 = lift_random.extract(img), plain.extract(img)
    assert len(f0) > 0 and torch.equal(f0.keypoints, f1.keypoints)
    assert (f0.descriptors - f1.descriptors).abs().max() < 1e-4
    assert (f0.orientations - f1.orientations).abs().max() < 1e-3
    with pytest.raises(UsageError, match="channels_last"):
        featmatch.load("lift", pretrained=False, channels_last="yes")


def test_bf16_default_follows_hardware_bf16_not_onednn_emulation(monkeypatch):
    import featmatch.device as dev

    m = featmatch.load("lift", pretrained=False)
    cpu = torch.device("cpu")
    # an AVX-512 CPU without BF16: oneDNN would accept bf16 (emulated, ~2x slower) -> float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert not dev.cpu_native_bf16() and not m.use_bf16(cpu)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)  # Zen 4
    assert dev.cpu_native_bf16() and m.use_bf16(cpu)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)  # Sapphire Rapids
    assert dev.cpu_native_bf16() and not m.use_bf16(torch.device("cuda"))
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # an older torch without the probes
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert not dev.cpu_native_bf16()
    assert featmatch.load("lift", pretrained=False, bf16=True).use_bf16(cpu)  # forced either way


def test_bad_inputs(lift_random):
    f = lift_random.extract(np.zeros((8, 8), np.uint8))  # too small: empty, no crash
    assert len(f) == 0 and f.descriptors.shape == (0, 128)
    f = lift_random.extract(np.full((80, 80), 127, np.uint8))  # blank: no keypoints, no crash
    assert len(f) == 0
    m = lift_random.match(np.full((80, 80), 127, np.uint8), textured(80, 80))
    assert len(m) == 0
    with pytest.raises(featmatch.errors.UsageError):
        featmatch.load("lift", pretrained=False, nms_radius=0)
    with pytest.raises(featmatch.errors.UsageError):
        featmatch.load("lift", pretrained=False, top_kk=3)


def test_sample_mapped_is_bilinear_between_levels():
    # a plane on a 9x13 level, looked up from positions of a 17x25 level: exact where
    # bilinear is exact, equal to gather_mapped where the mapped position is a pixel
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(13.0), indexing="ij")
    m = 2 * xx - 3 * yy + 1
    x, y = torch.tensor([0.0, 3.0, 7.5, 24.0]), torch.tensor([0.0, 5.0, 9.25, 16.0])
    fx, fy = x * 12 / 24, y * 8 / 16
    assert torch.allclose(sample_mapped(m, (17, 25), x, y), 2 * fx - 3 * fy + 1)
    on_pixel = torch.tensor([0.0, 4.0, 24.0]), torch.tensor([0.0, 8.0, 16.0])
    assert torch.equal(sample_mapped(m, (17, 25), *on_pixel), gather_mapped(m, (17, 25), *on_pixel))
    m[4, 6] = float("-inf")  # the padding of a score map poisons the lookups that touch it
    v = sample_mapped(m, (17, 25), torch.tensor([12.5, 0.0, 30.0]), torch.tensor([8.5, 0.0, 0.0]))
    assert v[0] == float("-inf") and torch.isfinite(v[1]) and v[2] == float("-inf")  # outside -> -inf


def test_large_image_scales_start_at_two():
    m = LIFT(LIFTConfig())  # the authors' runtime: 5 scales per octave, sigma 1 .. 16
    assert m.log2_scales(480, 640)[0] == 0 and len(m.log2_scales(480, 640)) == 21
    assert m.log2_scales(2000, 3000)[0] == 1 and len(m.log2_scales(2000, 3000)) == 16
    m = LIFT(LIFTConfig(scales_per_octave=3))  # SIFT's pyramid density
    assert m.log2_scales(480, 640)[0] == 0 and len(m.log2_scales(480, 640)) == 13
    assert m.log2_scales(2000, 3000)[0] == 1 and len(m.log2_scales(2000, 3000)) == 10


# --------------------------------------------------------------------------- losses
def test_descriptor_hinge_loss_and_mining():
    d1 = torch.zeros(4, 2)
    d2 = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 0.0], [3.0, 0.0]])
    d3 = torch.tensor([[0.0, 5.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]])
    loss, _ = descriptor_hinge_loss(d1, d2, d3, margin=4.0)
    pos = (1 + 2 + 0 + 3) / 4
    neg = (0 + 3 + 1 + 3.5) / 4
    assert loss.item() == pytest.approx(pos + neg)
    hard, _ = descriptor_hinge_loss(d1, d2, d3, margin=4.0, mining_ratio=2)
    assert hard.item() == pytest.approx((3 + 2) / 2 + (3.5 + 3) / 2)
    sep, _ = descriptor_hinge_loss(d1[:2], d2[:2], d3, margin=4.0, d1_neg=d1)
    assert sep.item() == pytest.approx(1.5 + neg)
    assert [mining_ratio(s, 5000) for s in (0, 4999, 5000, 10000, 50000)] == [1, 1, 2, 4, 4]


def test_descriptor_batch_hinge_loss_mines_the_whole_batch():
    d1 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    d2 = torch.tensor([[1.0, 0.0], [10.0, 2.0], [0.0, 10.0]])
    d3 = torch.tensor([[0.0, 9.0], [20.0, 0.0], [3.0, 0.0]])
    loss, logs = descriptor_batch_hinge_loss(d1, d2, d3, margin=4.0)
    pos = (1 + 2 + 0) / 3
    # anchors d1: nearest of the other quadruplets' d2 and of every d3
    hard1 = [3.0, 7.0, 1.0]  # d1[0]: d3[2] at 3; d1[1]: d3[2] at 7; d1[2]: d3[0] at 1
    # anchors d2: nearest of the other quadruplets' d1
    hard2 = [math.hypot(9, 0), math.hypot(10, 2), 10.0]  # d2[0]: d1[1]; d2[1]: d1[0]; d2[2]: d1[0]
    neg = sum(max(0.0, 4 - h) for h in hard1 + hard2) / 6
    assert loss.item() == pytest.approx(pos + neg)
    assert logs["neg_active"] == pytest.approx(2 / 6)
    # the own P2 is never a negative: identical positives give no hinge term
    same, _ = descriptor_batch_hinge_loss(d1, d1.clone(), d1 + 100.0, margin=4.0)
    assert same.item() == pytest.approx(0.0)
    # gradients stay finite with coinciding descriptors (masked zero distances)
    a = torch.zeros(3, 2, requires_grad=True)
    descriptor_batch_hinge_loss(a, a * 1.0, a * 1.0)[0].backward()
    assert torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="at least 2"):
        descriptor_batch_hinge_loss(d1[:1], d2[:1], d3[:1])


def test_orientation_and_classification_losses():
    assert orientation_loss(torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])).item() == pytest.approx(3.0)
    s = torch.tensor([[1.0, 0.5, -1.0, -1.0], [2.0, 2.0, 2.0, 0.0]])
    want = ((0 + 0.25 + 4) / 6 + 0 / 2 + (0 + 0 + 0) / 6 + 1 / 2) / 2
    assert classification_loss(s).item() == pytest.approx(want)
    assert detector_loss(s, torch.tensor(1.0), gamma=2.0).item() == pytest.approx(2 * want + 1)


def test_overlap_loss_eq11():
    z = torch.zeros(3, 2)
    assert overlap_loss(z, z, z, z).item() == pytest.approx(0.0, abs=1e-6)
    a = torch.tensor([[0.5, 0.0]])
    # shifted by half a side: IoU = 0.5 / 1.5
    assert overlap_loss(a, torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2)).item() == pytest.approx(1 - 1 / 3)
    far = torch.tensor([[3.0, 1.0]])  # |dx| + |dy| = 4 > 2 sides; union 2
    assert overlap_loss(far, torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2)).item() == pytest.approx(1 + 2 / math.sqrt(2))
    # P2's offset is rotated into P1's frame
    o1 = torch.tensor([[0.3, 0.0]])
    o2 = torch.tensor([[0.0, 0.3]])  # the same offset seen in a frame rotated by +90 deg
    assert overlap_loss(o1, torch.zeros(1, 2), o2, torch.zeros(1, 2), torch.tensor([-math.pi / 2])).item() == pytest.approx(0, abs=1e-6)


# --------------------------------------------------------------------------- data + training
@pytest.fixture(scope="module")
def quads(tmp_path_factory):
    import cv2

    from featmatch.data.lift_patches import LIFTPatchConfig, LIFTQuadruplets, build_patch_set

    folder = tmp_path_factory.mktemp("photos")
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), textured(240, 320, seed=10 + i))
    cfg = LIFTPatchConfig(size=(320, 240), per_pair=8, max_sigma=6.0)
    from featmatch.data import list_images

    info = build_patch_set(list_images(folder), folder / "p.npz", 16, cfg)
    assert info["quadruplets"] == 16
    return LIFTQuadruplets(folder / "p.npz")


def test_patch_set_geometry(quads):
    P = quads.P[:, :, None].float() / 255
    c = [crop_patch(P[:, k], quads.xy[:, k], quads.angle[:, k]) for k in range(3)]

    def ncc(u, v):
        u, v = u.flatten(1), v.flatten(1)
        u, v = u - u.mean(1, keepdim=True), v - v.mean(1, keepdim=True)
        return (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1) + 1e-6)

    assert ncc(c[0], c[1]).median() > 0.8  # same point, two views, rotated by the mapped orientations
    assert ncc(c[0], c[1]).median() > ncc(c[0], c[2]).median() + 0.3
    item = quads[17]
    assert item["P"].shape == (4, 1, 128, 128) and item["xy"].shape == (4, 2) and int(item["index"]) == 17
    assert (quads.xy.abs() <= 0.21).all()  # jitter <= 20 % of the half patch


@pytest.mark.parametrize("stage", ["desc", "desc-batch", "ori-pretrain", "ori", "det-pretrain", "det"])
def test_training_steps_lower_each_loss(quads, stage):
    from featmatch.train.recipes.lift import LIFTRecipe, LIFTRecipeConfig

    torch.manual_seed(0)
    net = LIFTNet()
    name = stage.split("-")[0]
    pre = 10 ** 6 if stage.endswith("pretrain") else 0
    rec = LIFTRecipe(LIFTRecipeConfig(stage=name, pairs=6, mining_max=1.0, det_pretrain_steps=pre,
                                      ori_pretrain_steps=pre, negatives="batch" if stage == "desc-batch" else "pairs"),
                     batch_size=6)
    part = {"desc": net.descriptor, "ori": net.orientation, "det": net.detector}[name]
    opt = torch.optim.Adam(part.parameters(), lr={"desc": 1e-3, "ori": 1e-2, "det": 1e-3}[name])
    batch = {k: torch.stack([quads[i][k] for i in range(6)]) for k in ("P", "xy", "angle", "index")}
    losses = []
    for _ in range(10):
        loss, logs = rec.loss(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # ORI can only rotate the crops a random descriptor sees: a smaller but real decrease
    assert losses[-1] < (0.97 if stage == "ori" else 0.8) * losses[0], losses


@pytest.mark.parametrize("support", [1.0, 1.4])
def test_training_crops_equal_runtime_crops_at_any_support(support):
    """The recipe's Rot crop of a training patch P (support_scale s) samples the image where
    LIFT.describe samples it at runtime with the same support_scale."""
    import cv2

    from featmatch.data.lift_patches import _pyramid, extract_patch
    from featmatch.models.lift import LIFT
    from featmatch.train.recipes.lift import LIFTRecipe, LIFTRecipeConfig

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((240, 320)).astype(np.float32), (0, 0), 2.0)
    cx, cy, sig = 150.3, 120.7, 2.5
    P = torch.from_numpy(extract_patch(_pyramid(img), cx, cy, sig))[None, None]
    ang = torch.tensor([0.6])

    class Grab(torch.nn.Module):  # a "descriptor" that returns its input crop
        def forward(self, x):
            return x.flatten(1)

    net = LIFTNet()
    net.descriptor = Grab()
    train = LIFTRecipe(LIFTRecipeConfig(support_scale=support)).describe(net, P, torch.zeros(1, 2), ang)
    pyr = LIFT.image_pyramid(torch.from_numpy(img)[None, None], 4)
    run = LIFT.sample_patches(pyr, torch.tensor([[cx, cy]]), torch.tensor([sig * support]), ang).flatten(1)
    assert (train - run).abs().max() < 0.01
    wrong = LIFT.sample_patches(pyr, torch.tensor([[cx, cy]]), torch.tensor([sig * (2.4 - support)]), ang).flatten(1)
    assert (train - wrong).abs().max() > 0.05  # the check can fail: other supports sample elsewhere


def test_recipe_validation_metrics(quads):
    from featmatch.train.recipes.lift import LIFTRecipe, LIFTRecipeConfig

    net = LIFTNet()
    with torch.no_grad():
        v = LIFTRecipe(LIFTRecipeConfig(stage="det", val_quads=8), val_set=quads).validate(net)
    assert {"auc", "fpr95", "neg_dist", "ori_err_deg", "cls_acc", "iou", "nn_acc"} <= set(v)
    assert 0 <= v["auc"] <= 1 and 0 <= v["iou"] <= 1


def test_validation_nn_accuracy_ranks_against_every_candidate(quads):
    from featmatch.train.recipes.lift import LIFTRecipe, LIFTRecipeConfig, nn_accuracy

    d1 = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    d2 = torch.tensor([[0.1, 0.0], [0.4, 0.0], [0.0, 5.2]])  # d2[1] is nearer to d1[0] than to d1[1]
    d3 = torch.tensor([[9.0, 9.0], [5.1, 0.0], [0.0, 5.3]])  # d3[1] is d1[1]'s nearest
    assert nn_accuracy(d1, d2, d3) == pytest.approx(2 / 3)  # d1[0] -> d2[0], d1[1] -> d3[1], d1[2] -> d2[2]
    assert nn_accuracy(d1, d1, d1 + 100) == 1.0

    class Constant(torch.nn.Module):  # a descriptor that ignores the patch: only ties, first candidate wins
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def descriptor(self, crops):
            return torch.zeros(crops.shape[0], 4)

    with torch.no_grad():
        v = LIFTRecipe(LIFTRecipeConfig(stage="desc", val_quads=16), val_set=quads).validate(Constant())
    assert v["nn_acc"] == pytest.approx(1 / 16)


def test_negatives_option_is_checked():
    from featmatch.errors import UsageError
    from featmatch.train.recipes.lift import LIFTRecipe, LIFTRecipeConfig

    with pytest.raises(UsageError, match="negatives"):
        LIFTRecipe(LIFTRecipeConfig(negatives="all"))
    with pytest.raises(UsageError, match="support_scale"):
        LIFTRecipe(LIFTRecipeConfig(support_scale=5.0))
    with pytest.raises(UsageError, match="val_quads"):
        LIFTRecipe(LIFTRecipeConfig(val_quads=0))


# --------------------------------------------------------------------------- authors' descriptor file
def _theano_file(path, layers=(1, 5, 4, 7, 1, 5, 4, 7, 1, 5, 4)):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["layers"] = np.array(layers, np.float64)
        for i, (o, c, k) in ((1, (32, 1, 7)), (5, (64, 32, 6)), (9, (128, 64, 5))):
            f[f"l-{i}-weights"] = rng.normal(0, 0.1, (o, c, k, k)).astype(np.float32)
            f[f"l-{i}-bias"] = rng.normal(0, 0.1, (o,)).astype(np.float32)
        for i, k in ((3, 2), (7, 3), (11, 4)):
            f[f"l-{i}-kw"] = np.array([k], np.float64)
            f[f"l-{i}-kh"] = np.array([k], np.float64)
        for i, c in ((4, 32), (8, 64)):
            f[f"l-{i}-filter"] = (rng.uniform(0.5, 1, (5, 5)) / 25 / c).astype(np.float32)
        f["patch-mean"] = np.array([110.0], np.float32)
        f["patch-std"] = np.array([60.0], np.float32)


def test_authors_descriptor_file_loads(tmp_path):
    import h5py

    path = tmp_path / "desc.h5"
    _theano_file(path)
    m = featmatch.load("lift", pretrained=False, descriptor_weights=str(path))
    with h5py.File(path, "r") as f:
        w1 = torch.from_numpy(f["l-1-weights"][()])
        k4 = torch.from_numpy(f["l-4-filter"][()])
    d = m.net.descriptor
    assert torch.equal(d.conv1.weight, w1)  # flip_filters=False in the authors' code: no flip
    assert torch.allclose(d.norm1.kernel, k4 / k4.sum()) and d.mean.item() == 110.0 and d.std.item() == 60.0
    # the layer is a cross-correlation: check one output by hand
    x = torch.rand(1, 1, 64, 64)
    z = (x * 255 - 110.0) / 60.0
    want = (z[0, 0, :7, :7] * w1[3, 0]).sum() + d.conv1.bias[3]
    assert d.conv1(z)[0, 3, 0, 0].item() == pytest.approx(want.item(), abs=1e-4)
    # a model loaded with weights keeps the authors' descriptor
    state = {"net." + k: v for k, v in LIFTNet().state_dict().items()}
    m.load_weights({**state, "support_scale": torch.tensor(1.4)})
    assert torch.equal(m.net.descriptor.conv1.weight, w1)
    assert m.support_scale == 1.0  # the authors' descriptor was trained at the paper's support


def test_authors_descriptor_file_errors(tmp_path):
    path = tmp_path / "bad.h5"
    _theano_file(path, layers=(1, 5, 3))
    with pytest.raises(WeightsError, match="layer codes"):
        featmatch.load("lift", pretrained=False, descriptor_weights=str(path))
    with pytest.raises(WeightsError, match="cannot read"):
        featmatch.load("lift", pretrained=False, descriptor_weights=str(tmp_path / "missing.h5"))


def test_orientation_regression_loss():
    from featmatch.train.losses.lift import orientation_regression_loss

    t = torch.tensor([0.0, 1.0, -3.0])
    assert orientation_regression_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    assert orientation_regression_loss(t, t + math.pi).item() == pytest.approx(2.0)
    assert orientation_regression_loss(torch.tensor([3.1]), torch.tensor([-3.1])).item() == pytest.approx(1 - math.cos(6.2 - 2 * math.pi), abs=1e-6)


def test_trained_orientation_is_equivariant_on_rotated_patches():
    """The shipped ORI (inside the package) + Rot: rotating a patch by 90 degrees rotates the
    estimated orientation by the same angle, and the rotated crops then agree."""
    import cv2

    model = featmatch.load("lift", bf16=False)
    img = cv2.GaussianBlur(textured(400, 400, seed=21, channels=1).astype(np.float32) / 255, (0, 0), 1.5)
    patches = torch.stack([torch.from_numpy(img[y:y + 128, x:x + 128].copy())
                           for y in (20, 140, 260) for x in (20, 140, 260)])[:, None]
    rotated = torch.rot90(patches, 1, dims=(-2, -1))  # -90 deg in (x right, y down)
    zero = torch.zeros(len(patches), 2)
    k = CROP_SCALE * model.support_scale  # the crops the shipped ORI / DESC were trained on
    with torch.no_grad():
        t0 = model.net.orientation(crop_patch(patches, zero, scale=k))
        t1 = model.net.orientation(crop_patch(rotated, zero, scale=k))
    err = torch.remainder(t1 - t0 + math.pi / 2 + math.pi, 2 * math.pi) - math.pi
    assert err.abs().median() < math.radians(20), err
    with torch.no_grad():
        a = crop_patch(patches, zero, t0, scale=k)
        b = crop_patch(rotated, zero, t1, scale=k)
        rnd = crop_patch(rotated, zero, t1 + 1.0, scale=k)
    assert (a - b).abs().mean() < 0.75 * (a - rnd).abs().mean()
