"""CLI runs as a user would: subprocess, exit codes, one-line errors, atomic outputs."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import need_weights, textured


def run(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "featmatch.cli", *args], capture_output=True, text=True, env=e, timeout=300)


@pytest.fixture(scope="module")
def pair(shifted_pair_dir):
    return shifted_pair_dir


def _one_line_error(res, code):
    assert res.returncode == code, res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("featmatch: error:"), res.stderr
    assert "Traceback" not in res.stderr


def test_list_shows_models_and_licences():
    res = run("list")
    assert res.returncode == 0
    assert "xfeat-star" in res.stdout and "Apache-2.0" in res.stdout and "cached" in res.stdout
    tiny = next(line for line in res.stdout.splitlines() if line.startswith("loftr.tiny "))
    assert "in package" in tiny  # its checkpoint ships with featmatch


@pytest.mark.weights
def test_match_outputs(pair, tmp_path):
    need_weights("xfeat")
    out_npz, out_json, viz = tmp_path / "m.npz", tmp_path / "m.json", tmp_path / "v.png"
    res = run("match", str(pair / "a.png"), str(pair / "b.png"), "--model", "xfeat", "--max-keypoints", "500",
              "--output", str(out_npz), "--viz", str(viz), "--geometry", "homography")
    assert res.returncode == 0, res.stderr
    assert "keypoints: 500 / 500" in res.stdout and "matches:" in res.stdout and "inliers" in res.stdout and "ms" in res.stdout
    data = np.load(out_npz)
    assert data["points0"].shape[1] == 2 and data["inliers"].shape == data["scores"].shape
    assert cv2.imread(str(viz)) is not None
    res = run("match", str(pair / "a.png"), str(pair / "b.png"), "--model", "xfeat-star", "--resize", "200",
              "--output", str(out_json))
    assert res.returncode == 0, res.stderr
    js = json.loads(out_json.read_text())
    assert len(js["points0"]) == len(js["points1"]) > 0
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_bad_inputs(pair, tmp_path):
    a = str(pair / "a.png")
    _one_line_error(run("match", a, str(tmp_path / "missing.png")), 1)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "junk.png").write_text("not an image")
    out = tmp_path / "out.npz"
    for bad in ("zero.png", "junk.png"):
        res = run("match", a, str(tmp_path / bad), "--model", "xfeat", "--output", str(out),
                  env={"FEATMATCH_HOME": str(tmp_path / "nohome")})
        _one_line_error(res, 1)
        assert not out.exists()
    _one_line_error(run("match", a, a, "--model", "xfet"), 2)
    _one_line_error(run("match", a, a, "--max-keypoint", "5"), 2)
    _one_line_error(run("match", a, a, "--set", "top_kk=5"), 2)
    _one_line_error(run("match", a, a, "--output", str(tmp_path / "m.txt")), 2)


def test_missing_weights_names_the_download_command(pair, tmp_path):
    res = run("match", str(pair / "a.png"), str(pair / "b.png"), "--model", "xfeat",
              env={"FEATMATCH_HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"})
    if res.returncode == 0:
        pytest.skip("an installed copy of the weights was found")
    _one_line_error(res, 1)
    assert "featmatch download xfeat" in res.stderr


@pytest.mark.weights
def test_odd_images_work(tmp_path):
    need_weights("xfeat")
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.zeros((1, 1), np.uint8))
    res = run("match", str(one), str(one))
    assert res.returncode == 0 and "matches: 0" in res.stdout, res.stderr
    g16 = tmp_path / "g16.png"
    cv2.imwrite(str(g16), (textured(120, 160, channels=1).astype(np.uint16) * 257))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.dstack([textured(120, 160), np.full((120, 160), 255, np.uint8)]))
    res = run("match", str(g16), str(rgba), "--geometry", "none")
    assert res.returncode == 0, res.stderr
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64), 128, np.uint8))
    res = run("match", str(blank), str(blank), "--model", "xfeat-star")
    assert res.returncode == 0 and "matches:" in res.stdout, res.stderr


def test_download_of_models_without_downloadable_weights():
    res = run("download", "sift")
    assert res.returncode == 0 and "needs no weights" in res.stdout
    _one_line_error(run("download", "loftr.outdoor"), 1)
    _one_line_error(run("download", "nope"), 2)
