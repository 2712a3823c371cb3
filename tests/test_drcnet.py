"""DRC-Net: parity with the authors' code (random weights), official checkpoint format,
match extraction invariants, bad input."""

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

import featmatch
from featmatch.errors import UsageError, WeightsError
from featmatch.models.drcnet.model import DRCNet, DRCNetConfig, extract_matches
from featmatch.ops.conv4d import to_reference_layout

from conftest import load_script

FIXTURE = Path(__file__).parent / "fixtures" / "drcnet_parity.npz"


def _script():
    return load_script("make_drcnet_fixture")


def uninitialised(name: str = "drcnet.resnet101", **overrides) -> DRCNet:
    """A registered model built on the meta device then allocated without initialisation
    (building ResNet-101 with its random init takes seconds; every test loads weights)."""
    with torch.device("meta"):
        model = featmatch.load(name, pretrained=False, **overrides)
    return model.to_empty(device="cpu")


def official_shapes(model: DRCNet) -> dict:
    """The reference's (module-prefixed) keys and shapes for ``model``'s config."""
    out = {}
    for k, v in model.state_dict().items():
        shape = tuple(v.shape)
        if k.startswith("NeighConsensus.conv.") and k.endswith(".weight"):
            shape = tuple(to_reference_layout(v).shape)
        out["module." + k] = (shape, v.dtype)
    return out


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


@pytest.mark.parametrize("variant", ["1024", "256"])
def test_parity_with_reference(ref, variant):
    torch.manual_seed(0)
    name = "drcnet.resnet101" if variant == "1024" else "drcnet.resnet101_256"
    model = uninitialised(name, num_matches=2000)
    shapes = {k[len("module."):]: v for k, v in official_shapes(model).items()}  # the reference's own names
    state = _script().deterministic_state(shapes)
    model.load_weights({"module." + k: v for k, v in state.items()}, source="deterministic")
    a, b = ref["imageA"], ref["imageB"]
    x0 = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    x1 = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = model(x0, x1)
    np.testing.assert_allclose(out["fine0"][:, ::64].numpy(), ref[f"{variant}_fineA"], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(out["fine1"][:, ::64].numpy(), ref[f"{variant}_fineB"], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(out["corr"].numpy(), ref[f"{variant}_corr"], atol=1e-6, rtol=1e-4)
    m = model.match(a, b)
    exp = ref[f"{variant}_matches"]
    assert len(m) == len(exp) > 0
    # the reference's pixel-corner coordinates are featmatch's + 0.5
    np.testing.assert_array_equal(torch.cat([m.points0, m.points1], 1).numpy() + 0.5, exp)
    np.testing.assert_allclose(m.scores.numpy(), ref[f"{variant}_scores"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("inference", [False, True])  # True: the reused in-place score buffer
def test_match_extraction_parity(ref, inference):
    corr, fa, fb = (torch.from_numpy(ref[k]) for k in ("post_corr", "post_fineA", "post_fineB"))
    with torch.inference_mode(inference):
        ia, ib, sc = extract_matches(corr, fa, fb, num_matches=300, query_fraction=0.5, chunk=37)
    exp = ref["post_matches"]
    assert len(exp) > 100
    np.testing.assert_array_equal(((torch.cat([ia, ib], 1) + 0.5) * 4).numpy(), exp)
    np.testing.assert_allclose(sc.numpy(), ref["post_scores"], rtol=1e-5, atol=1e-7)


def _gather_prior(corr, points, source_to_target):
    """The reference's coarse prior (lib/point_tnf.py / eval code): an element-wise gather
    on the query image's grid, one row per target cell, then the sum over the 4 corners."""
    from featmatch.models.drcnet.model import coarse_corners

    b, _, ha, wa, hb, wb = corr.shape
    if source_to_target:
        grid, h, w, ho, wo = corr.reshape(b, ha, wa, hb * wb).permute(0, 3, 1, 2), ha, wa, hb, wb
    else:
        grid, h, w, ho, wo = corr.reshape(b, ha * wa, hb, wb), hb, wb, ha, wa
    c, n = grid.shape[1], points.shape[1]
    cells, weights = coarse_corners(points, h, w)
    idx = cells.reshape(b, 1, n * 4).expand(-1, c, -1)
    vals = torch.gather(grid.reshape(b, c, h * w), 2, idx) * weights.reshape(b, 1, n * 4)
    prior = vals.reshape(b, c, n, 4).sum(dim=3)
    prior = (prior * (points / 16 > 1e-10).to(prior.dtype).mean(dim=2)[:, None, :]).permute(0, 2, 1)
    return (prior / (prior.sum(dim=2, keepdim=True) + 1e-15)).reshape(b, n, ho, wo)


@pytest.mark.parametrize("batch", [1, 2])
def test_coarse_prior_row_copies_are_bit_identical_to_the_gather(batch):
    from featmatch.models.drcnet.model import coarse_prior, prior_rows

    g = torch.Generator().manual_seed(1)
    corr = torch.rand(batch, 1, 6, 7, 5, 9, generator=g)
    for s2t, (h, w) in ((True, (6, 7)), (False, (5, 9))):
        pts = torch.rand(batch, 40, 2, generator=g) * torch.tensor([w * 16.0 + 20, h * 16.0 + 20])  # some outside
        pts[:, :3] = 0.0  # all-zero prior
        pts[:, 3:6, 1] = 0.0  # halved
        want = _gather_prior(corr, pts, s2t)
        assert torch.equal(coarse_prior(corr, pts, s2t), want)
        part = pts[:, :17]  # a chunk of the queries, the rows made once
        assert torch.equal(coarse_prior(corr, part, s2t, prior_rows(corr, s2t)), _gather_prior(corr, part, s2t))
    leaf = corr.clone().requires_grad_()
    coarse_prior(leaf, pts, False).sum().backward()  # training differentiates through it
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_fine_scores_into_a_buffer_equal_the_plain_ones():
    from featmatch.models.drcnet.model import fine_scores

    g = torch.Generator().manual_seed(0)
    fq, ft = torch.randn(1, 8, 12, 16, generator=g), torch.randn(1, 8, 12, 16, generator=g)
    pts = torch.rand(1, 7, 2, generator=g) * 40
    for prior in (torch.rand(1, 7, 3, 4, generator=g), torch.rand(1, 7, 5, 5, generator=g)):  # nearest / resized
        plain = fine_scores(prior, fq, ft, pts)
        buf = torch.full((1, 10, 12 * 16), float("nan"))
        with torch.no_grad():
            got = fine_scores(prior, fq, ft, pts, out=buf)
        assert torch.equal(got, plain) and torch.equal(buf[:, :7], plain) and buf[:, 7:].isnan().all()
    with pytest.raises(ValueError, match="for inference"):
        fine_scores(prior, fq.requires_grad_(), ft, pts, out=buf)


def test_subcell_offsets_recover_a_parabola_peak():
    from featmatch.models.drcnet.model import subcell_offsets

    h, w = 6, 9
    peaks = torch.tensor([[3.3, 2.8], [0.0, 4.0], [5.45, 1.5], [8.0, 5.0]])  # (x, y); two on the border
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    # one-channel "descriptors": the correlation of a query of value 2 with B's map is 2 x the map
    maps = torch.stack([-2.0 * (xs - px) ** 2 - 0.5 * (ys - py) ** 2 for px, py in peaks.double()])[:, None]
    idx = maps.reshape(4, -1).argmax(1)
    pos = torch.stack([idx % w, idx // w], -1).double()[:, None]  # (B=4, N=1, 2)
    off = subcell_offsets(torch.full((4, 1, 1), 2.0, dtype=torch.float64), maps, pos)[:, 0]
    got = pos[:, 0] + off
    np.testing.assert_allclose(got[0].numpy(), [3.3, 2.8], atol=1e-9)
    np.testing.assert_allclose(got[2].numpy(), [5.45, 1.5], atol=1e-9)  # a tie in y: offset 0.5 either way
    assert off[1, 0] == 0 and off[3].abs().sum() == 0  # border: no offset along that axis
    np.testing.assert_allclose(got[1, 1].item(), 4.0, atol=1e-9)
    # a minimum instead of a maximum (the argmax was not a peak): no offset
    assert subcell_offsets(torch.full((1, 1, 1), -1.0, dtype=torch.float64), maps[:1], pos[:1]).abs().sum() == 0


def test_subcell_matches_keep_the_reference_pairs(ref):
    corr, fa, fb = (torch.from_numpy(ref[k]) for k in ("post_corr", "post_fineA", "post_fineB"))
    ia, ib, sc = extract_matches(corr, fa, fb, num_matches=300, query_fraction=0.5, chunk=37)
    ja, jb, sc2 = extract_matches(corr, fa, fb, num_matches=300, query_fraction=0.5, chunk=37, subcell=True)
    assert torch.equal(ia, ja) and torch.equal(sc, sc2)
    d = jb - ib
    assert d.abs().max() <= 0.5 and (d != 0).any()


def test_official_checkpoint_format(tmp_path):
    """A synthetic file with the released checkpoint's layout (module. keys, reference NC
    layout, args Namespace, optimizer state) loads strictly with weights_only=True."""
    model = uninitialised("drcnet.resnet101_256", feature_dim=8)
    shapes = official_shapes(model)
    state = {k: torch.randn(s) if v.is_floating_point() else torch.zeros((), dtype=torch.int64)
             for (k, (s, _)), v in zip(shapes.items(), model.state_dict().values())}
    args = argparse.Namespace(backbone="resnet101fpn_3_256_4", ncons_channels=[16, 1], ncons_kernel_sizes=[3, 3],
                              multi_gpu=True)
    path = tmp_path / "dualrc-net.pth.tar"
    torch.save({"epoch": 15, "state_dict": state, "args": args, "optimizer": {"state": {}, "param_groups": []},
                "training_loss": 0.1, "validation_loss": 0.2}, path)
    m = featmatch.load("drcnet.resnet101_256", weights=str(path), feature_dim=8)
    w = state["module.NeighConsensus.conv.0.weight"]
    assert torch.equal(m.NeighConsensus.conv[0].weight, w.permute(1, 2, 0, 3, 4, 5))
    assert torch.equal(m.FeatureExtraction.extractor_list[2][0][22].conv3.weight,
                       state["module.FeatureExtraction.extractor_list.2.0.22.conv3.weight"])
    # a key missing -> one-line error
    del state["module.NeighConsensus.conv.2.bias"]
    torch.save({"state_dict": state, "args": args}, path)
    with pytest.raises(WeightsError, match="missing keys"):
        featmatch.load("drcnet.resnet101_256", weights=str(path), feature_dim=8)


def test_official_key_list_matches_paper_model():
    """Every key and shape of drcnet_official_keys (the released checkpoint, reference layout)."""
    keys = (Path(__file__).parent / "fixtures" / "drcnet_official_keys.txt").read_text().splitlines()
    exp = {k: tuple(int(v) for v in s.strip("[]").split(",") if v.strip()) for k, s, _ in (l.split("\t") for l in keys)}
    model = uninitialised()
    got = {k[len("module."):]: s for k, (s, _) in official_shapes(model).items()}
    assert got == exp and len(exp) == 574


def test_backbone_weights_torchvision_file(tmp_path, caplog):
    from torchvision.models import resnet101

    tv = resnet101(weights=None)
    for p in tv.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / "resnet101-63fe2227.pth"
    torch.save(tv.state_dict(), path)
    with caplog.at_level("INFO"):
        m = DRCNet(DRCNetConfig(fpn="two_heads", feature_dim=8, backbone_weights=str(path)))
    assert torch.equal(m.FeatureExtraction.extractor_list[1][0][3].conv2.weight, tv.layer2[3].conv2.weight)
    assert torch.equal(m.FeatureExtraction.extractor_list[0][0].weight, tv.conv1.weight)
    assert m.backbone_sha256 and m.backbone_sha256 in caplog.text
    torch.save({"conv1.weight": tv.conv1.weight}, path)
    with pytest.raises(WeightsError, match="not torchvision's ResNet-101"):
        DRCNet(DRCNetConfig(fpn="two_heads", feature_dim=8, backbone_weights=str(path)))


def test_bad_options_and_tiny_images():
    with pytest.raises(UsageError, match="backbone"):
        featmatch.load("drcnet.resnet101", pretrained=False, backbone="vgg")
    with pytest.raises(UsageError, match="ncons"):
        featmatch.load("drcnet.resnet101", pretrained=False, ncons_channels=(16, 2))
    with pytest.raises(UsageError, match="unknown"):
        featmatch.load("drcnet.resnet101", pretrained=False, num_match=3)
    model = DRCNet(DRCNetConfig(fpn="two_heads", feature_dim=8))
    m = model.match(torch.rand(3, 12, 40), torch.rand(3, 40, 40))  # below one coarse cell
    assert len(m) == 0
    with pytest.raises(UsageError, match="multiples of 16"):
        model(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 32, 32))
