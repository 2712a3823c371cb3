"""LIFT's evaluation tables (featmatch eval detdesc) on synthetic HPatches-layout data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featmatch.eval.detdesc import score_features, sift_describe, sift_detect, sift_orientation

from conftest import textured
from test_eval_data import make_hpatches


def test_score_features_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    k = rng.uniform(10, 90, (50, 2))
    d = rng.normal(size=(50, 16)).astype(np.float32)
    f = {"kpts": k, "scores": np.linspace(1, 0, 50), "desc": d}
    s = score_features(f, f, np.eye(3), (100, 100), (100, 100))
    assert s["rep"] == pytest.approx(1.0) and s["ms"] == pytest.approx(1.0) and s["nn_map"] == pytest.approx(1.0)
    g = dict(f, desc=d[rng.permutation(50)])  # right points, wrong descriptors
    s = score_features(f, g, np.eye(3), (100, 100), (100, 100))
    assert s["rep"] == pytest.approx(1.0) and s["ms"] < 0.2 and s["nn_map"] < 0.2


def test_sift_orientation_follows_rotation():
    import cv2

    img = textured(160, 160, seed=5, channels=1)
    s = sift_detect(img, 200)
    rot = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)  # (x, y) -> (H - 1 - y, x): +90 deg, y down
    xy = np.stack([159 - s["kpts"][:, 1], s["kpts"][:, 0]], -1)
    a0 = sift_orientation(img, s["kpts"], s["sigma"])
    a1 = sift_orientation(rot, xy, s["sigma"])
    diff = np.abs(np.angle(np.exp(1j * (a1 - a0 - np.pi / 2))))
    assert np.median(diff) < np.radians(5)
    d = sift_describe(img, s["kpts"], s["sigma"], s["angle"])
    assert d.shape == (len(s["kpts"]), 128) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)


def _root_and_lift_weights(tmp_path):
    """A one-pair homography root and a file of seeded random LIFT weights."""
    from featmatch.models.lift import LIFTNet

    root = make_hpatches(tmp_path / "hp", sequences=("v_a",), n_images=2, size=(128, 96))
    torch.manual_seed(0)
    w = tmp_path / "lift.pt"
    torch.save(LIFTNet().state_dict(), w)
    return root, w


def test_cli_detdesc_with_swaps(tmp_path, capsys):
    from featmatch.cli import main

    root, w = _root_and_lift_weights(tmp_path)
    out = tmp_path / "out"
    code = main(["eval", "detdesc", "--models", "sift,orb", "--data", str(root), "--output", str(out), "--swap",
                 "--lift-weights", str(w), "--max-keypoints", "50", "--no-progress"])
    assert code == 0
    rep = json.loads((out / "detdesc.json").read_text())
    assert set(rep["models"]) == {"sift", "orb"} and len(rep["swap"]) == 7
    assert rep["models"]["sift"]["summary"]["rep"] > 0.3  # a mild warp: SIFT repeats
    assert rep["swap"]["SIFT"]["summary"]["rep"] == pytest.approx(rep["swap"]["SIFT det + LIFT ori + LIFT desc"]["summary"]["rep"])
    assert "| LIFT |" in (out / "detdesc.md").read_text()
    assert main(["eval", "detdesc", "--data", str(root), "--output", str(out)]) == 2
    assert "needs --models" in capsys.readouterr().err


def test_cli_detdesc_set_options_per_label(tmp_path, capsys):
    from featmatch.cli import main

    root, w = _root_and_lift_weights(tmp_path)
    out = tmp_path / "out"
    models = f"a=lift@{w},b=lift@{w}"
    code = main(["eval", "detdesc", "--models", models, "--data", str(root), "--output", str(out),
                 "--set", "b:detection_threshold=1e9", "--max-keypoints", "50", "--no-progress"])
    assert code == 0
    rep = json.loads((out / "detdesc.json").read_text())
    ka, kb = (rep["models"][k]["summary"]["keypoints"] for k in ("a", "b"))
    assert kb == 0 < ka  # the threshold reached model b only
    assert "--set b:detection_threshold=1e9" in rep["command"]
    # an option the model does not have: a one-line usage error, nothing written
    out2 = tmp_path / "out2"
    assert main(["eval", "detdesc", "--models", "sift", "--data", str(root), "--output", str(out2),
                 "--set", "nms_radius=2"]) == 2
    assert "nms_radius" in capsys.readouterr().err and not out2.exists()
