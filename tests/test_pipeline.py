"""featmatch.pipeline: folder of photos -> features.h5 -> pairs -> matches.h5 -> COLMAP model.

Every scene is rendered in the test (featmatch.data.scene: a textured box on a textured
ground, seen from known cameras), so nothing outside the test's temporary folder is read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featmatch.data.scene import orbit_cameras, render_scene
from featmatch.errors import FeatmatchError, UsageError

h5py = pytest.importorskip("h5py")
pycolmap = pytest.importorskip("pycolmap")

from featmatch import pipeline  # noqa: E402
from featmatch.pipeline import store  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """6 views 15 degrees apart in two sub-folders with the same file names, one of them
    rendered at twice the size, plus a text file and a corrupt JPEG."""
    root = tmp_path_factory.mktemp("scene")
    names = ["left/0.png", "left/1.png", "left/2.png", "right/0.png", "right/1.png", "right/2.png"]
    cams = orbit_cameras(6, step_deg=15, names=names)
    big = orbit_cameras(6, step_deg=15, size=(640, 480), focal=600.0, names=names)
    cams[4] = big[4]  # very different size
    render_scene(root, cams, seed=0)
    (root / "notes.txt").write_text("not an image")
    (root / "left" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root, cams


@pytest.fixture(scope="module")
def features(scene, tmp_path_factory):
    root, _ = scene
    out = tmp_path_factory.mktemp("feat") / "features.h5"
    res = pipeline.extract(root, out, "sift", progress=False)
    return out, res


# ----------------------------------------------------------------------------- extract
def test_extract_hloc_layout_attributes_and_skips(scene, features):
    root, cams = scene
    out, res = features
    assert res.num_images == 6 and res.computed == 7  # 6 images + the corrupt one tried
    assert set(res.skipped) == {"notes.txt", "left/broken.jpg"}
    assert "not an image" in res.skipped["notes.txt"] and "decode" in res.skipped["left/broken.jpg"]
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "features" and f.attrs["format_version"] == store.FORMAT_VERSION
        assert f.attrs["model"] == "sift" and json.loads(f.attrs["config"])["top_k"] == 4096
        assert "weights_sha256" in f.attrs
        for cam in cams:  # duplicate file names in sub-folders stay apart
            g = f[cam.name]
            n = len(g["keypoints"])
            assert n > 100 and g["keypoints"].shape == (n, 2) and g["descriptors"].shape == (128, n)
            assert g["scores"].shape == (n,)
            assert tuple(g["image_size"][()]) == cam.size
            kp = g["keypoints"][()]
            assert kp.min() >= -0.5 and (kp < np.array(cam.size) - 0.5).all()
        assert not np.array_equal(f["left/0.png/keypoints"][()], f["right/0.png/keypoints"][()])
    assert not Path(str(out) + ".parts").exists()
    again = pipeline.extract(scene[0], out, "sift", progress=False)
    assert again.computed == 1 and again.num_images == 6  # only the corrupt file is retried


def test_extract_empty_folder_and_other_model(tmp_path, scene, features):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatmatchError, match=r"no images .*\(it is empty\)"):
        pipeline.extract(tmp_path / "empty", tmp_path / "f.h5", "sift")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    with pytest.raises(FeatmatchError, match=r"no images .*a\.txt"):
        pipeline.extract(tmp_path / "txt", tmp_path / "f.h5", "sift")
    out, _ = features
    with pytest.raises(UsageError, match="another model .*'sift' vs 'orb'"):
        pipeline.extract(scene[0], out, "orb")
    with pytest.raises(UsageError, match="another config"):
        pipeline.extract(scene[0], out, "sift", overrides={"top_k": 100})


# ----------------------------------------------------------------------------- pairs
def test_pairs_modes_and_missing_images(tmp_path, features):
    names = [f"{i:02d}.png" for i in range(6)]
    assert len(pipeline.pairs.exhaustive(names)) == 15
    seq = pipeline.pairs.sequential(names, window=2)
    assert seq[:3] == [("00.png", "01.png"), ("00.png", "02.png"), ("01.png", "02.png")] and len(seq) == 9
    p = tmp_path / "p.txt"
    p.write_text("# comment\n00.png 01.png\n\n01.png 00.png\n00.png 99.png\n")
    with pytest.raises(UsageError, match="1 images that are not in the collection: 99.png"):
        pipeline.pairs.from_list(p, names)
    p.write_text("00.png 01.png\n01.png 00.png\n")
    assert pipeline.pairs.from_list(p, names) == [("00.png", "01.png")]
    out = pipeline.pairs.write_pairs([("a", "b")], tmp_path / "w.txt")
    assert out.read_text() == "a b\n"


def test_retrieval_pairs_stay_within_each_scene(tmp_path):
    """Two unrelated scenes in one folder: VLAD retrieval pairs views of the same scene."""
    render_scene(tmp_path / "img", orbit_cameras(4, step_deg=15, names=[f"a{i}.png" for i in range(4)]), seed=1)
    render_scene(tmp_path / "img", orbit_cameras(4, step_deg=15, start_deg=200, names=[f"b{i}.png" for i in range(4)]), seed=2)
    feats = tmp_path / "f.h5"
    pipeline.extract(tmp_path / "img", feats, "sift", overrides={"top_k": 1000}, progress=False)
    pairs = pipeline.pairs.retrieval(feats, num=2, clusters=16)
    assert len(pairs) >= 4
    same = [a[0] == b[0] for a, b in pairs]
    assert all(same), pairs


# ----------------------------------------------------------------------------- match
def test_match_hloc_layout_equals_direct_matching(tmp_path, features):
    import featmatch
    from featmatch.pipeline.matching import _features_obj

    out, _ = features
    pairs = [("left/0.png", "left/1.png"), ("left/1.png", "right/0.png")]
    m = pipeline.match(out, pairs, tmp_path / "m.h5", progress=False)
    model = featmatch.load("sift")
    with h5py.File(m, "r") as f, h5py.File(out, "r") as ff:
        assert f.attrs["format"] == "matches"
        for a, b in pairs:
            g = f[store.names_to_pair(a, b)]
            m0 = g["matches0"][()]
            assert m0.shape == (len(ff[a]["keypoints"]),) and g["matching_scores0"].dtype == np.float16
            fa, fb = (_features_obj(store.read_features(ff, n)) for n in (a, b))
            direct = model.match_features(fa, fb)
            exp = np.full(len(m0), -1)
            exp[direct.indices0.numpy()] = direct.indices1.numpy()
            np.testing.assert_array_equal(m0, exp)
            assert (m0 >= 0).sum() > 50
    # a features file of another format version is refused, not mixed
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 99
    try:
        with pytest.raises(UsageError, match="format version 99"):
            pipeline.match(out, pairs, tmp_path / "m2.h5")
    finally:
        with h5py.File(out, "a") as f:
            f.attrs["format_version"] = store.FORMAT_VERSION
    with pytest.raises(UsageError, match="not in the collection: left/9.png"):
        pipeline.match(out, [("left/0.png", "left/9.png")], tmp_path / "m3.h5")


def test_merge_dense_forms_tracks_within_tolerance():
    from featmatch.pipeline.matching import merge_dense

    p_a = np.array([[10.2, 20.3], [50.0, 50.0]], np.float32)
    raw = {
        ("a", "b"): (p_a, np.array([[12.0, 22.0], [52.0, 51.0]], np.float32), np.array([0.9, 0.8], np.float32), [100, 80], [100, 80]),
        # a's first point again, 0.4 px away (same 1-px cell) -> same keypoint: a track a-b-c
        ("a", "c"): (np.array([[10.6, 20.1]], np.float32), np.array([[30.0, 30.0]], np.float32), np.array([0.5], np.float32), [100, 80], [90, 70]),
        # two points of b in one cell matched to two points of c: one-to-one keeps the best
        ("b", "c"): (np.array([[12.1, 22.2], [12.3, 22.4]], np.float32), np.array([[30.2, 30.3], [60.0, 60.0]], np.float32),
                     np.array([0.3, 0.7], np.float32), [100, 80], [90, 70]),
    }
    feats, matches = merge_dense(raw, tolerance=1.0)
    assert len(feats["a"]["keypoints"]) == 2 and len(feats["b"]["keypoints"]) == 2 and len(feats["c"]["keypoints"]) == 2
    kp_a = feats["a"]["keypoints"]
    np.testing.assert_allclose(kp_a[0], (0.9 * p_a[0] + 0.5 * np.array([10.6, 20.1])) / 1.4, atol=1e-5)
    assert tuple(feats["c"]["image_size"]) == (90, 70)
    m_ab, m_ac, m_bc = matches[("a", "b")][0], matches[("a", "c")][0], matches[("b", "c")][0]
    assert m_ab[0] == 0 and m_ac[0] == 0  # both pairs use a's keypoint 0
    assert m_bc[0] == 1 and (m_bc >= 0).sum() == 1  # the 0.7 match wins; c's point 60,60 is keypoint 1
    with pytest.raises(UsageError, match="tolerance"):
        merge_dense(raw, tolerance=0)


def test_dense_model_matches_merge_into_keypoints(tmp_path):
    root = tmp_path / "img"
    render_scene(root, orbit_cameras(3, size=(160, 120), focal=150.0, step_deg=12), seed=3)
    pairs = pipeline.pairs.exhaustive(pipeline.list_images(root)[0])
    fo, mo = pipeline.match_dense(root, pairs, tmp_path / "m.h5", tmp_path / "f.h5", "loftr.tiny",
                                  overrides={"resize": 160}, progress=False)
    with h5py.File(fo, "r") as f, h5py.File(mo, "r") as m:
        assert f.attrs["model"] == "loftr.tiny" and f.attrs["merge_tolerance"] == 1.0
        for a, b in pairs:
            m0 = m[store.names_to_pair(a, b)]["matches0"][()]
            assert m0.shape == (len(f[a]["keypoints"]),)
            valid = m0[m0 >= 0]
            assert len(valid) > 20 and valid.max() < len(f[b]["keypoints"]) and len(set(valid)) == len(valid)
        assert "descriptors" not in f["view_00.png"]
        m01 = m[store.names_to_pair("view_00.png", "view_01.png")]["matches0"][()]
        m02 = m[store.names_to_pair("view_00.png", "view_02.png")]["matches0"][()]
        assert ((m01 >= 0) & (m02 >= 0)).sum() > 10  # tracks: keypoints of view 0 matched in both pairs
    with pytest.raises(UsageError, match="dense matcher"):
        pipeline.extract(root, tmp_path / "x.h5", "loftr.tiny")


# ----------------------------------------------------------------------------- reconstruct
def _rel_errors(rec, cams) -> list[float]:
    from featmatch.eval.metrics import relative_pose_error
    from featmatch.pipeline.colmap import camera_poses

    poses = camera_poses(rec)
    errs = []
    for i in range(len(cams)):
        for j in range(i + 1, len(cams)):
            a, b = cams[i], cams[j]
            R_gt = b.R @ a.R.T
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R_gt, b.t - R_gt @ a.t
            Ra, ta = poses[a.name]
            Rb, tb = poses[b.name]
            R = Rb @ Ra.T
            errs.append(max(relative_pose_error(T, R, tb - R @ ta)))
    return errs


def test_reconstruct_registers_every_image_with_accurate_cameras(scene, tmp_path):
    root, cams = scene
    out = tmp_path / "rec"
    r = pipeline.reconstruct(root, out, "sift", progress=False)
    s = r.summary
    assert s["registered_images"] == 6 == s["readable_images"] and s["unregistered"] == []
    assert s["points3D"] > 150 and s["mean_track_length"] > 2.5 and s["mean_reprojection_error_px"] < 1.0
    assert set(s["skipped"]) == {"notes.txt", "left/broken.jpg"}
    assert {"extract_s", "pairs_s", "match_s", "database_s", "verification_s", "mapping_s", "total_s"} <= set(s["time_s"])
    for f in ("cameras.bin", "images.bin", "points3D.bin", "summary.json", "topview.png", "pairs.txt", "database.db"):
        assert (out / f).is_file(), f
    assert json.loads((out / "summary.json").read_text())["points3D"] == s["points3D"]
    loaded = pycolmap.Reconstruction(str(out))
    assert loaded.num_reg_images() == 6
    assert len(loaded.cameras) == 2  # shared default camera per image size (320x240, 640x480)
    errs = _rel_errors(loaded, cams)
    assert max(errs) < 2.0, errs  # degrees, against the rendering cameras


def test_reconstruct_intrinsics_exif_and_override(tmp_path):
    from PIL import Image
    from PIL.ExifTags import IFD

    from featmatch.pipeline.colmap import cameras_for

    root = tmp_path / "img"
    render_scene(root, orbit_cameras(2, names=["a.png", "b.jpg"]), seed=4)
    im = Image.open(root / "b.jpg")
    exif = im.getexif()
    exif.get_ifd(IFD.Exif)[0xA405] = 28  # focal length in 35 mm film
    im.save(root / "b.jpg", exif=exif)
    sizes = {"a.png": (320, 240), "b.jpg": (320, 240)}
    cams, of = cameras_for(root, ["a.png", "b.jpg"], sizes)
    assert of["a.png"] != of["b.jpg"]
    a, b = cams[of["a.png"]], cams[of["b.jpg"]]
    assert not a.has_prior_focal_length and a.params[0] == pytest.approx(1.2 * 320)
    assert b.has_prior_focal_length and 200 < b.params[0] < 300
    cams, of = cameras_for(root, ["a.png", "b.jpg"], sizes, camera_model="PINHOLE", camera_params=[300, 300, 159.5, 119.5])
    assert len(cams) == 1 and list(cams[0].params) == [300, 300, 159.5, 119.5]
    with pytest.raises(UsageError, match="do not fit camera model PINHOLE"):
        cameras_for(root, ["a.png"], sizes, camera_model="PINHOLE", camera_params=[300, 1])
    with pytest.raises(UsageError, match="unknown COLMAP camera model"):
        cameras_for(root, ["a.png"], sizes, camera_model="FISHY")


def test_reconstruct_failure_to_initialise_names_the_pair(tmp_path):
    root = tmp_path / "img"
    render_scene(root, orbit_cameras(2, step_deg=60, names=["x.png", "y.png"]), seed=5)
    with pytest.raises(FeatmatchError, match="failed to initialise.*(x.png - y.png has \\d+ inliers|no image pair)"):
        pipeline.reconstruct(root, tmp_path / "out", "sift", overrides={"top_k": 300}, progress=False)
    assert "failed to initialise" in json.loads((tmp_path / "out" / "summary.json").read_text())["error"]


# ----------------------------------------------------------------------------- kill -9, Ray, CLI
_SLOW_EXTRACT = """
import sys, time
import featmatch.pipeline.extraction as E
orig = E.ExtractJob.run
def slow(self, names, progress=None):
    n = orig(self, names, progress)
    time.sleep(0.5)
    return n
E.ExtractJob.run = slow
from featmatch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_extract_resumes_after_kill_9(scene, features, tmp_path, monkeypatch):
    from featmatch.pipeline.extraction import ExtractJob

    root, _ = scene
    out = tmp_path / "f.h5"
    parts = Path(str(out) + ".parts")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_EXTRACT, "extract", "--model", "sift", "--images", str(root),
                             "--out", str(out), "--shard-size", "1", "--no-progress"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 60 and len(list(parts.glob("shard-*.h5"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # killed before the merge: no half-written output
    done_before = set()
    for p in parts.glob("shard-*.h5"):  # every finished shard is a valid file
        with h5py.File(p, "r") as f:
            done_before.update(store.record_groups(f, "keypoints"))
    assert 2 <= len(done_before) < 6
    computed = []
    orig = ExtractJob.run

    def spy(self, names, progress=None):
        computed.extend(names)
        return orig(self, names, progress)

    monkeypatch.setattr(ExtractJob, "run", spy)
    res = pipeline.extract(root, out, "sift", progress=False)
    assert res.num_images == 6
    assert not set(computed) & done_before and len(computed) == len(set(computed))  # nothing recomputed
    ref, _ = features
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:  # nothing lost: equal to a clean run
        assert sorted(store.record_groups(f, "keypoints")) == sorted(store.record_groups(g, "keypoints"))
        for n in store.record_groups(g, "keypoints"):
            np.testing.assert_array_equal(f[n]["keypoints"][()], g[n]["keypoints"][()])
    assert not parts.exists()


def test_match_resumes_from_finished_shards(features, tmp_path, monkeypatch):
    """A run killed after one shard of pairs (the shard is on disk, no merge): the next run
    matches only the other pairs and the result equals a clean run."""
    from featmatch.pipeline import matching

    feats, _ = features
    pairs = pipeline.pairs.exhaustive(store.feature_names(feats))
    out = tmp_path / "m.h5"
    fa = store.read_attrs(feats)
    attrs = matching.matches_attrs(fa, matching._matcher_config(fa, None))
    matching.SparseMatchJob(str(feats), str(out), attrs, fa, {}).run(pairs[:4])  # the "killed" run's shard
    assert not out.exists() and len(list(Path(str(out) + ".parts").glob("shard-*.h5"))) == 1
    computed = []
    orig = matching.SparseMatchJob.run

    def spy(self, shard, progress=None):
        computed.extend(shard)
        return orig(self, shard, progress)

    monkeypatch.setattr(matching.SparseMatchJob, "run", spy)
    pipeline.match(feats, pairs, out, shard_size=5, progress=False)
    assert computed == pairs[4:]
    ref = pipeline.match(feats, pairs, tmp_path / "ref.h5", progress=False)
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:
        for a, b in pairs:
            k = store.names_to_pair(a, b)
            np.testing.assert_array_equal(f[k]["matches0"][()], g[k]["matches0"][()])
    with pytest.raises(UsageError, match="another model"):  # matches of other features are refused
        other = dict(attrs, model="orb")
        store.ShardedH5(out, other, "matches0").done()


def test_ray_engine_equals_local(scene, features, tmp_path):
    ray = pytest.importorskip("ray")
    root, _ = scene
    ref, _ = features
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # workers inherit this environment
    try:
        out = tmp_path / "f.h5"
        res = pipeline.extract(root, out, "sift", engine="ray", shard_size=2, progress=False)
        pairs = pipeline.pairs.exhaustive(store.feature_names(out))
        m = pipeline.match(out, pairs, tmp_path / "m.h5", engine="ray", shard_size=4, progress=False)
    finally:
        ray.shutdown()
    assert res.num_images == 6 and not Path(str(out) + ".parts").exists()
    m_ref = pipeline.match(ref, pairs, tmp_path / "m_ref.h5", progress=False)
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:
        for n in store.record_groups(g, "keypoints"):
            np.testing.assert_array_equal(f[n]["keypoints"][()], g[n]["keypoints"][()])
    with h5py.File(m, "r") as f, h5py.File(m_ref, "r") as g:
        for a, b in pairs:
            k = store.names_to_pair(a, b)
            np.testing.assert_array_equal(f[k]["matches0"][()], g[k]["matches0"][()])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featmatch", *args], capture_output=True, text=True, env=_env(),
                          timeout=300)


def test_cli_pipeline_commands(scene, features, tmp_path, capsys):
    from featmatch.cli import main

    root, _ = scene
    feats, _ = features
    r = _cli("pairs", "sequential", "--window", "2", "--features", str(feats), "--out", str(tmp_path / "p.txt"))
    assert r.returncode == 0 and "9 pairs" in r.stdout, r.stderr
    capsys.readouterr()
    assert main(["match", "--features", str(feats), "--pairs", str(tmp_path / "p.txt"), "--out", str(tmp_path / "m.h5"),
                 "--no-progress"]) == 0
    assert "9 pairs -> " in capsys.readouterr().out and (tmp_path / "m.h5").is_file()
    (tmp_path / "bad.txt").write_text("left/0.png nowhere.png\n")
    assert main(["pairs", "from-list", str(tmp_path / "bad.txt"), "--images", str(root), "--out", str(tmp_path / "q.txt")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.png" in err and len(err.strip().splitlines()) == 1
    assert main(["match", "--pairs", str(tmp_path / "p.txt"), "--out", str(tmp_path / "x.h5")]) == 2
    assert "--features" in capsys.readouterr().err
    assert main(["match", str(root / "left/0.png"), "--pairs", str(tmp_path / "p.txt")]) == 2
    assert "either two images or --pairs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["reconstruct", "--images", str(tmp_path / "empty"), "--model", "sift", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "no images" in err and len(err.strip().splitlines()) == 1
    assert main(["reconstruct", "--images", str(root), "--out", str(tmp_path / "o"), "--mapper", "mapper.nope=1"]) == 2
    assert "unknown mapper option 'mapper.nope'" in capsys.readouterr().err
