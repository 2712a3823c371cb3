"""The trainer on tiny data: the loss goes down, resume is bit-identical, corrupt
checkpoints are reported and left alone, and the CLI works end to end."""

import json
import subprocess
import sys

import cv2
import pytest
import torch

from featmatch.data import SyntheticConfig, SyntheticPairs
from featmatch.errors import FeatmatchError
from featmatch.models.xfeat import XFeatNet
from featmatch.train.recipes.xfeat import XFeatRecipe, XFeatRecipeConfig, coarse_correspondences_h
from featmatch.train.trainer import TrainConfig, Trainer

from conftest import textured


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i in range(2):
        cv2.imwrite(str(d / f"p{i}.png"), textured(160, 200, seed=10 + i))
    return d


def _trainer(photos, out, steps, **kw):
    torch.manual_seed(0)
    ds = SyntheticPairs(photos, SyntheticConfig(size=(96, 96), seed=1))
    recipe = XFeatRecipe(XFeatRecipeConfig(teacher="fast", min_correspondences=8), val_set=None)
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, warmup_steps=2, val_every=0, ckpt_every=2, log_every=1, **kw)
    return Trainer(XFeatNet(), recipe, ds, out, cfg)


def test_coarse_correspondences_identity():
    i0, i1, labels = coarse_correspondences_h(torch.eye(3), None, (4, 5))
    assert torch.equal(i0, i1) and len(i0) == 20
    assert (labels == 3 * 8 + 3).all()  # a cell matched to itself has class (3, 3)
    shift = torch.tensor([[1.0, 0, 2.0], [0, 1, 0], [0, 0, 1]])  # image 1 = image 0 moved 2 px right
    i0, i1, labels = coarse_correspondences_h(shift, None, (4, 5))
    assert (labels == 3 * 8 + 1).all()  # centre of image-1 cell lies 2 px left in image 0


def test_loss_decreases_on_a_fixed_batch(photos):
    torch.manual_seed(0)
    ds = SyntheticPairs(photos, SyntheticConfig(size=(96, 96), seed=1))
    batch = {k: torch.stack([ds[0][k], ds[1][k]]) for k in ds[0]}
    net = XFeatNet()
    recipe = XFeatRecipe(XFeatRecipeConfig(teacher="fast", min_correspondences=8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss, _ = recipe.loss(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_is_bit_identical(photos, tmp_path):
    full = _trainer(photos, tmp_path / "full", 4)
    full.fit()
    part = _trainer(photos, tmp_path / "part", 2)  # "killed" after 2 steps (checkpoint at 2)
    part.fit()
    with open(tmp_path / "part" / "log.jsonl", "a") as f:  # logged after the checkpoint, then killed mid-line
        f.write('{"step": 3, "loss": 9.9}\n{"step": 4, "lo')
    resumed = _trainer(photos, tmp_path / "part", 4)
    resumed.fit(resume=True)
    assert resumed.step == 4
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    logs = [json.loads(l) for l in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3, 4]  # no duplicates of the lost steps
    assert all(r.get("loss") != 9.9 for r in logs)


def test_corrupt_checkpoint_is_reported_and_kept(photos, tmp_path):
    out = tmp_path / "run"
    _trainer(photos, out, 2).fit()
    ck = out / "last.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    before = ck.read_bytes()
    with pytest.raises(FeatmatchError, match="corrupt"):
        _trainer(photos, out, 4).fit(resume=True)
    assert ck.read_bytes() == before
    with pytest.raises(FeatmatchError, match="already holds a run"):
        _trainer(photos, out, 4).fit()


def test_train_cli_end_to_end(photos, tmp_path):
    from test_eval_data import make_pose_scene

    scene = make_pose_scene(tmp_path / "scene", n_pairs=2)
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "featmatch.cli", "train", "xfeat", "--images", str(photos), "--steps", "2",
           "--out", str(out), "--teacher", "fast", "--size", "96x96", "--batch-size", "1", "--val-every", "2",
           "--ckpt-every", "1", "--warmup", "1", "--val-pose", str(scene), "--keep-best", "pose_auc@10"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["step"] == 2 and 0 <= rec["val"]["pose_auc@10"] <= 1 and 0 <= rec["val"]["pose_precision"] <= 1
    assert rec["best"]["metric"] == "pose_auc@10" and (out / "best.pt").is_file()
    import featmatch

    m = featmatch.load("xfeat", weights=out / "model.pt")  # trained weights load strictly
    assert m.extract(textured(64, 64)).descriptors.shape[-1] == 64
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "already holds a run" in res.stderr
    bad = [a if a != "96x96" else "100x90" for a in cmd]
    bad[bad.index(str(out))] = str(tmp_path / "other")
    res = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "multiples of 32" in res.stderr


def test_freeze_bn_keeps_running_statistics(photos, tmp_path):
    t = _trainer(photos, tmp_path / "fz", 2, freeze_bn=True)
    before = {k: v.clone() for k, v in t.model.state_dict().items() if "running" in k}
    t.fit()
    after = t.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    t2 = _trainer(photos, tmp_path / "nf", 2)
    t2.fit()
    assert any(not torch.equal(v, t2.model.state_dict()[k]) for k, v in before.items())


class _ScriptedVal(XFeatRecipe):
    """Validation results from a script (to test best-checkpoint keeping)."""

    def __init__(self, values):
        super().__init__(XFeatRecipeConfig(teacher="fast", min_correspondences=8), val_set=None)
        self.values = list(values)

    def validate(self, model):
        return {"score": self.values.pop(0)}


def test_keep_best_keeps_the_best_validated_weights_including_the_start(photos, tmp_path):
    ds = SyntheticPairs(photos, SyntheticConfig(size=(96, 96), seed=1))
    torch.manual_seed(0)
    net = XFeatNet()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, val_every=2, ckpt_every=2, keep_best="score")
    t = Trainer(net, _ScriptedVal([0.5, 0.4, 0.3]), ds, tmp_path / "kb", cfg)  # validations at steps 0, 2, 4
    t.fit()
    assert t.best == {"step": 0, "metric": "score", "value": 0.5}
    best = torch.load(tmp_path / "kb" / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in start.items())  # the start was best: unchanged weights
    result = torch.load(tmp_path / "kb" / "model.pt", weights_only=True)  # the run's result = the best
    assert all(torch.equal(result[k], v) for k, v in start.items())
    last = torch.load(tmp_path / "kb" / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(last[k], v) for k, v in start.items())  # training did move the weights
    t2 = Trainer(XFeatNet(), _ScriptedVal([0.1, 0.4, 0.3]), ds, tmp_path / "kb2", cfg)
    t2.fit()
    assert t2.best["step"] == 2
    bad = Trainer(XFeatNet(), _ScriptedVal([0.1]), ds, tmp_path / "kb3", TrainConfig(steps=1, keep_best="mma@9"))
    with pytest.raises(FeatmatchError, match="no metric 'mma@9'"):
        bad.fit()
