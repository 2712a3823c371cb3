"""Training LoFTR with the shared trainer: the sampled coarse ids, a loss that goes down on
a fixed batch, bit-identical resume, validation, and the CLI end to end."""

import json
import subprocess
import sys

import cv2
import pytest
import torch

from featmatch.data import SyntheticConfig, SyntheticPairs
from featmatch.models.loftr import LoFTR, LoFTRConfig
from featmatch.registry import make_config
from featmatch.train.recipes.loftr import LoFTRRecipe, LoFTRRecipeConfig, training_coarse_ids
from featmatch.train.trainer import TrainConfig, Trainer

from conftest import textured

#: an even smaller LoFTR than loftr.tiny for fast tests
MINI = dict(initial_dim=8, block_dims=(8, 16, 32), coarse_heads=2, coarse_layers=("self", "cross"), fine_heads=2,
            fine_layers=("self", "cross"), pos_encoding_fix=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i in range(2):
        cv2.imwrite(str(d / f"p{i}.png"), textured(160, 200, seed=20 + i))
    return d


def _batch(photos, n=2, size=(96, 96)):
    ds = SyntheticPairs(photos, SyntheticConfig(size=size, seed=3))
    return {k: torch.stack([ds[i][k] for i in range(n)]) for k in ds[0]}


def test_training_coarse_ids_mix_predictions_and_ground_truth():
    pred = [torch.tensor(v) for v in ([0, 0, 0, 1], [1, 2, 3, 4], [5, 6, 7, 8])]
    gt = [torch.tensor(v) for v in ([0, 0, 1, 1, 1], [10, 11, 12, 13, 14], [20, 21, 22, 23, 24])]
    g = torch.Generator().manual_seed(0)
    b, i, j = training_coarse_ids(*pred, *gt, batch=2, max_pred=2, min_gt=1, gen=g)
    # pair 0: 2 of 3 predictions + 1 GT (min_gt) -> 3; pair 1: its 1 prediction + 1 GT (to reach max_pred)
    assert (b == 0).sum() == 3 and (b == 1).sum() == 2
    assert set(i[b == 0].tolist()) - {1, 2, 3} <= {10, 11} and len(set(i[b == 0].tolist()) & {10, 11}) == 1
    assert 4 in i[b == 1].tolist()
    # every id keeps its own (i, j) pairing
    pairs = set(zip(i.tolist(), j.tolist()))
    assert pairs <= {(1, 5), (2, 6), (3, 7), (4, 8), (10, 20), (11, 21), (12, 22), (13, 23), (14, 24)}
    b, i, j = training_coarse_ids(*pred, *gt, batch=2, max_pred=0, min_gt=10, gen=g)  # all GT, none predicted
    assert sorted(i.tolist()) == [10, 11, 12, 13, 14]


def test_loss_parts_and_gradients(photos):
    torch.manual_seed(0)
    net = LoFTR(LoFTRConfig(**MINI))
    loss, logs = LoFTRRecipe(LoFTRRecipeConfig(min_gt=32)).loss(net, _batch(photos))
    assert torch.isfinite(loss) and loss > 0
    assert logs["gt_matches"] > 20 and logs["loss_fine"] > 0
    loss.backward()
    for name in ("backbone.conv1.weight", "loftr_coarse.layers.0.q_proj.weight", "loftr_fine.layers.0.q_proj.weight"):
        g = dict(net.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


@pytest.mark.parametrize("coarse_loss", ["focal", "nll"])
def test_loss_decreases_on_a_fixed_batch(photos, coarse_loss):
    torch.manual_seed(0)
    batch = _batch(photos)
    net = LoFTR(LoFTRConfig(**MINI))
    recipe = LoFTRRecipe(LoFTRRecipeConfig(coarse_loss=coarse_loss, min_gt=32))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = recipe.loss(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.7 * losses[0], losses


def test_bad_coarse_loss_name():
    with pytest.raises(ValueError, match="focal"):
        LoFTRRecipe(LoFTRRecipeConfig(coarse_loss="l2"))


def _trainer(photos, out, steps):
    torch.manual_seed(0)
    ds = SyntheticPairs(photos, SyntheticConfig(size=(96, 96), seed=1))
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, warmup_steps=2, val_every=0, ckpt_every=2, log_every=1)
    return Trainer(LoFTR(LoFTRConfig(**MINI)), LoFTRRecipe(LoFTRRecipeConfig(min_gt=16)), ds, out, cfg)


def test_resume_is_bit_identical(photos, tmp_path):
    full = _trainer(photos, tmp_path / "full", 4)
    full.fit()
    _trainer(photos, tmp_path / "part", 2).fit()  # "killed" after 2 steps
    resumed = _trainer(photos, tmp_path / "part", 4)
    resumed.fit(resume=True)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_validation_metrics(photos):
    from featmatch.train.recipes.loftr import evaluate_dense

    ds = SyntheticPairs(photos, SyntheticConfig(size=(96, 96), seed=5))
    torch.manual_seed(0)
    res = evaluate_dense(LoFTR(LoFTRConfig(**MINI, threshold=0.0)), ds, 2)
    assert set(res) == {"mma@1", "mma@3", "mma@5", "h_acc@3", "matches"}
    assert 0 <= res["mma@1"] <= res["mma@3"] <= res["mma@5"] <= 1 and 0 <= res["h_acc@3"] <= 1


def test_train_cli_loftr_end_to_end(photos, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "featmatch.cli", "train", "loftr", "--images", str(photos), "--steps", "2",
           "--out", str(out), "--size", "128x96", "--batch-size", "1", "--val-every", "2", "--ckpt-every", "1",
           "--warmup", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["step"] == 2 and "h_acc@3" in rec["val"]
    import featmatch

    m = featmatch.load("loftr.tiny", weights=out / "model.pt")  # the trained weights load strictly
    assert m.config == make_config("loftr.tiny")


def test_train_loftr_init_official_starts_from_the_shipped_checkpoint(photos, tmp_path):
    import argparse

    import featmatch
    from featmatch.train.cli import _add_args, build_loftr_run

    p = argparse.ArgumentParser()
    _add_args(p)
    base = ["loftr", "--images", str(photos), "--steps", "2", "--size", "128x96", "--batch-size", "1"]
    shipped = featmatch.load("loftr.tiny").state_dict()
    tuned = build_loftr_run(p.parse_args(base + ["--init", "official", "--out", str(tmp_path / "a")]))
    assert all(torch.equal(tuned.model.state_dict()[k], v.float()) for k, v in shipped.items())
    assert tuned.cfg.keep_best == "mma@3"  # fine-tuning keeps the best weights, the start included
    scratch = build_loftr_run(p.parse_args(base + ["--out", str(tmp_path / "b")]))
    assert not all(torch.equal(scratch.model.state_dict()[k], v.float()) for k, v in shipped.items())
    # --start FILE fine-tunes a given loftr.tiny weights file (e.g. an earlier run's export)
    torch.save(scratch.model.state_dict(), tmp_path / "earlier.pt")
    again = build_loftr_run(p.parse_args(base + ["--start", str(tmp_path / "earlier.pt"), "--out", str(tmp_path / "c")]))
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in scratch.model.state_dict().items())
    assert again.cfg.keep_best == "mma@3"


def test_train_xfeat_start_continues_from_a_weights_file(photos, tmp_path):
    """--start FILE for xfeat: a featmatch XFeat weights file (e.g. a run's model.pt, to go on at a
    larger --size) becomes the starting weights, keep-best included; without it: random weights."""
    import argparse

    from featmatch.train.cli import _add_args, build_xfeat_run

    p = argparse.ArgumentParser()
    _add_args(p)
    base = ["xfeat", "--images", str(photos), "--steps", "2", "--size", "128x96", "--batch-size", "1",
            "--teacher", "fast"]
    first = build_xfeat_run(p.parse_args(base + ["--out", str(tmp_path / "a")]))
    earlier = {k: v + 0.01 if v.is_floating_point() else v for k, v in first.model.state_dict().items()}
    torch.save(earlier, tmp_path / "earlier.pt")
    again = build_xfeat_run(p.parse_args(base + ["--start", str(tmp_path / "earlier.pt"), "--out", str(tmp_path / "b")]))
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in earlier.items())
    assert again.cfg.keep_best == "mma@3"  # never ends worse than the start on the validation
    scratch = build_xfeat_run(p.parse_args(base + ["--out", str(tmp_path / "c")]))
    assert not all(torch.equal(scratch.model.state_dict()[k], v) for k, v in earlier.items())
    assert scratch.cfg.keep_best is None


@pytest.mark.parametrize("argv, message", [
    (["loftr", "--start", "missing.pt"], "weights file not found"),
    (["xfeat", "--start", "some.pt"], "weights file not found"),
    (["xfeat", "--start", __file__, "--init", "official"], "not both"),
    (["loftr", "--start", __file__, "--init", "official"], "not both"),
    (["loftr", "--scale", "2"], "--scale must look like"),
    (["loftr", "--perspective", "0.7"], "--perspective must be in"),
])
def test_train_cli_refuses_bad_start_scale_perspective(photos, tmp_path, argv, message):
    cmd = [sys.executable, "-m", "featmatch", "train", *argv, "--images", str(photos), "--steps", "1",
           "--out", str(tmp_path / "run")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
