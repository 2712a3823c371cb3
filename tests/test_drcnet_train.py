"""DRC-Net losses (parity with the reference on random inputs; hand cases), the recipe,
`featmatch train drcnet` and the light preset."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from featmatch.models.drcnet.model import DRCNet, DRCNetConfig, coarse_prior, fine_scores
from featmatch.train.losses.drcnet import (drcnet_strong_total, fine_targets, max_softmax_score, orthogonal_loss,
                                           strong_loss, weak_loss)
from featmatch.train.recipes.drcnet import DRCNetRecipe, sample_correspondences

from conftest import textured

FIXTURE = Path(__file__).parent / "fixtures" / "drcnet_parity.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


def test_targets_and_losses_match_reference(ref):
    pts = torch.from_numpy(ref["loss_points"])
    b, n, _ = pts.shape
    h, w = 7, 9
    valid = torch.ones(b, n, dtype=torch.bool)
    tgt = fine_targets(pts, (h, w), valid, stride=4, kernel=3)
    exp = ref["loss_target"]
    # point (0, 0) lies exactly on a cell column: the reference's scatter_ overwrites the
    # weight with the coinciding zero-weight corner and loses the target (documented
    # deviation; featmatch adds the weights); every other target is equal
    assert np.abs(exp[0, 0]).sum() == 0 and np.isclose(float(tgt[0, 0].sum()), 1.0, atol=1e-5)
    # points within half a fine cell of the top/left border (p / 4 - 0.5 < 0): the reference
    # extrapolates with a negative weight (its lower index is clamped, the weight is not);
    # featmatch clamps the weight too (documented deviation)
    xy = pts.numpy() / 4 - 0.5
    keep = (xy >= 0).all(-1) & (xy[..., 0] <= w - 1) & (xy[..., 1] <= h - 1)  # past the last centre: (1)
    assert 0 < keep.sum() < b * n - 1
    keep[0, 0] = False
    np.testing.assert_allclose(tgt.numpy()[keep], exp[keep], atol=1e-6)
    tgt = torch.from_numpy(exp)  # the loss terms on the reference's own targets
    pred = torch.from_numpy(ref["loss_pred"])
    np.testing.assert_allclose(float(strong_loss(pred, tgt, valid)), float(ref["loss_strong"]), rtol=1e-5)
    np.testing.assert_allclose(float(orthogonal_loss(pred, tgt, valid)), float(ref["loss_orth"]), rtol=1e-5)
    np.testing.assert_allclose(float(max_softmax_score(torch.from_numpy(ref["loss_corr"]))),
                               float(ref["loss_weak_score"]), rtol=1e-6)


def test_target_hand_cases():
    valid = torch.tensor([[True, False]])
    # (x, y) = (4 * 2 + 2, 4 * 1 + 2) is the centre of fine cell (2, 1) in the reference's coordinates
    pts = torch.tensor([[[10.0, 6.0], [5.0, 5.0]]])
    t = fine_targets(pts, (4, 5), valid, kernel=0)
    assert t[0, 0].view(4, 5)[1, 2] == 1 and t[0, 0].sum() == 1 and t[0, 1].abs().sum() == 0
    t = fine_targets(pts, (4, 5), valid, kernel=3).view(1, 2, 4, 5)
    assert torch.isclose(t[0, 0, 1, 2], torch.tensor(0.25)) and torch.isclose(t[0, 0, 0, 1], torch.tensor(1 / 16))
    # half-way between two cells: half the mass each (before the blur)
    t = fine_targets(torch.tensor([[[12.0, 6.0]]]), (4, 5), torch.tensor([[True]]), kernel=0).view(4, 5)
    assert torch.isclose(t[1, 2], torch.tensor(0.5)) and torch.isclose(t[1, 3], torch.tensor(0.5))


def test_losses_zero_at_target_and_masking():
    g = torch.Generator().manual_seed(0)
    tgt = torch.rand(2, 4, 10, generator=g)
    valid = torch.tensor([[True, True, False, True], [True, False, False, False]])
    assert float(strong_loss(tgt, tgt, valid)) == 0 and float(orthogonal_loss(tgt, tgt, valid)) == 0
    pred = tgt.clone()
    pred[0, 2] += 5  # an invalid row changes nothing
    assert float(strong_loss(pred, tgt, valid)) == 0
    pred[0, 0, 0] += 1.0  # one unit error on a valid row of pair 0 (3 valid points) -> 1/3 / 2 pairs
    assert np.isclose(float(strong_loss(pred, tgt, valid)), 1 / 6)
    total, parts = drcnet_strong_total(pred, tgt, valid, tgt, tgt, valid, weight_orthogonal=0.05)
    assert np.isclose(float(total), 0.95 * parts["strong"] + 0.05 * parts["orthogonal"])
    corr = torch.zeros(1, 1, 2, 2, 2, 2)
    peaked = corr.clone().view(1, 4, 4)
    peaked[0] = torch.eye(4) * 10
    assert float(weak_loss(peaked.view_as(corr), corr)) < -0.5  # uniform negatives score lower


def test_prior_and_fine_scores_shapes_and_normalisation():
    corr = torch.rand(1, 1, 3, 4, 2, 5)
    pts = torch.tensor([[[0.0, 0.0], [20.0, 12.0], [47.0, 40.0]]])
    p = coarse_prior(corr, pts, True)
    assert p.shape == (1, 3, 2, 5)
    assert float(p[0, 0].sum()) == 0  # the reference's (0, 0) = invalid point
    assert torch.allclose(p[0, 1:].sum((1, 2)), torch.ones(2))
    fa = torch.nn.functional.normalize(torch.randn(1, 8, 12, 16), dim=1)
    fb = torch.nn.functional.normalize(torch.randn(1, 8, 8, 20), dim=1)
    s = fine_scores(p, fa, fb, pts)
    assert s.shape == (1, 3, 160)
    up = torch.nn.functional.interpolate(p, size=(8, 20), mode="nearest").view(1, 3, -1)
    desc = torch.stack([fa[0, :, 0, 0], fa[0, :, 3, 5], fa[0, :, 10, 12]], 0)  # round(p / 4), clamped
    torch.testing.assert_close(s[0], up[0] * (desc @ fb[0].view(8, -1)))


def test_sample_correspondences_follow_h():
    H = torch.tensor([[[1.0, 0, 5], [0, 1, -3], [0, 0, 1]]])
    p0, p1, valid = sample_correspondences(H, (64, 48), 32, generator=torch.Generator().manual_seed(0))
    assert p0.shape == (1, 32, 2) and valid.all()
    torch.testing.assert_close(p1, p0 + torch.tensor([5.0, -3.0]))


def _tiny_net():
    torch.manual_seed(0)
    return DRCNet(DRCNetConfig(backbone="xfeat", fpn="two_heads", feature_dim=16))


def test_recipe_loss_backward_and_frozen_backbone():
    net = _tiny_net().train()
    assert not net.FeatureExtraction.backbone.training  # frozen backbone stays in eval mode
    img = torch.from_numpy(textured(64, 80)).permute(2, 0, 1).float()[None] / 255
    batch = {"image0": img.repeat(2, 1, 1, 1), "image1": torch.roll(img, (4, 8), (2, 3)).repeat(2, 1, 1, 1),
             "H_0to1": torch.tensor([[1.0, 0, 8], [0, 1, 4], [0, 0, 1]]).repeat(2, 1, 1)}
    rec = DRCNetRecipe()
    loss, logs = rec.loss(net, batch)
    loss.backward()
    assert torch.isfinite(loss) and logs["valid_points"] > 64
    assert all(p.grad is None for p in net.FeatureExtraction.backbone.parameters())
    assert net.NeighConsensus.conv[0].weight.grad.abs().sum() > 0
    assert net.FeatureExtraction.fine_layer_block.weight.grad.abs().sum() > 0


def test_light_preset_match_and_head_only_checkpoint(tmp_path, monkeypatch):
    net = _tiny_net().eval()
    a = textured(96, 128, seed=3)
    m = net.match(a, np.roll(a, (4, 8), (0, 1)))
    assert len(m) > 0 and m.points0.shape == (len(m), 2)
    assert float(m.points0[:, 0].max()) <= 127.5 and float(m.points1[:, 1].max()) <= 95.5
    # a head-only file gets the backbone from the official weights (here: a stand-in)
    from featmatch.models.drcnet import model as drc

    bb = {k[len("FeatureExtraction.backbone."):]: v for k, v in net.state_dict().items()
          if k.startswith("FeatureExtraction.backbone.")}
    monkeypatch.setattr(drc, "official_backbone_state", lambda name: bb)
    head = {k: v.half() for k, v in net.state_dict().items() if not k.startswith("FeatureExtraction.backbone.")}
    other = DRCNet(DRCNetConfig(backbone="xfeat", fpn="two_heads", feature_dim=16))
    other.load_weights(head)
    m2 = other.eval().match(a, np.roll(a, (4, 8), (0, 1)))
    assert len(m2) > 0


def test_train_cli_one_step_and_resume(tmp_path, monkeypatch, capsys):
    from featmatch import hub
    from featmatch.cli import main
    from featmatch.models.xfeat import XFeatNet
    from featmatch.registry import model_card

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"{i}.png"), textured(120, 160, seed=i))
    # the official XFeat weights are not available in tests: a random stand-in with its keys
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    torch.save(XFeatNet().state_dict(), tmp_path / "xfeat.pt")
    monkeypatch.setattr(hub, "sha256sum", lambda p: model_card("xfeat").weights.sha256)
    # the end-of-run validation is evaluate_dense (tested with LoFTR); skipped here for time
    monkeypatch.setattr("featmatch.train.recipes.drcnet.DRCNetRecipe.validate", lambda self, model: {})
    out = tmp_path / "run"
    args = ["train", "drcnet", "--images", str(photos), "--steps", "1", "--out", str(out), "--batch-size", "1",
            "--size", "128x96", "--val-every", "0", "--ckpt-every", "1", "--warmup", "1"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
    args[5] = "2"
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    state = torch.load(out / "model.pt", weights_only=True)
    assert "NeighConsensus.conv.0.weight" in state
    assert main(args[:6] + ["--out", str(tmp_path / "other"), "--backbone", "vgg"]) == 2
    assert "backbone" in capsys.readouterr().err
    # --start: a new run continues from the trained head (a run's model.pt)
    assert main(args[:6] + ["--out", str(tmp_path / "cont"), "--start", str(out / "model.pt")] + args[8:]) == 0
    capsys.readouterr()
    assert main(args[:6] + ["--out", str(tmp_path / "bad"), "--start", str(photos / "0.png")] + args[8:]) != 0


def test_load_head_checks_the_preset(tmp_path):
    from featmatch.errors import UsageError
    from featmatch.train.recipes.drcnet import load_head

    torch.manual_seed(0)
    src = DRCNet(DRCNetConfig(backbone="xfeat", fpn="two_heads", feature_dim=16))
    head = {k: v.half() for k, v in src.state_dict().items() if not k.startswith("FeatureExtraction.backbone.")}
    torch.save(head, tmp_path / "head.pt")
    torch.manual_seed(1)
    dst = DRCNet(DRCNetConfig(backbone="xfeat", fpn="two_heads", feature_dim=16))
    bb = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("FeatureExtraction.backbone.")}
    load_head(dst, str(tmp_path / "head.pt"))
    for k, v in dst.state_dict().items():
        assert torch.equal(v, bb[k] if k in bb else head[k].float()), k
    with pytest.raises(UsageError, match="not a head"):
        load_head(DRCNet(DRCNetConfig(backbone="xfeat", fpn="two_heads", feature_dim=8)), str(tmp_path / "head.pt"))


def test_cli_match_and_list(tmp_path, capsys):
    from featmatch.cli import main
    from featmatch.models.drcnet import XFEAT

    torch.manual_seed(0)
    path = tmp_path / "drc.pt"
    torch.save(DRCNet(DRCNetConfig(**XFEAT)).state_dict(), path)
    a = textured(96, 128, seed=5)
    cv2.imwrite(str(tmp_path / "a.png"), a)
    cv2.imwrite(str(tmp_path / "b.png"), np.roll(a, (4, 8), (0, 1)))
    out = tmp_path / "m.npz"
    assert main(["match", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", "drcnet.xfeat",
                 "--weights", str(path), "--output", str(out), "--geometry", "none", "--resize", "128"]) == 0
    assert np.load(out)["points0"].shape[1] == 2
    assert main(["match", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", "drcnet.resnet101"]) == 1
    assert "dualrc-net.pth.tar" in capsys.readouterr().err
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "drcnet.resnet101" in listing and "drcnet.xfeat" in listing


def test_huge_images_are_capped_by_max_pixels(caplog):
    torch.manual_seed(0)
    net = DRCNet(DRCNetConfig(backbone="xfeat", fpn="two_heads", feature_dim=16, max_pixels=96 * 64)).eval()
    a = textured(192, 256, seed=4)
    with caplog.at_level("WARNING"):
        m = net.match(a, np.roll(a, (8, 16), (0, 1)))
    assert "max_pixels" in caplog.text
    if len(m):  # points in the caller's pixels
        assert float(m.points0.max()) <= 255.5 and float(m.points0[:, 1].max()) <= 191.5
        assert float(m.points0[:, 0].max()) > 100  # not left in the downscaled image's frame


@pytest.mark.weights
def test_shipped_drcnet_xfeat_matches_a_shift():
    from conftest import need_weights

    import featmatch

    need_weights("xfeat")
    m = featmatch.load("drcnet.xfeat", resize=None)
    a = textured(192, 256, seed=7)
    b = np.roll(a, (16, 32), (0, 1))
    res = m.match(a, b)
    assert len(res) > 50
    # most matches follow the shift (interior points; np.roll wraps at the border)
    d = res.points1 - res.points0
    inside = (res.points0[:, 0] < 200) & (res.points0[:, 1] < 160)
    ok = ((d[inside] - torch.tensor([32.0, 16.0])).norm(dim=1) <= 3).float().mean()
    assert float(ok) > 0.8
