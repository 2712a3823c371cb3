"""LoFTR: parity with kornia's port of the official code (same state-dict names), official
checkpoint loading, presets, arbitrary sizes, batching, symmetric and max-size options,
the blocked coarse matcher, Sinkhorn, and bad input."""

from __future__ import annotations

import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import featmatch
from featmatch.errors import UsageError, WeightsError, WeightsNotFoundError
from featmatch.models.loftr.backbone import sine_position_encoding
from featmatch.models.loftr.coarse import (border_keep, dual_softmax, dual_softmax_inference, log_optimal_transport,
                                           select_dual_softmax_blocked, select_matches, similarity)
from featmatch.models.loftr.fine import crop_windows
from featmatch.models.loftr.transformer import LocalFeatureTransformer, linear_attention
from featmatch.types import Matches

from conftest import FIXTURES, LOFTR_TINY_RAW as RAW, textured


# ----------------------------------------------------------------------------- helpers
def _grey(name: str, size_wh: tuple[int, int]) -> torch.Tensor:
    img = cv2.imread(str(FIXTURES / name), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, size_wh, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).float()[None, None] / 255.0


def _kornia_random(seed: int = 0):
    kornia_feature = pytest.importorskip("kornia.feature")
    torch.manual_seed(seed)
    ref = kornia_feature.LoFTR(pretrained=None).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial BatchNorm statistics too
        for name, t in ref.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return ref


def _as_official_ckpt(state: dict, path) -> None:
    """Save like the official PyTorch Lightning checkpoints: {'state_dict': {'matcher.' + k}}."""
    torch.save({"epoch": 29, "global_step": 1, "state_dict": {"matcher." + k: v for k, v in state.items()}}, path)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0)


@pytest.fixture(scope="module")
def outdoor():
    torch.manual_seed(0)
    return featmatch.load("loftr.outdoor", pretrained=False, threshold=0.0)


def _pair(h=120, w=160, shift=(8, 16), seed=1):
    a = textured(h, w, seed=seed)
    return a, np.roll(a, shift, axis=(0, 1))


# ----------------------------------------------------------------------------- parity
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """kornia's LoFTR with fixed random weights, and the same tensors saved as an official
    Lightning checkpoint ({'state_dict': {'matcher.' + name: tensor}})."""
    ref = _kornia_random()
    ckpt = tmp_path_factory.mktemp("loftr") / "loftr_random.ckpt"
    _as_official_ckpt(ref.state_dict(), ckpt)
    return ref, ckpt


def _parity(reference, size_wh, dtype, tol_px, tol_conf, min_matches):
    import copy

    ref, ckpt = reference
    ref = copy.deepcopy(ref).to(dtype)
    ref.coarse_matching.thr = 0.0  # random weights: compare every mutual-NN match, not only confident ones
    ours = featmatch.load("loftr.outdoor", weights=ckpt, threshold=0.0).to(dtype)  # a real checkpoint's path
    captured = {}
    ref.coarse_matching.register_forward_hook(lambda mod, args, out: captured.update(args[2]))
    a, c = _grey("xfeat_a.png", size_wh).to(dtype), _grey("xfeat_c.png", size_wh).to(dtype)
    with torch.inference_mode():
        r = ref({"image0": a, "image1": c})
        o = ours(a, c)
    n = len(r["keypoints0"])
    assert n >= min_matches and len(o["b"]) == n
    assert (o["conf"] - captured["conf_matrix"]).abs().max() <= tol_conf  # the whole coarse matrix
    assert torch.equal(o["points0"], r["keypoints0"].to(o["points0"].dtype))
    assert (o["points1"] - r["keypoints1"]).abs().max() <= tol_px
    assert (o["mconf"] - r["confidence"]).abs().max() <= tol_conf
    return ours, a, c, r


def test_parity_with_kornia_float64(reference):
    """Same maths as the official code: equal to ~1e-12 in float64 (160x120 real photo pair)."""
    _parity(reference, (160, 120), torch.float64, tol_px=1e-6, tol_conf=1e-9, min_matches=25)


def test_parity_with_kornia_float32_front_door(reference):
    """float32, also through match(): within 1e-4 for confidences; random weights give very
    peaked fine heatmaps that amplify float32 rounding (kornia computes long-sequence linear
    attention as one GEMM; 6e-6 apart after the coarse transformer) to ~2e-4 px in points1.
    Confidences agree to ~1e-5; how float32 kernels round depends on the CPU (1.3e-5 on an
    Intel Xeon), so the bound is the 1e-4 stated above; float64 parity is checked separately."""
    ours, a, c, r = _parity(reference, (160, 120), torch.float32, tol_px=1e-3, tol_conf=1e-4, min_matches=25)
    m = ours.match(a, c)
    assert len(m) == len(r["keypoints0"])
    assert torch.equal(m.points0, r["keypoints0"])
    assert (m.points1 - r["keypoints1"]).abs().max() <= 1e-3
    assert (m.scores - r["confidence"]).abs().max() <= 1e-4


@pytest.mark.slow
def test_parity_with_kornia_320x240(reference):
    _parity(reference, (320, 240), torch.float64, tol_px=1e-6, tol_conf=1e-9, min_matches=40)


def test_state_dict_names_and_shapes_equal_official(reference):
    ref = reference[0]
    ours = featmatch.load("loftr.outdoor", pretrained=False)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs


def test_positional_encoding_matches_reference_both_variants():
    enc = pytest.importorskip("kornia.feature.loftr.utils.position_encoding")
    x = torch.zeros(1, 256, 13, 21)
    for fixed in (False, True):
        ref = enc.PositionEncodingSine(256, temp_bug_fix=fixed)(x)
        assert torch.equal(sine_position_encoding(256, 13, 21, fixed=fixed), ref)


# ----------------------------------------------------------------------------- weights
def test_load_without_weights_raises_one_line():
    for name in ("loftr.outdoor", "loftr.indoor"):
        with pytest.raises(WeightsNotFoundError) as e:
            featmatch.load(name)
        msg = str(e.value)
        assert "\n" not in msg and "weights=PATH" in msg and "cannot be downloaded" in msg
        assert "outdoor_ds.ckpt" in msg and "indoor_ds.ckpt" in msg
    card = featmatch.model_card("loftr.outdoor")
    assert card.weights is None and card.weights_origin == "official-not-downloadable"


def test_shipped_tiny_checkpoint_loads_offline_and_matches():
    """loftr.tiny's trained checkpoint ships inside the package: no download, and it really
    matches (random weights find nothing above the 0.2 threshold)."""
    from featmatch import hub
    from featmatch.eval.metrics import mma

    card = featmatch.model_card("loftr.tiny")
    assert card.weights_origin == "featmatch" and card.weights.installed
    path = hub.resolve(card.weights, name="loftr.tiny")
    assert hub.origin(card.weights, path) == "package"
    assert hub.sha256sum(path) == card.weights.sha256
    model = featmatch.load("loftr.tiny")
    assert model.config.resize == 640 and model.config.subpixel == "lk"  # its inference defaults
    img = cv2.GaussianBlur(textured(240, 320, seed=11), (0, 0), 1.0)
    H = np.array([[0.98, -0.12, 22.0], [0.11, 0.97, -6.0], [0.0, 0.0, 1.0]])
    warped = cv2.warpPerspective(img, H, (320, 240))
    m = model.match(img, warped)
    assert len(m) > 200  # measured 3373 (upscaled to 640x480 by the default resize)
    assert mma(m.points0.numpy(), m.points1.numpy(), H, thresholds=(3,))[3] > 0.9  # measured 0.998
    torch.manual_seed(0)
    assert len(featmatch.load("loftr.tiny", pretrained=False, **RAW).match(img, warped)) < 10


def test_wrong_or_mismatched_weights_give_one_line_errors(tmp_path, tiny):
    state = tiny.state_dict()
    p = tmp_path / "tiny.ckpt"
    _as_official_ckpt(state, p)
    with pytest.raises(WeightsError, match="do not fit this model: missing keys"):  # tiny into paper sizes
        featmatch.load("loftr.outdoor", weights=p)
    with pytest.raises(WeightsError, match="has shape"):
        featmatch.load("loftr.tiny", weights=p, **RAW, block_dims=[32, 64, 256])
    partial = {k: v for k, v in state.items() if not k.startswith("loftr_fine.")}
    _as_official_ckpt(partial, p)
    with pytest.raises(WeightsError, match="missing keys"):
        featmatch.load("loftr.tiny", weights=p, **RAW)
    _as_official_ckpt({**state, "coarse_matching.bin_score": torch.tensor(1.0)}, p)
    with pytest.raises(WeightsError, match="match_type='sinkhorn'"):
        featmatch.load("loftr.tiny", weights=p, **RAW)
    m = featmatch.load("loftr.tiny", weights=p, **RAW, match_type="sinkhorn")  # an *_ot checkpoint
    assert float(m.coarse_matching.bin_score.detach()) == 1.0
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError) as e:
        featmatch.load("loftr.tiny", weights=p, **RAW)
    assert "\n" not in str(e.value)


def test_own_state_dict_round_trip(tmp_path, tiny):
    p = tmp_path / "plain.pt"
    torch.save(tiny.state_dict(), p)
    m = featmatch.load("loftr.tiny", weights=p, **RAW, threshold=0.0)
    a, b = _pair()
    assert torch.equal(m.match(a, b).points1, tiny.match(a, b).points1)


# ----------------------------------------------------------------------------- shapes / sizes
@pytest.mark.parametrize("hw", [(120, 160), (97, 131), (64, 64), (33, 150), (150, 41)])
def test_arbitrary_sizes_points_inside_caller_image(tiny, hw):
    h, w = hw
    a = textured(h, w, seed=3)
    b = np.roll(a, (4, 8), axis=(0, 1))
    m = tiny.match(a, b)
    assert isinstance(m, Matches) and m.points0.shape == (len(m), 2) and m.scores.shape == (len(m),)
    for p in (m.points0, m.points1):
        assert (p >= -0.5).all() and (p[:, 0] <= w - 0.5).all() and (p[:, 1] <= h - 0.5).all()
    assert ((m.scores >= 0) & (m.scores <= 1)).all()
    if min(h, w) >= 64:
        assert len(m) > 0
    # image-0 points are cell anchors 8 * (col, row), away from the border
    assert torch.equal(m.points0 % 8, torch.zeros_like(m.points0))
    assert (m.points0 >= 16).all()


def test_different_sizes_and_paper_preset(outdoor):
    a = textured(96, 160, seed=4)
    b = textured(120, 104, seed=5)
    m = outdoor.match(a, b)
    assert len(m) > 0
    assert (m.points1[:, 0] <= 103.5).all() and (m.points1[:, 1] <= 119.5).all()
    assert (m.points0[:, 0] <= 159.5).all() and (m.points0[:, 1] <= 95.5).all()


def test_refined_offset_bounded_by_window(tiny):
    a, b = _pair(h=100, w=140)
    x0 = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    x1 = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    from featmatch.models.loftr import pad_to_multiple, to_luma

    g0, _ = pad_to_multiple(to_luma(x0))
    g1, _ = pad_to_multiple(to_luma(x1))
    with torch.inference_mode():
        out = tiny(g0, g1)
    anchor1 = torch.stack([out["j"] % out["hw1_c"][1], out["j"] // out["hw1_c"][1]], -1) * 8.0
    assert (out["points1"] - anchor1).abs().max() <= 4.0 + 1e-5
    assert (out["std"] > 0).all() and out["expectation"].abs().max() <= 1.0


def test_batch_equals_single(tiny):
    a, b = _pair()
    c, d = _pair(seed=2, shift=(-8, 8))
    t = lambda *ims: torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in ims])
    batch = tiny.match(t(a, c), t(b, d))
    assert isinstance(batch, list) and len(batch) == 2
    for m_b, (x, y) in zip(batch, ((a, b), (c, d))):
        single = tiny.match(x, y)
        assert len(single) == len(m_b) > 0
        assert torch.allclose(single.points0, m_b.points0) and torch.allclose(single.points1, m_b.points1, atol=1e-4)
        assert torch.allclose(single.scores, m_b.scores, atol=1e-6)


def test_grey_and_rgb_inputs_agree(tiny):
    a, b = _pair()
    luma = lambda im: (im.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0
    rgb = tiny.match(a, b)
    grey = tiny.match(luma(a), luma(b))
    assert len(rgb) == len(grey) and torch.allclose(rgb.points1, grey.points1, atol=1e-4)


# ----------------------------------------------------------------------------- options
def _as_set(m: Matches) -> np.ndarray:
    arr = torch.cat([m.points0, m.points1, m.scores[:, None]], 1).numpy()
    return arr[np.lexsort(arr.T[::-1])]


def test_symmetric_is_order_independent():
    torch.manual_seed(0)
    sym = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0, symmetric=True)
    a = textured(96, 128, seed=6)
    b = np.roll(textured(96, 128, seed=6), (8, -8), axis=(0, 1))
    ab, ba = sym.match(a, b), sym.match(b, a)
    assert len(ab) == len(ba) > 0
    swapped = Matches(ba.points1, ba.points0, ba.scores)
    np.testing.assert_allclose(_as_set(ab), _as_set(swapped), atol=1e-4)
    one_way = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0)
    one_way.load_state_dict(sym.state_dict())
    assert len(ab) == len(one_way.match(a, b)) + len(one_way.match(b, a))
    assert (ab.scores[:-1] >= ab.scores[1:]).all()


def test_max_pixels_downscales_with_warning_and_caller_coordinates(caplog):
    torch.manual_seed(0)
    small = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0, max_pixels=96 * 128)
    ref = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0)
    ref.load_state_dict(small.state_dict())
    a, b = _pair(h=192, w=256, shift=(16, 32))
    with caplog.at_level(logging.WARNING):
        m = small.match(a, b)
    assert "downscaled to 128x96" in caplog.text
    assert len(m) > 0 and (m.points0[:, 0] <= 255.5).all() and (m.points0[:, 1] <= 191.5).all()
    # same as matching the half-size images and mapping back with (p + 0.5) * 2 - 0.5
    half = lambda im: torch.nn.functional.interpolate(torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255,
                                                      size=(96, 128), mode="bilinear", align_corners=False,
                                                      antialias=True)
    m_half = ref.match(half(a), half(b))
    assert torch.allclose(m.points0, (m_half.points0 + 0.5) * 2 - 0.5, atol=1e-4)
    assert torch.allclose(m.points1, (m_half.points1 + 0.5) * 2 - 0.5, atol=1e-3)
    from featmatch.registry import make_config

    assert make_config("loftr.outdoor").max_pixels == 1280 * 960  # the default guard


def test_max_pixels_warning_names_the_resized_size(caplog):
    """resize first, then the max_pixels cap: the warning gives both sizes (it used to name
    only the caller's size, which can be below the cap)."""
    m = featmatch.load("loftr.tiny", pretrained=False, **{**RAW, "resize": 256}, max_pixels=96 * 128)
    img = np.zeros((60, 80, 3), np.uint8)
    with caplog.at_level(logging.WARNING):
        m._prepare(img, "image0")
    assert "image0: 80x60 image resized to 256x192 has more than 12288 pixels; downscaled to 128x96" in caplog.text
    # the model's own resize overshooting the cap is said once per model; huge images every time
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        m._prepare(img, "image1")
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        m._prepare(np.zeros((120, 160, 3), np.uint8), "image0")
        m._prepare(np.zeros((120, 160, 3), np.uint8), "image1")
    assert caplog.text.count("more than 12288 pixels") == 2 and "image1: 160x120 image resized" in caplog.text


def test_blocked_coarse_matching_equals_full():
    g = torch.Generator().manual_seed(0)
    n, (h0, w0), (h1, w1), c = 2, (9, 11), (10, 7), 32
    t0 = torch.randn(n, h0 * w0, c, generator=g) * 3
    t1 = torch.randn(n, h1 * w1, c, generator=g) * 3
    m0 = torch.ones(n, h0 * w0, dtype=torch.bool)
    m0[1, -22:] = False  # padded rows in item 1
    keep0 = border_keep(n, h0, w0, 1, m0, "cpu")
    keep1 = border_keep(n, h1, w1, 1, None, "cpu")
    sim = torch.einsum("nlc,nsc->nls", t0 / c ** 0.5, t1 / c ** 0.5)
    full = select_matches(dual_softmax(sim, 0.1, m0, None), 0.01, keep0, keep1)
    for rows in (1, 7, 50):
        blk = select_dual_softmax_blocked(lambda r0, r1: sim[:, r0:r1], n, h0 * w0, h1 * w1, 0.1, 0.01,
                                          keep0, keep1, m0, None, rows)
        assert torch.equal(blk.b, full.b) and torch.equal(blk.i, full.i) and torch.equal(blk.j, full.j)
        assert torch.allclose(blk.conf, full.conf, atol=1e-6)
    assert len(full.b) > 5 and not ((full.b == 1) & (full.i >= h0 * w0 - 22)).any()


def test_model_blocked_path_equals_full_path():
    torch.manual_seed(0)
    full = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0)
    blocked = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0, max_matrix_elements=1000,
                             fine_batch=7)
    blocked.load_state_dict(full.state_dict())
    a, b = _pair()
    m1, m2 = full.match(a, b), blocked.match(a, b)
    assert len(m1) == len(m2) > 0
    assert torch.allclose(m1.points1, m2.points1, atol=1e-5) and torch.allclose(m1.scores, m2.scores, atol=1e-6)


def test_sinkhorn_marginals_and_model():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 6, 9, generator=g)
    la = log_optimal_transport(scores, torch.tensor(1.0), iters=200)
    p = la.exp() / (6 + 9)
    assert torch.allclose(p.sum(2)[:, :6], torch.full((2, 6), 1 / 15), atol=1e-5)
    assert torch.allclose(p.sum(1)[:, :9], torch.full((2, 9), 1 / 15), atol=1e-5)
    assert torch.allclose(p.sum(2)[:, 6], torch.full((2,), 9 / 15), atol=1e-5)
    torch.manual_seed(0)
    ot = featmatch.load("loftr.tiny", pretrained=False, **RAW, match_type="sinkhorn", threshold=0.0)
    assert "coarse_matching.bin_score" in ot.state_dict()
    a, b = _pair()
    m = ot.match(a, b)
    assert isinstance(m, Matches) and ((m.scores >= 0) & (m.scores <= 1)).all()


def test_full_attention_option_and_masks():
    torch.manual_seed(0)
    for attention in ("linear", "full"):
        tr = LocalFeatureTransformer(32, 4, ("self", "cross"), attention).eval()
        x0, x1 = torch.randn(1, 12, 32), torch.randn(1, 9, 32)
        pad0 = torch.cat([x0, torch.randn(1, 5, 32)], 1)
        mask0 = torch.tensor([[True] * 12 + [False] * 5])
        with torch.no_grad():
            ref0, ref1 = tr(x0, x1)
            out0, out1 = tr(pad0, x1, mask0, torch.ones(1, 9, dtype=torch.bool))
        assert torch.allclose(out0[:, :12], ref0, atol=1e-5) and torch.allclose(out1, ref1, atol=1e-5)
    torch.manual_seed(0)
    m = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0, coarse_attention="full", fine_attention="full")
    assert isinstance(m.match(*_pair()), Matches)


def test_forward_with_padding_masks(tiny):
    """Training path: images zero-padded to a common size with pixel masks; no coarse match
    may use a padded cell or one within `border` cells of the valid extent."""
    a, b = _pair(h=96, w=128)
    x0 = torch.zeros(1, 1, 128, 128)
    x1 = torch.zeros(1, 1, 128, 128)
    x0[..., :96, :128] = torch.from_numpy(a[..., 0]).float() / 255
    x1[..., :96, :128] = torch.from_numpy(b[..., 0]).float() / 255
    mask = torch.zeros(1, 128, 128, dtype=torch.bool)
    mask[:, :96, :128] = True
    with torch.inference_mode():
        out = tiny(x0, x1, mask, mask)
    assert out["mask0_c"].shape == (1, 256) and int(out["mask0_c"].sum()) == 12 * 16
    rows_i, rows_j = out["i"] // 16, out["j"] // 16
    assert len(out["i"]) > 0 and (rows_i < 12 - 2).all() and (rows_j < 12 - 2).all()
    conf = out["conf"].view(1, 16, 16, 16, 16)
    assert conf[:, 12:].abs().max() == 0 and conf[..., 12:, :].abs().max() == 0


# ----------------------------------------------------------------------------- fast inference paths
def test_eval_backbone_equals_plain_modules():
    """Eval mode folds BatchNorm into the convolutions and runs channels-last on CPU; the
    plain module path (as in training, here with the BatchNorms' running statistics) gives
    the same maps (float64: equal to rounding)."""
    torch.manual_seed(0)
    m = featmatch.load("loftr.tiny", pretrained=False, **RAW).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in m.backbone.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5)
    bb = m.backbone
    x = torch.rand(2, 1, 64, 96, dtype=torch.float64, generator=g)

    def plain(x):  # the reference computation with the modules' own forward (eval BatchNorm)
        def block(blk, x):
            out = F.relu(blk.bn1(blk.conv1(x)))
            out = blk.bn2(blk.conv2(out))
            return F.relu((x if blk.downsample is None else blk.downsample(x)) + out)

        s1 = F.relu(bb.bn1(bb.conv1(x)))
        for blk in bb.layer1:
            s1 = block(blk, s1)
        s2 = s1
        for blk in bb.layer2:
            s2 = block(blk, s2)
        s3 = s2
        for blk in bb.layer3:
            s3 = block(blk, s3)
        coarse = bb.layer3_outconv(s3)
        up = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=True)
        mid = bb.layer2_outconv2(bb.layer2_outconv(s2) + up)
        up = F.interpolate(mid, scale_factor=2.0, mode="bilinear", align_corners=True)
        return coarse, bb.layer1_outconv2(bb.layer1_outconv(s1) + up)

    with torch.no_grad():
        ref_c, ref_f = plain(x)
        c, f = bb(x)
    assert torch.allclose(c, ref_c, atol=1e-10) and torch.allclose(f, ref_f, atol=1e-10)
    x32 = x.float()
    with torch.no_grad():
        c32, f32 = bb.float()(x32)
    assert c32.is_contiguous(memory_format=torch.channels_last)  # the CPU fast path
    assert (f32.double() - ref_f).abs().max() < 1e-4


def test_dual_softmax_inference_equals_dual_softmax():
    g = torch.Generator().manual_seed(0)
    f0 = torch.randn(2, 30, 16, generator=g) * 2
    f1 = torch.randn(2, 22, 16, generator=g) * 2
    m0 = torch.ones(2, 30, dtype=torch.bool)
    m0[1, -7:] = False
    m1 = torch.ones(2, 22, dtype=torch.bool)
    m1[0, :3] = False
    for masks in ((None, None), (m0, None), (None, m1), (m0, m1)):
        ref = dual_softmax(similarity(f0, f1), 0.1, *masks)
        out = dual_softmax_inference(f0, f1, 0.1, *masks)
        assert torch.allclose(out, ref, atol=1e-6, rtol=1e-5)
        assert torch.equal(out == 0, ref == 0)


def test_crop_windows_equals_unfold_including_borders():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 6, 16, 20, generator=g)  # fine map of a 4 x 5 coarse grid (stride 4)
    b = torch.tensor([0, 1, 1, 0, 1])
    cells = torch.tensor([0, 4, 19, 7, 15])  # corners and inner cells
    ref = F.unfold(fmap, 5, padding=2, stride=4)  # (B, C * 25, cells)
    ref = ref.view(2, 6, 25, 20)[b, :, :, cells].transpose(1, 2)  # (M, 25, C)
    assert torch.equal(crop_windows(fmap, b, cells, 5, 5, 4), ref)
    assert torch.equal(crop_windows(fmap.contiguous(memory_format=torch.channels_last), b, cells, 5, 5, 4), ref)


def test_linear_attention_fast_path_equals_autograd_path():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 40, 4, 8, generator=g) * 2 for _ in range(3))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    for masks in ((None, None), (mask, mask)):
        with torch.no_grad():
            fast = linear_attention(q, k, v, *masks)
        slow = linear_attention(q.requires_grad_(), k, v, *masks)
        q.requires_grad_(False)
        assert torch.allclose(fast, slow, atol=1e-5)
        # the reference formula: values divided by S and the result multiplied back
        qf, kf = F.elu(q) + 1, F.elu(k) + 1
        vv = v
        if masks[0] is not None:
            qf, kf, vv = qf * mask[:, :, None, None], kf * mask[:, :, None, None], v * mask[:, :, None, None]
        kv = torch.einsum("nshd,nshv->nhdv", kf, vv / 40)
        z = 1 / (torch.einsum("nlhd,nhd->nlh", qf, kf.sum(1)) + 1e-6)
        assert torch.allclose(fast, torch.einsum("nlhd,nhdv->nlhv", qf, kv) * z[..., None] * 40, atol=1e-5)


def test_training_after_inference_and_cached_position_encoding():
    """The positional encoding is cached per size (also when first built under inference
    mode); a training step afterwards still backpropagates, and eval outputs are unchanged."""
    torch.manual_seed(0)
    m = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0)
    a, b = _pair()
    first = m.match(a, b)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(1, 1, 120, 160)
    m.train()
    out = m(x, x.flip(-1))
    out["log_conf"].logsumexp((1, 2)).sum().backward()
    grads = [p.grad for p in m.backbone.layer3.parameters()]  # the coarse branch of the backbone
    assert all(gr is not None for gr in grads) and any(gr.abs().sum() > 0 for gr in grads)
    m.eval()
    m.load_state_dict(state)  # training mode updated the BatchNorm statistics
    again = m.match(a, b)
    assert len(again) == len(first) and torch.equal(again.points1, first.points1)


# ----------------------------------------------------------------------------- bad input
def test_blank_and_tiny_images(tiny, caplog):
    blank = np.full((96, 128, 3), 127, np.uint8)
    m = tiny.match(blank, blank)
    assert isinstance(m, Matches)
    with caplog.at_level(logging.WARNING):
        m = tiny.match(np.zeros((5, 7), np.uint8), np.zeros((64, 64), np.uint8))
    assert len(m) == 0 and "too small" in caplog.text
    m = tiny.match(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))  # one cell: all border
    assert len(m) == 0


@pytest.mark.parametrize("bad, pattern", [
    (np.full((32, 32), np.nan, np.float32), "NaN"),
    (np.zeros((4, 4, 4, 4), np.uint8), "not an image"),
    ("does/not/exist.png", "not found"),
    (np.ones((32, 32), np.float32) * 255, r"\[0, 1\]"),
    (torch.zeros(1, 2, 32, 32), "channels"),
    (42, "expected a path"),
])
def test_bad_input_one_line_errors(tiny, bad, pattern):
    good = textured(64, 64)
    with pytest.raises(featmatch.errors.FeatmatchError, match=pattern) as e:
        tiny.match(bad, good)
    assert "\n" not in str(e.value)


def test_batch_mismatch_and_config_errors(tiny):
    with pytest.raises(UsageError, match="batches differ"):
        tiny.match(torch.rand(2, 1, 64, 64), torch.rand(1, 1, 64, 64))
    for kw, pattern in [({"coarse_attention": "softmax"}, "attention"), ({"fine_window": 4}, "odd"),
                        ({"match_type": "ot"}, "match_type"), ({"coarse_layers": ["self", "crosss"]}, "self"),
                        ({"temprature": 0.1}, "did you mean 'temperature'"),
                        ({"block_dims": [33, 64, 128]}, "divisible")]:
        with pytest.raises(UsageError, match=pattern):
            featmatch.load("loftr.tiny", pretrained=False, **RAW, **kw)
    with pytest.raises(UsageError, match="multiples of 8"):
        tiny(torch.rand(1, 1, 60, 64), torch.rand(1, 1, 64, 64))


def test_cli_match_with_weights(tmp_path, tiny):
    a, b = _pair()
    cv2.imwrite(str(tmp_path / "a.png"), a)
    cv2.imwrite(str(tmp_path / "b.png"), b)
    ckpt = tmp_path / "tiny.ckpt"
    _as_official_ckpt(tiny.state_dict(), ckpt)
    cmd = [sys.executable, "-m", "featmatch.cli", "match", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
           "--model", "loftr.tiny", "--geometry", "none"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # the shipped checkpoint
    assert res.returncode == 0 and "matches:" in res.stdout, res.stderr
    outdoor = [a if a != "loftr.tiny" else "loftr.outdoor" for a in cmd]
    res = subprocess.run(outdoor, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "cannot be downloaded" in res.stderr
    out = tmp_path / "m.npz"
    res = subprocess.run(cmd + ["--weights", str(ckpt), "--set", "threshold=0.0", "--set", "symmetric=true",
                                "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "matches:" in res.stdout and np.load(out)["points0"].shape[1] == 2


def test_float64_model_matches_through_the_front_door():
    """The front door feeds images in the model's dtype (a .double() model used to fail)."""
    torch.manual_seed(0)
    m = featmatch.load("loftr.tiny", pretrained=False, **RAW, threshold=0.0).double()
    img = textured(64, 96, seed=2)
    out = m.match(img, img)
    assert out.points0.dtype == torch.float64 and len(out) > 0


def test_subpixel_step_option():
    """subpixel='lk' (front door, caller's resolution) sharpens LoFTR's image-1 points."""
    from featmatch.eval.metrics import reprojection_errors_h

    img = cv2.GaussianBlur(textured(240, 320, seed=12), (0, 0), 1.0)
    H = np.array([[1.0, 0.0, 3.3], [0.0, 1.0, -2.6], [0.0, 0.0, 1.0]])
    warped = cv2.warpPerspective(img, H, (320, 240), flags=cv2.INTER_LINEAR)
    errs = {}
    for mode in ("none", "lk"):
        m = featmatch.load("loftr.tiny", resize=None, subpixel=mode).match(img, warped)
        e = reprojection_errors_h(m.points0.numpy(), m.points1.numpy(), H)
        errs[mode] = np.median(e[e < 4])
    assert errs["lk"] < 0.5 * errs["none"] and errs["lk"] < 0.1, errs


def test_subpixel_options_are_checked():
    for bad in ({"subpixel": "sift"}, {"lk_radius": 0}, {"lk_max_move": 0.0}):
        with pytest.raises(UsageError, match="subpixel|lk_"):
            featmatch.load("loftr.tiny", pretrained=False, **bad)
