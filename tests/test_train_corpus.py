"""Training on a photo corpus: the seeded split by file, augmentation ranges, rotation ground
truth, mixed photo formats, DataLoader worker determinism, bf16 autocast in the trainer and
resume after kill -9 (all on small images made here)."""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from featmatch.data import (SyntheticConfig, SyntheticPairs, list_images, photometric, read_split, split_files,
                            write_split)
from featmatch.errors import FeatmatchError, UsageError

from conftest import textured

NO_PHOTO = dict(noise_std=0.0, blur_prob=0.0, brightness=0.0, contrast=0.0, gamma=(1.0, 1.0))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small photo tree: colour PNG/JPEG, grey PNG, 16-bit PNG, in sub-folders."""
    d = tmp_path_factory.mktemp("corpus")
    (d / "a" / "deep").mkdir(parents=True)
    (d / "b").mkdir()
    cv2.imwrite(str(d / "a" / "c0.png"), textured(120, 160, seed=1))
    cv2.imwrite(str(d / "a" / "deep" / "c1.jpg"), textured(130, 150, seed=2))
    cv2.imwrite(str(d / "b" / "g0.png"), textured(120, 140, seed=3, channels=1))
    cv2.imwrite(str(d / "b" / "w16.png"), textured(110, 150, seed=4, channels=1).astype(np.uint16) * 257)
    return d


# -- split -------------------------------------------------------------------------------
def test_split_is_seeded_by_file_and_order_independent(tmp_path):
    files = [tmp_path / f"s{i // 10}" / f"p{i:03d}.jpg" for i in range(60)]
    tr, va = split_files(files, tmp_path, 0.1, seed=0)
    assert len(va) == 6 and len(tr) == 54 and not set(tr) & set(va) and set(tr) | set(va) == set(files)
    assert (tr, va) == split_files(list(reversed(files)), tmp_path, 0.1, seed=0)  # listing order
    assert split_files(files, tmp_path, 0.1, seed=1)[1] != va  # the seed matters
    # the folder's location does not matter (relative paths are hashed)
    moved = [tmp_path / "elsewhere" / f.relative_to(tmp_path) for f in files]
    assert [f.relative_to(tmp_path / "elsewhere") for f in split_files(moved, tmp_path / "elsewhere", 0.1)[1]] == \
        [f.relative_to(tmp_path) for f in va]
    # adding photos moves no held-out photo into training (the count grows at the boundary)
    more = files + [tmp_path / "new" / f"q{i}.jpg" for i in range(5)]
    assert set(va) <= set(split_files(more, tmp_path, 0.1)[1])
    # the earlier rule, for older runs
    assert split_files(files, tmp_path, "tenth")[1] == sorted(files)[::10]
    assert split_files(files[:1], tmp_path, 0.1) == (files[:1], files[:1])


def test_split_file_round_trip_and_missing_photo(tree, tmp_path):
    files = list_images(tree)
    tr, va = split_files(files, tree, 0.25, seed=3)
    write_split(tmp_path / "run" / "split.json", tree, tr, va, 0.25, 3)
    doc = json.loads((tmp_path / "run" / "split.json").read_text())
    assert doc["val_count"] == 1 and not any(str(tree) in p for p in doc["train"] + doc["val"])
    assert read_split(tmp_path / "run" / "split.json", tree) == (tr, va)
    with pytest.raises(FeatmatchError, match="missing under"):
        read_split(tmp_path / "run" / "split.json", tmp_path)


def test_cli_writes_split_and_reuses_it_on_resume(tree, tmp_path):
    from featmatch.train.cli import _datasets

    args = argparse.Namespace(images=str(tree), out=str(tmp_path / "run"), resume=False, val_split="0.3",
                              split_seed=0, rotation=90.0, jpeg=0.5, val_pairs=4, seed=0, pairs=None,
                              batch_size=2, init="scratch", scale="0.5,2", perspective=0.2)
    train, val, meta = _datasets(args, (64, 64))
    assert (tmp_path / "run" / "split.json").is_file() and meta["val_images"] == 2 and meta["train_images"] == 2
    assert train.config.max_rotation_deg == 90.0 and train.config.jpeg_prob == 0.5
    assert train.config.scale_range == (0.5, 2.0) and train.config.perspective == 0.2
    assert val.config.scale_range == (0.5, 2.0) and meta["scale"] == [0.5, 2.0] and meta["perspective"] == 0.2
    assert not set(train.files) & set(val.files)
    extra = tree / "b" / "zz_new.png"  # a photo added later does not change a resumed run's split
    cv2.imwrite(str(extra), textured(100, 100, seed=9))
    try:
        args.resume = True
        train2, val2, _ = _datasets(args, (64, 64))
        assert (train2.files, val2.files) == (train.files, val.files)
    finally:
        extra.unlink()
    for key, bad in (("val_split", "0.9"), ("val_split", "half"), ("rotation", 200.0), ("jpeg", 1.5),
                     ("scale", "2"), ("scale", "2,0.5"), ("scale", "0,1"), ("perspective", 0.6)):
        with pytest.raises(UsageError):
            _datasets(argparse.Namespace(**{**vars(args), "resume": False, key: bad}), (64, 64))


# -- augmentation ------------------------------------------------------------------------
def test_photometric_parameters_stay_in_their_ranges():
    cfg = SyntheticConfig(jpeg_prob=0.5, jpeg_quality=(40, 60), blur_prob=0.5)
    img = textured(48, 64)
    seen = {"blur": 0, "jpeg": 0}
    for s in range(120):
        out, p = photometric(img, np.random.default_rng(s), cfg)
        assert out.dtype == np.float32 and out.shape == img.shape and 0 <= out.min() and out.max() <= 1
        assert 1 - cfg.contrast <= p["contrast"] <= 1 + cfg.contrast
        assert abs(p["brightness"]) <= cfg.brightness and cfg.gamma[0] <= p["gamma"] <= cfg.gamma[1]
        assert 0 <= p["noise_std"] <= cfg.noise_std
        assert p["blur_sigma"] == 0 or cfg.blur_sigma[0] <= p["blur_sigma"] <= cfg.blur_sigma[1]
        assert p["jpeg_quality"] == 0 or 40 <= p["jpeg_quality"] <= 60
        seen["blur"] += p["blur_sigma"] > 0
        seen["jpeg"] += p["jpeg_quality"] > 0
    assert 30 < seen["blur"] < 90 and 30 < seen["jpeg"] < 90  # both probabilities ~0.5


def test_photometric_effects():
    flat = np.full((32, 32, 3), 128, np.uint8)
    cfg = SyntheticConfig(**{**NO_PHOTO, "brightness": 0.2})
    out, p = photometric(flat, np.random.default_rng(0), cfg)
    assert np.allclose(out, np.clip(128 / 255 + p["brightness"], 0, 1), atol=1e-6)  # additive brightness
    out, p = photometric(flat, np.random.default_rng(0), SyntheticConfig(**{**NO_PHOTO, "gamma": (2.0, 2.0)}))
    assert np.allclose(out, (128 / 255) ** 2, atol=1e-6)
    img = textured(64, 64)
    same, _ = photometric(img, np.random.default_rng(0), SyntheticConfig(**NO_PHOTO))
    assert np.allclose(same, img / 255.0, atol=1e-6)  # everything off: the identity
    err = {}
    for q in (10, 95):
        out, p = photometric(img, np.random.default_rng(0), SyntheticConfig(**NO_PHOTO, jpeg_prob=1.0, jpeg_quality=(q, q)))
        assert p["jpeg_quality"] == q
        err[q] = np.abs(out.mean(-1) - same.mean(-1)).mean()  # luma error (chroma is subsampled)
    assert 0.005 < err[95] < err[10] < 0.08, err  # lossy, more so at low quality, still the same picture
    # with jpeg_prob 0 no extra random number is drawn: pairs of older runs are unchanged
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    photometric(img, r1, SyntheticConfig())
    photometric(img, r2, SyntheticConfig(jpeg_prob=0.0, jpeg_quality=(1, 2)))
    assert r1.uniform() == r2.uniform()


def test_appearance_options_colour_cast_and_shading():
    flat = np.full((48, 64, 3), 128, np.uint8)
    base = 128 / 255
    cfg = SyntheticConfig(**NO_PHOTO, colour_cast=0.3)
    seen = set()
    for s in range(40):
        out, p = photometric(flat, np.random.default_rng(s), cfg)
        g = np.array(p["colour_gains"])
        assert np.all(np.abs(g - 1) <= 0.3) and p["shade"] == 0.0
        assert np.allclose(out, np.clip(base * g, 0, 1)[None, None], atol=1e-6)  # one gain per channel
        seen.add(tuple(np.round(g, 3)))
    assert len(seen) == 40  # drawn per image
    cfg = SyntheticConfig(**NO_PHOTO, shade_prob=1.0, shade_strength=0.8)
    for s in range(40):
        out, p = photometric(flat, np.random.default_rng(s), cfg)
        assert -0.4 <= p["shade"] <= 0.8 and p["colour_gains"] == (1.0, 1.0, 1.0)
        ratio = out[..., 0] / base
        assert np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2])  # grey stays grey
        # a soft patch: the factor 1 - a * mask spans [1 - a, 1] (mask in [0, 1]), untouched somewhere or reaching it
        lo, hi = sorted((1.0, 1 - p["shade"]))
        assert lo - 1e-5 <= ratio.min() and ratio.max() <= hi + 1e-5
        if abs(p["shade"]) > 0.2:
            assert ratio.max() - ratio.min() > 0.05, p
    # shade_prob 0.5: about half the images
    n = sum(photometric(flat, np.random.default_rng(s), SyntheticConfig(**NO_PHOTO, shade_prob=0.5))[1]["shade"] != 0
            for s in range(100))
    assert 30 < n < 70
    # off (the defaults) draws nothing extra: older runs' pairs are unchanged
    img = textured(32, 32)
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    photometric(img, r1, SyntheticConfig())
    photometric(img, r2, SyntheticConfig(colour_cast=0.0, shade_prob=0.0, shade_strength=0.3))
    assert r1.uniform() == r2.uniform()


def test_appearance_presets_and_the_cli_option(tree, tmp_path):
    from featmatch.data.synthetic import APPEARANCE_PRESETS, appearance_preset

    assert appearance_preset("standard") == {}
    strong = appearance_preset("strong")
    assert strong["colour_cast"] > 0 and strong["shade_prob"] > 0
    assert set(strong) <= set(SyntheticConfig.__dataclass_fields__)
    with pytest.raises(UsageError, match="appearance"):
        appearance_preset("vivid")
    assert set(APPEARANCE_PRESETS) == {"standard", "strong"}
    from featmatch.train.cli import _datasets

    args = argparse.Namespace(images=str(tree), out=str(tmp_path / "run"), resume=False, val_split="0.2",
                              split_seed=0, rotation=25.0, jpeg=0.0, scale="0.75,1.3", perspective=0.12,
                              val_pairs=4, pairs=None, seed=0, init="scratch", batch_size=2, appearance="strong")
    train, val, meta = _datasets(args, (64, 64))
    assert meta["appearance"] == "strong"
    assert train.config.colour_cast == strong["colour_cast"] and val.config.shade_prob == strong["shade_prob"]
    train, _, meta = _datasets(argparse.Namespace(**{**vars(args), "appearance": "standard"}), (64, 64))
    assert meta["appearance"] == "standard" and train.config.colour_cast == 0 and train.config.shade_prob == 0


def test_rotation_ground_truth_is_consistent_up_to_180_degrees(tree):
    cfg = SyntheticConfig(size=(96, 96), seed=2, max_rotation_deg=180.0, scale_range=(1.0, 1.0),
                          max_translation=0.0, perspective=0.0, crop_scale=(0.6, 0.6), **NO_PHOTO)
    ds = SyntheticPairs(tree, cfg)
    angles = []
    for i in range(12):
        item = ds[i]
        H = item["H_0to1"].double().numpy()
        angles.append(math.degrees(math.atan2(H[1, 0], H[0, 0])))
        assert np.allclose(H[:2, :2].T @ H[:2, :2], np.eye(2), atol=1e-5)  # a pure rotation here
        img0 = (item["image0"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        warped = cv2.warpPerspective(img0, H, (96, 96)).astype(np.float32) / 255
        inner = cv2.erode(item["valid1"].numpy().astype(np.uint8), np.ones((7, 7))) > 0
        inner &= cv2.erode(cv2.warpPerspective(np.ones((96, 96), np.uint8), H, (96, 96)), np.ones((7, 7))) > 0
        assert inner.sum() > 1500
        assert np.abs(warped - item["image1"].permute(1, 2, 0).numpy())[inner].mean() < 0.05, i
    assert max(abs(a) for a in angles) > 90 and all(abs(a) <= 180 for a in angles)
    small = SyntheticPairs(tree, SyntheticConfig(size=(96, 96), max_rotation_deg=10.0, perspective=0.0))
    for i in range(10):
        H = small[i]["H_0to1"].double().numpy()
        assert abs(math.degrees(math.atan2(H[1, 0], H[0, 0]))) <= 10.0 + 1e-6


def test_mixed_formats_grey_colour_16bit(tree):
    files = list_images(tree)
    assert [f.name for f in files] == ["c0.png", "c1.jpg", "g0.png", "w16.png"]
    ds = SyntheticPairs(files[2:], SyntheticConfig(size=(64, 64), **NO_PHOTO))
    for i in range(4):
        item = ds[i]
        assert item["image0"].shape == (3, 64, 64) and item["image0"].dtype == torch.float32
        assert torch.equal(item["image0"][0], item["image0"][1])  # a grey photo stays grey
        assert item["image0"].std() > 0.05  # 16-bit content kept its contrast


def test_workers_give_the_same_batches_as_the_main_process(tree):
    from featmatch.data import worker_init

    ds = SyntheticPairs(tree, SyntheticConfig(size=(64, 48), seed=4, max_rotation_deg=180.0, jpeg_prob=0.7))
    ref = list(torch.utils.data.DataLoader(ds, batch_size=3, sampler=range(9), num_workers=0))
    # the parent's OpenCV thread pool is running (as after `--threads 2`): forked workers used
    # to deadlock in worker_init's cv2.setNumThreads; timeout turns a hang into a failure
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        cv2.GaussianBlur(np.random.rand(1500, 1500).astype(np.float32), (0, 0), 3)
        par = list(torch.utils.data.DataLoader(ds, batch_size=3, sampler=range(9), num_workers=2,
                                               worker_init_fn=worker_init, timeout=60))
    finally:
        cv2.setNumThreads(before)
    for a, b in zip(ref, par):
        assert all(torch.equal(a[k], b[k]) for k in a)


# -- trainer: autocast and channels-last ---------------------------------------------------
def test_autocast_model_returns_float32_and_keeps_float32_weights(tree, tmp_path):
    from featmatch.models.xfeat import XFeatNet
    from featmatch.train.recipes.xfeat import XFeatRecipe, XFeatRecipeConfig
    from featmatch.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    ds = SyntheticPairs(tree, SyntheticConfig(size=(64, 64), seed=1))
    recipe = XFeatRecipe(XFeatRecipeConfig(teacher="fast", min_correspondences=4))
    cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=1, val_every=0, ckpt_every=2, log_every=1, amp=True,
                      channels_last=True, device="cpu")
    t = Trainer(XFeatNet(), recipe, ds, tmp_path / "amp", cfg)
    feats, kp, rel = t.train_model(ds[0]["image0"][None])
    assert feats.dtype == kp.dtype == rel.dtype == torch.float32
    t.fit()
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(math.isfinite(json.loads(l).get("loss", 0.0)) for l in (tmp_path / "amp" / "log.jsonl").read_text().splitlines())


def test_loftr_fine_moments_are_float32_under_autocast():
    from featmatch.models.loftr.fine import expectation_and_std

    g = torch.Generator().manual_seed(0)
    w0, w1 = torch.randn(50, 25, 16, generator=g), torch.randn(50, 25, 16, generator=g)
    m32, s32 = expectation_and_std(w0, w1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m16, s16 = expectation_and_std(w0, w1)
    assert m16.dtype == s16.dtype == torch.float32
    assert (m16 - m32).abs().max() < 0.05 and (s16 - s32).abs().max() < 0.05


# -- resume after kill -9 ------------------------------------------------------------------------
def _train_cmd(images, out, steps):
    return [sys.executable, "-m", "featmatch.cli", "train", "xfeat", "--images", str(images), "--steps", str(steps),
            "--out", str(out), "--teacher", "fast", "--size", "64x64", "--batch-size", "1", "--val-every", "0",
            "--ckpt-every", "5", "--warmup", "2", "--threads", "1", "--val-split", "0.25", "--rotation", "90",
            "--jpeg", "0.5", "--amp", "--channels-last"]


def test_resume_after_kill_9_matches_an_uninterrupted_run(tree, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 24
    full = subprocess.run(_train_cmd(tree, tmp_path / "full", steps), capture_output=True, text=True, env=env,
                          timeout=300)
    assert full.returncode == 0, full.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(tree, run, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    step = torch.load(run / "last.pt", weights_only=True)["step"]
    assert step < steps
    res = subprocess.run(_train_cmd(tree, run, steps) + ["--resume"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert logged == sorted(set(logged)) and logged[-1] == steps


def test_resume_with_other_data_options_is_refused(tree, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    cmd = [c for c in _train_cmd(tree, run, 5) if c not in ("--amp", "--channels-last")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    before = (run / "last.pt").read_bytes()
    cmd[cmd.index("--steps") + 1] = "8"
    for flag, value in (("--rotation", "45"), ("--scale", "0.5,2"), ("--size", "96x64"), ("--appearance", "strong")):
        # argparse keeps the last value of a repeated option
        res = subprocess.run(cmd + [flag, value, "--resume"], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 2 and "was started with" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert (run / "last.pt").read_bytes() == before  # nothing trained, nothing overwritten
    same = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert same.returncode == 0, same.stderr


def test_resume_of_a_run_older_than_an_option_compares_the_old_default(tree, tmp_path):
    """A run started before --appearance / --scale existed stored neither; it used what are now
    the defaults, so resuming it with another value is refused too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "old"
    cmd = [c for c in _train_cmd(tree, run, 3) if c not in ("--amp", "--channels-last")]
    cmd[cmd.index("--rotation") + 1] = "25"
    cmd[cmd.index("--jpeg") + 1] = "0"
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    ck = torch.load(run / "last.pt", weights_only=False)
    for key in ("appearance", "scale", "perspective", "rotation", "jpeg"):
        del ck["extra"][key]
    torch.save(ck, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    cmd[cmd.index("--steps") + 1] = "5"
    for flag, value in (("--appearance", "strong"), ("--scale", "0.5,2"), ("--perspective", "0.2"),
                        ("--rotation", "90"), ("--jpeg", "0.5")):
        res = subprocess.run(cmd + [flag, value, "--resume"], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 2 and "was started with" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert (run / "last.pt").read_bytes() == before
    same = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert same.returncode == 0, same.stderr


def test_amp_scope_model_or_whole_loss(tmp_path):
    from featmatch.train.trainer import TrainConfig, Trainer

    class Recipe:
        name = "probe"

        def __init__(self, scope=None):
            if scope:
                self.amp_scope = scope
            self.seen = []

        def loss(self, model, batch):
            in_loss = torch.is_autocast_enabled("cpu")
            out = model(batch["x"])
            self.seen.append((in_loss, out.dtype))
            return out.square().mean(), {}

        def validate(self, model):
            return {}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, i):
            return {"x": torch.full((3, 4, 4), float(i % 7))}

    cfg = TrainConfig(steps=1, batch_size=2, warmup_steps=1, val_every=0, ckpt_every=1, amp=True, device="cpu")
    for scope, expect in ((None, (True, torch.bfloat16)), ("model", (False, torch.float32))):
        recipe = Recipe(scope)
        Trainer(torch.nn.Conv2d(3, 2, 3), recipe, Data(), tmp_path / str(scope), cfg).fit()
        assert recipe.seen == [expect], scope  # default: the whole loss under autocast (as before)
    with pytest.raises(FeatmatchError, match="amp_scope"):
        Trainer(torch.nn.Conv2d(3, 2, 3), Recipe("all"), Data(), tmp_path / "bad", cfg)
    # XFeat's and LoFTR's ground truth must not be computed under bfloat16 autocast (an XFeat
    # homography warp in bfloat16 is off by pixels)
    from featmatch.train.recipes.loftr import LoFTRRecipe
    from featmatch.train.recipes.xfeat import XFeatRecipe

    assert LoFTRRecipe.amp_scope == XFeatRecipe.amp_scope == "model"


def test_amp_on_a_cpu_without_hardware_bf16_warns(tmp_path, monkeypatch, caplog):
    from featmatch.train.trainer import TrainConfig, Trainer

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.zeros(3, 4, 4)}

    class Recipe:
        name = "probe"

    cfg = TrainConfig(steps=1, batch_size=2, warmup_steps=1, val_every=0, ckpt_every=1, amp=True, device="cpu")
    for native, warned in ((False, True), (True, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        caplog.clear()
        with caplog.at_level("WARNING", logger="featmatch.train.trainer"):
            Trainer(torch.nn.Conv2d(3, 2, 3), Recipe(), Data(), tmp_path / str(native), cfg)
        assert ("without hardware bfloat16" in caplog.text) == warned
