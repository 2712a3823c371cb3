"""LIFT quadruplets from real pairs with known poses (SIFT matches verified by the epipolar
geometry), concatenated patch sets, and `featmatch train lift` on them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from featmatch.data.lift_patches import (LIFTPatchConfig, LIFTQuadruplets, build_real_patch_set,
                                         real_pair_quadruplets, verified_matches)
from featmatch.errors import FeatmatchError
from featmatch.eval.data import PosePair
from featmatch.models.lift import crop_patch

from conftest import textured

K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])


def _T(t):
    T = np.eye(4)
    T[:3, 3] = t
    return T


def test_verified_matches_keeps_mutual_ratio_and_epipolar_consistent_ones():
    rng = np.random.default_rng(0)
    d0 = rng.normal(size=(6, 128)).astype(np.float32)
    d1 = d0 + 0.01 * rng.normal(size=(6, 128)).astype(np.float32)
    xy0 = rng.uniform(20, 200, (6, 2))
    xy1 = xy0 + [15.0, 0.0]  # x translation: epipolar lines are the image rows
    xy1[4, 1] += 5.0  # descriptor match off its epipolar line
    d1[5] = d0[2] + 0.01 * rng.normal(size=128)  # keypoint 2 has two near-equal candidates: ratio test
    m = verified_matches(xy0, d0, xy1, d1, K, K, _T([-0.1, 0, 0]), ratio=0.8, max_epipolar_px=1.0)
    assert sorted(map(tuple, m.tolist())) == [(0, 0), (1, 1), (3, 3)]
    assert verified_matches(xy0, d0[:1], xy1, d1, K, K, _T([-0.1, 0, 0])).shape == (0, 2)


def _pair(tmp_path, dy=0):
    import cv2

    img = textured(240, 320, seed=4, channels=1)
    shifted = np.roll(np.roll(img, -12, 1), dy, 0)  # content moves 12 px left (and dy down)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / f"b{dy}.png"), shifted)
    return PosePair("a|b", "test", tmp_path / "a.png", tmp_path / f"b{dy}.png", K, K, _T([-0.1, 0, 0]))


def test_real_pair_quadruplets_are_the_same_points(tmp_path):
    pr = _pair(tmp_path)
    cfg = LIFTPatchConfig(max_sigma=6.0, seed=0)
    q, n = real_pair_quadruplets(pr.image0, pr.image1, pr.K0, pr.K1, pr.T_0to1, 0, cfg)
    assert n >= 10 and q is not None
    k = len(q["P"])
    assert q["P"].shape == (k, 4, 128, 128) and q["P"].dtype == np.uint8 and q["xy"].shape == (k, 4, 2)
    assert 0 < k <= 2 * n  # both directions
    assert np.all(q["angle"][:, 3] == 0)
    P = torch.from_numpy(q["P"])[:, :, None].float() / 255
    xy, ang = torch.from_numpy(q["xy"]), torch.from_numpy(q["angle"])
    c = [crop_patch(P[:, i], xy[:, i], ang[:, i]) for i in range(3)]

    def ncc(u, v):
        u, v = u.flatten(1), v.flatten(1)
        u, v = u - u.mean(1, keepdim=True), v - v.mean(1, keepdim=True)
        return (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1) + 1e-6)

    assert ncc(c[0], c[1]).median() > 0.8
    assert ncc(c[0], c[1]).median() > ncc(c[0], c[2]).median() + 0.3
    # deterministic in (seed, index)
    q2, _ = real_pair_quadruplets(pr.image0, pr.image1, pr.K0, pr.K1, pr.T_0to1, 0, cfg)
    assert np.array_equal(q["P"], q2["P"])


def test_build_real_patch_set_writes_and_rejects_wrong_geometry(tmp_path):
    good = _pair(tmp_path)
    info = build_real_patch_set([good], tmp_path / "r.npz", LIFTPatchConfig(max_sigma=6.0), max_per_pair=5)
    assert info["pairs"] == 1 and info["matches"] >= 10 and 0 < info["quadruplets"] <= 10
    assert LIFTQuadruplets(tmp_path / "r.npz").size == info["quadruplets"]
    bad = _pair(tmp_path, dy=10)  # content moves vertically: every match is off its epipolar line
    with pytest.raises(FeatmatchError, match="agrees with the ground-truth poses"):
        build_real_patch_set([bad], tmp_path / "x.npz", LIFTPatchConfig(max_sigma=6.0))
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(FeatmatchError, match="at least one pair"):
        build_real_patch_set([], tmp_path / "x.npz")
    with pytest.raises(FeatmatchError, match="no LIFT patch set given"):
        LIFTQuadruplets([])


def test_train_lift_on_concatenated_patch_sets(tmp_path):
    pr = _pair(tmp_path)
    cfg = LIFTPatchConfig(max_sigma=6.0)
    a = build_real_patch_set([pr], tmp_path / "a.npz", cfg, max_per_pair=6)["quadruplets"]
    b = build_real_patch_set([pr], tmp_path / "b.npz", LIFTPatchConfig(max_sigma=6.0, seed=3), max_per_pair=3)["quadruplets"]
    both = LIFTQuadruplets([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert both.size == a + b
    assert torch.equal(both.P[a:], LIFTQuadruplets(tmp_path / "b.npz").P)
    with pytest.raises(FeatmatchError, match="not found"):
        LIFTQuadruplets([tmp_path / "a.npz", tmp_path / "missing.npz"])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "featmatch.cli", "train", "lift", "--stage", "desc",
           "--images", f"{tmp_path / 'a.npz'},{tmp_path / 'b.npz'}", "--val-patches", str(tmp_path / "b.npz"),
           "--steps", "2", "--pairs-per-step", "2", "--val-every", "2", "--ckpt-every", "1", "--warmup", "1",
           "--threads", "1", "--support-scale", "1.4", "--val-quads", "3", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["step"] == 2 and "auc" in rec["val"]
    assert torch.load(out / "last.pt", weights_only=False)["extra"]["support_scale"] == 1.4
    bad = subprocess.run(cmd[:8] + [f"{tmp_path / 'a.npz'},{tmp_path}"] + cmd[9:-1] + [str(tmp_path / "run2")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "comma-separated" in bad.stderr and "Traceback" not in bad.stderr


def test_training_order_is_a_seeded_permutation_per_pass():
    n = 10
    d = {"P": np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(128, 2).repeat(128, 3),
         "xy": np.zeros((n, 4, 2), np.float32), "angle": np.zeros((n, 4), np.float32)}
    plain = LIFTQuadruplets(d)
    assert [int(plain[i]["P"][0, 0, 0, 0] * 255) for i in range(12)] == list(range(10)) + [0, 1]
    a, b = LIFTQuadruplets(d, shuffle_seed=0), LIFTQuadruplets(d, shuffle_seed=0)

    def ids(ds, lo, hi):
        return [round(float(ds[i]["P"][0, 0, 0, 0]) * 255) for i in range(lo, hi)]

    first, second = ids(a, 0, n), ids(a, n, 2 * n)
    assert sorted(first) == sorted(second) == list(range(n))  # every quadruplet once per pass
    assert first != list(range(n)) and first != second  # shuffled, anew each pass
    assert ids(b, n, 2 * n) + ids(b, 0, n) == second + first  # a pure function of the index
    assert ids(LIFTQuadruplets(d, shuffle_seed=1), 0, n) != first


def test_train_lift_next_stage_starts_from_the_previous_model(tmp_path, capsys):
    """`--stage ori --start RUN/model.pt`: the new run holds the previous stage's weights (the
    networks it does not train stay exactly those); a later stage without --start, a missing
    or a non-checkpoint --start file: one-line errors, no run directory left behind."""
    import argparse

    from featmatch.cli import main
    from featmatch.train.cli import _add_args
    from featmatch.train.recipes.lift import build_run

    pr = _pair(tmp_path)
    build_real_patch_set([pr], tmp_path / "a.npz", LIFTPatchConfig(max_sigma=6.0), max_per_pair=6)
    base = ["train", "lift", "--images", str(tmp_path / "a.npz"), "--val-patches", str(tmp_path / "a.npz"),
            "--steps", "1", "--pairs-per-step", "2", "--val-every", "1", "--ckpt-every", "1", "--warmup", "1"]
    assert main(base + ["--stage", "desc", "--out", str(tmp_path / "desc")]) == 0
    assert main(base + ["--stage", "desc", "--negatives", "batch", "--out", str(tmp_path / "desc_b")]) == 0
    ck = torch.load(tmp_path / "desc_b" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["extra"]["negatives"] == "batch"
    assert "nn_acc" in json.loads((tmp_path / "desc_b" / "log.jsonl").read_text().splitlines()[-2])["val"]
    state = torch.load(tmp_path / "desc" / "model.pt", map_location="cpu", weights_only=True)
    # a recognisable start: the run's file (its keys, dtypes) with every weight moved
    state = {k: v + 0.25 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, tmp_path / "start.pt")
    desc = {k[4:] if k.startswith("net.") else k: v for k, v in state.items()}
    capsys.readouterr()

    parser = argparse.ArgumentParser()
    _add_args(parser)  # the CLI's own options and defaults
    args = parser.parse_args(base[1:] + ["--stage", "ori", "--start", str(tmp_path / "start.pt"),
                                                  "--out", str(tmp_path / "ori")])
    trainer = build_run(args)
    got = trainer.model.state_dict()
    assert set(got) == set(desc) and all(torch.equal(got[k], desc[k].float()) for k in desc), "--start not loaded"

    cases = [(["--stage", "det"], "pass --start RUN/model.pt"),
             (["--stage", "ori", "--start", str(tmp_path / "start.pt"), "--negatives", "batch"],
              "--negatives is an option of --stage desc"),
             (["--stage", "desc", "--negatives", "batch", "--pairs-per-step", "1"],
              "--pairs-per-step must be at least 2 with --negatives batch"),
             (["--stage", "desc", "--pairs-per-step", "0"], "--pairs-per-step must be at least 1, got 0"),
             (["--stage", "ori", "--start", str(tmp_path / "none.pt")], "weights file not found"),
             (["--stage", "ori", "--start", str(tmp_path / "a.png")], "a.png"),
             (["--stage", "desc", "--appearance", "strong"], "--appearance applies to the synthetic pairs")]
    for extra, message in cases:
        out = tmp_path / f"bad{len(extra)}{extra[-1][-5:]}"
        assert main(base + extra + ["--out", str(out)]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert not (out / "last.pt").exists()
