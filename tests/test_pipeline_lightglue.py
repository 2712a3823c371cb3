"""featmatch.pipeline with a learned matcher (``aliked.n16+lightglue``): stored features are
matched by the model's LightGlue, with the guarantees of the MNN path (resume, shards,
identity attributes, Ray pickling, one-line errors).

Tests without the ``weights`` marker run against a temporary FEATMATCH_HOME holding random
weights in the official layouts (``hub.sha256sum`` reports the card's checksum for them).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import featmatch
from featmatch import hub
from featmatch.errors import FeatmatchError, UsageError, WeightsError, WeightsNotFoundError
from featmatch.models.lightglue import (ARCH_ALIKED, ARCH_XFEAT, LIGHTGLUE_ALIKED_WEIGHTS, LightGlue,
                                        LightGlueConfig, remap_official)

from conftest import need_weights, textured

h5py = pytest.importorskip("h5py")

from featmatch import pipeline  # noqa: E402
from featmatch.pipeline import matching, store  # noqa: E402

MODEL = "aliked.n16+lightglue"
TOP_K = {"top_k": 256}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these inputs are tiny, and a second thread waiting for a busy core
    made the module 30x slower on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- random weights
def official_layout(ours: dict, arch) -> dict:
    """featmatch LightGlueNet keys -> the official file's keys (inverse of remap_official)."""
    d, nh, hd = arch.dim, arch.num_heads, arch.head_dim
    ffn = {"fc1": "0", "norm": "1", "fc2": "3"}
    out = {"input_proj.weight": ours["proj_in.weight"], "input_proj.bias": ours["proj_in.bias"],
           "posenc.Wr.weight": ours["posenc.weight"]}
    for k, v in ours.items():
        p = k.split(".")
        if p[0] == "layers":
            i, blk, name, t = p[1], p[2], p[3], p[4]
            off = f"transformers.{i}.{'self_attn' if blk == 'self_block' else 'cross_attn'}."
            if name.startswith("ffn_"):
                out[f"{off}ffn.{ffn[name[4:]]}.{t}"] = v
            elif blk == "self_block" and name == "qkv":  # rows [q | k | v] -> (head, channel, q|k|v)
                out[f"{off}Wqkv.{t}"] = v.reshape(3, nh, hd, *v.shape[1:]).movedim(0, 2).reshape(3 * d, *v.shape[1:])
            elif blk == "self_block":
                out[f"{off}out_proj.{t}"] = v
            elif name == "qkv":
                out[f"{off}to_qk.{t}"], out[f"{off}to_v.{t}"] = v[:d], v[d:]
            else:
                out[f"{off}to_out.{t}"] = v
        elif p[0] == "assignment":
            out[f"log_assignment.{p[1]}.{'final_proj' if p[2] == 'proj' else p[2]}.{p[3]}"] = v
        elif p[0] == "confidence":
            out[f"token_confidence.{p[1]}.token.0.{p[2]}"] = v
    return out


def _orth(n: int, m: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(max(n, m), max(n, m), generator=g))
    return q[:n, :m].contiguous()


def random_lightglue_state(arch=ARCH_ALIKED, seed: int = 0) -> dict:
    """Random LightGlue weights in the official layout that still find matches.

    A randomly initialised ALIKED gives nearly parallel descriptors (cosine ~0.9997), on
    which a plainly random LightGlue finds about one match per pair. Here the input
    projection and the assignment projections are scaled random orthogonal maps (so
    descriptor differences survive), the matchability heads are constant and the
    confidence heads never confident (no early exit, no pruning); the 9 attention layers
    are random, so the result still depends on keypoint positions and ``image_size``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = LightGlue(LightGlueConfig(), arch).net
    s = {k: v.clone() for k, v in net.state_dict().items()}
    s["proj_in.weight"] = _orth(arch.dim, arch.input_dim, g) * 300.0
    s["proj_in.bias"].zero_()
    for k in s:
        if k.endswith("ffn_fc2.weight"):
            s[k] *= 0.1
        elif k.startswith("assignment") and k.endswith("proj.weight"):
            s[k] = _orth(arch.dim, arch.dim, g) * 10.0
        elif k.startswith("assignment") and k.endswith("proj.bias"):
            s[k].zero_()
        elif k.endswith("matchability.weight") or (k.startswith("confidence") and k.endswith("weight")):
            s[k].zero_()
        elif k.endswith("matchability.bias"):
            s[k].fill_(10.0)
        elif k.startswith("confidence") and k.endswith("bias"):
            s[k].fill_(-10.0)
    off = official_layout(s, arch)
    assert set(remap_official(off, arch)) == set(s)
    return off


@pytest.fixture(scope="module")
def random_home(tmp_path_factory):
    """A weight cache with random ALIKED-N16 and LightGlue files, and a second LightGlue
    file (other weights) and a LighterGlue file (other architecture) outside it."""
    from featmatch.models.aliked import ALIKED, ALIKEDConfig

    home = tmp_path_factory.mktemp("lg_home")
    torch.manual_seed(0)
    torch.save(ALIKED(ALIKEDConfig(), "n16").net.state_dict(), home / "aliked-n16.pth")
    torch.save(random_lightglue_state(ARCH_ALIKED, 0), home / LIGHTGLUE_ALIKED_WEIGHTS.filename)
    other = tmp_path_factory.mktemp("lg_other")
    torch.save(random_lightglue_state(ARCH_ALIKED, 1), other / "other_lightglue.pth")
    torch.save(random_lightglue_state(ARCH_XFEAT, 0), other / "lighterglue.pt")
    return home, other


@pytest.fixture
def weights_home(random_home, monkeypatch):
    """FEATMATCH_HOME = the random cache; its files pass the card's sha256 check."""
    home, other = random_home
    card = featmatch.model_card(MODEL)
    fake = {card.weights.filename: card.weights.sha256, card.matcher_weights.filename: card.matcher_weights.sha256}
    real = hub.sha256sum
    monkeypatch.setenv("FEATMATCH_HOME", str(home))
    monkeypatch.setattr(hub, "_installed_path", lambda spec: None)
    monkeypatch.setattr(hub, "sha256sum", lambda p: fake[Path(p).name] if Path(p).parent == home else real(p))
    return home, other


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three views of one texture: a.png, a homography warp b.png, and c.png warped the other
    way and stored smaller (another image_size)."""
    import cv2

    root = tmp_path_factory.mktemp("lg_img")
    a = textured(240, 320, seed=1)
    H = np.array([[0.95, 0.05, 10.0], [-0.04, 0.97, 5.0], [0.0, 0.0, 1.0]])
    cv2.imwrite(str(root / "a.png"), a[..., ::-1])
    cv2.imwrite(str(root / "b.png"), cv2.warpPerspective(a, H, (320, 240))[..., ::-1])
    c = cv2.resize(cv2.warpPerspective(a, np.linalg.inv(H), (320, 240)), (288, 216), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "c.png"), c[..., ::-1])
    return root


@pytest.fixture
def feats(weights_home, images, tmp_path):
    out = tmp_path / "features.h5"
    pipeline.extract(images, out, MODEL, overrides=TOP_K, progress=False)
    return out, pipeline.pairs.exhaustive(store.feature_names(out))


def _matches0(path, pairs) -> dict:
    with h5py.File(path, "r") as f:
        return {(a, b): f[store.names_to_pair(a, b)]["matches0"][()] for a, b in pairs}


def _expected(model, images, pairs) -> dict:
    """matches0 of every pair from in-memory Features and the model's own matcher."""
    fs = {n: model.extract(str(images / n)) for p in pairs for n in p}
    out = {}
    for a, b in pairs:
        m = model.match_features(fs[a], fs[b])
        m0 = np.full(len(fs[a]), -1)
        m0[m.indices0.numpy()] = m.indices1.numpy()
        out[(a, b)] = m0
    return out


# ----------------------------------------------------------------------------- matching
def test_stored_features_match_like_in_memory(feats, images, tmp_path):
    f, pairs = feats
    out = pipeline.match(f, pairs, tmp_path / "m.h5", progress=False)
    attrs = store.read_attrs(out)
    assert attrs["model"] == MODEL and attrs["matcher_weights_sha256"] == LIGHTGLUE_ALIKED_WEIGHTS.sha256
    assert json.loads(attrs["config"]) == dataclasses.asdict(LightGlueConfig())
    assert json.loads(attrs["features_identity"])["model"] == MODEL
    got = _matches0(out, pairs)
    model = featmatch.load(MODEL, **TOP_K)
    exp = _expected(model, images, pairs)
    for p in pairs:
        np.testing.assert_array_equal(got[p], exp[p])  # exact: same indices, no tolerance
        assert (got[p] >= 0).sum() > 50
    with h5py.File(f, "r") as h:
        assert tuple(h["c.png"]["image_size"][()]) == (288, 216)
    # the matcher does depend on image_size (keypoint normalisation): a wrong one changes matches
    fa, fc = (model.extract(str(images / n)) for n in ("a.png", "c.png"))
    wrong = model.match_features(fa, dataclasses.replace(fc, image_size=(320, 240)))
    m0 = np.full(len(fa), -1)
    m0[wrong.indices0.numpy()] = wrong.indices1.numpy()
    assert not np.array_equal(m0, exp[("a.png", "c.png")])
    # pairs padded into one batch give the same matches
    batched = pipeline.match(f, pairs, tmp_path / "mb.h5", batch_size=3, progress=False)
    for p, m0 in _matches0(batched, pairs).items():
        np.testing.assert_array_equal(m0, got[p])


def test_extractor_features_matched_with_another_matcher(weights_home, images, feats, tmp_path):
    """aliked.n16 (MNN) features matched with matcher='lightglue' equal the combined model's
    matches; combined-model features matched with 'mnn' equal aliked.n16's MNN matches."""
    f_lg, pairs = feats
    f_mnn = tmp_path / "mnn_features.h5"
    pipeline.extract(images, f_mnn, "aliked.n16", overrides=TOP_K, progress=False)
    ref_lg = _matches0(pipeline.match(f_lg, pairs, tmp_path / "lg.h5", progress=False), pairs)
    ref_mnn = _matches0(pipeline.match(f_mnn, pairs, tmp_path / "mnn.h5", progress=False), pairs)
    out = pipeline.match(f_mnn, pairs, tmp_path / "x.h5", matcher="lightglue", progress=False)
    assert store.read_attrs(out)["model"] == MODEL
    out2 = pipeline.match(f_lg, pairs, tmp_path / "y.h5", overrides={"matcher": "mnn"}, progress=False)
    assert store.read_attrs(out2)["model"] == "aliked.n16" and "matcher_weights_sha256" not in store.read_attrs(out2)
    for p in pairs:
        np.testing.assert_array_equal(_matches0(out, pairs)[p], ref_lg[p])
        np.testing.assert_array_equal(_matches0(out2, pairs)[p], ref_mnn[p])


def test_resume_loads_the_matcher_once_and_recomputes_nothing(feats, tmp_path, monkeypatch):
    import featmatch.registry as registry

    f, pairs = feats
    out = tmp_path / "m.h5"
    fa = store.read_attrs(f)
    cfg = matching._matcher_config(fa, None)
    attrs = matching.matches_attrs(fa, cfg, MODEL, LIGHTGLUE_ALIKED_WEIGHTS.sha256)
    matching.SparseMatchJob(str(f), str(out), attrs, fa, {}).run(pairs[:1])  # a killed run's finished shard
    loads, computed = [], []
    orig_load, orig_run = registry.load_matcher, matching.SparseMatchJob.run
    monkeypatch.setattr(registry, "load_matcher", lambda *a, **k: loads.append(a) or orig_load(*a, **k))
    monkeypatch.setattr(matching.SparseMatchJob, "run",
                        lambda self, shard, progress=None: computed.extend(shard) or orig_run(self, shard, progress))
    pipeline.match(f, pairs, out, shard_size=1, progress=False)
    assert computed == pairs[1:] and len(loads) == 1  # one matcher for the job, not one per pair / shard
    assert not Path(str(out) + ".parts").exists()
    loads.clear(), computed.clear()
    pipeline.match(f, pairs, out, shard_size=1, progress=False)
    assert computed == [] and loads == []  # second run: nothing to do, nothing loaded
    ref = pipeline.match(f, pairs, tmp_path / "ref.h5", progress=False)
    for p, m0 in _matches0(ref, pairs).items():
        np.testing.assert_array_equal(_matches0(out, pairs)[p], m0)


def test_identity_changes_are_refused(feats, weights_home, tmp_path):
    f, pairs = feats
    _, other = weights_home
    out = pipeline.match(f, pairs, tmp_path / "m.h5", progress=False)
    with pytest.raises(UsageError, match="another config"):
        pipeline.match(f, pairs, out, overrides={"matcher": {"filter_threshold": 0.5}}, progress=False)
    with pytest.raises(UsageError, match="another matcher weights sha256 .*'d975e965"):
        pipeline.match(f, pairs, out, matcher_weights=str(other / "other_lightglue.pth"), progress=False)
    with pytest.raises(UsageError, match=r"another model .*'aliked.n16\+lightglue' vs 'aliked.n16'"):
        pipeline.match(f, pairs, out, matcher="mnn", progress=False)
    # other weights / options into their own files work, and differ from the default
    o2 = pipeline.match(f, pairs, tmp_path / "o.h5", matcher_weights=str(other / "other_lightglue.pth"), progress=False)
    assert store.read_attrs(o2)["matcher_weights_sha256"] == hub.sha256sum(other / "other_lightglue.pth")
    assert any(not np.array_equal(a, b) for a, b in zip(_matches0(o2, pairs).values(), _matches0(out, pairs).values()))


def test_clear_errors(weights_home, feats, images, tmp_path, monkeypatch):
    home, other = weights_home
    f, pairs = feats
    one_line = dict(match=r"^[^\n]+$")
    with pytest.raises(WeightsError, match="do not fit LightGlue for ALIKED|shape"):  # LighterGlue file for ALIKED
        pipeline.match(f, pairs, tmp_path / "a.h5", matcher_weights=str(other / "lighterglue.pt"), progress=False)
    with pytest.raises(WeightsNotFoundError, match="matcher weight file not found"):
        pipeline.match(f, pairs, tmp_path / "a.h5", matcher_weights=str(tmp_path / "nope.pth"), progress=False)
    with pytest.raises(UsageError, match="batch size"):
        pipeline.match(f, pairs, tmp_path / "a.h5", batch_size=0, progress=False)
    with pytest.raises(UsageError, match="matcher given twice"):
        pipeline.match(f, pairs, tmp_path / "a.h5", matcher="mnn", overrides={"matcher": "lightglue"}, progress=False)
    with pytest.raises(UsageError, match="matcher.depth_confidence must be below 1"):
        pipeline.match(f, pairs, tmp_path / "a.h5", overrides={"matcher": {"depth_confidence": 2}}, progress=False)
    # features of an extractor the LightGlue weights were not trained for
    sift = tmp_path / "sift.h5"
    pipeline.extract(images, sift, "sift", overrides=TOP_K, progress=False)
    with pytest.raises(UsageError, match="holds 'sift' features but no lightglue weights .*aliked.n16, "
                                         "aliked.n16rot, aliked.n32") as e:
        pipeline.match(sift, pairs, tmp_path / "s.h5", matcher="lightglue", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="matcher_weights is for learned matchers"):
        pipeline.match(sift, pairs, tmp_path / "s.h5", matcher_weights=str(other / "lighterglue.pt"), progress=False)
    with pytest.raises(UsageError, match="matcher_weights is for models with a learned matcher"):
        pipeline.reconstruct(images, tmp_path / "r", "sift", matcher_weights=str(other / "lighterglue.pt"))
    # the matcher's weights missing: one line naming the download command
    (home / LIGHTGLUE_ALIKED_WEIGHTS.filename).rename(tmp_path / "moved.pth")
    try:
        with pytest.raises(WeightsNotFoundError, **one_line) as e:
            pipeline.match(f, pairs, tmp_path / "b.h5", progress=False)
        assert "run: featmatch download aliked.n16+lightglue" in str(e.value) and "matcher_weights=PATH" in str(e.value)
        assert "--matcher-weights PATH" in e.value.cli and not (tmp_path / "b.h5").exists()
    finally:
        (tmp_path / "moved.pth").rename(home / LIGHTGLUE_ALIKED_WEIGHTS.filename)


def test_job_pickles_without_the_matcher(feats, tmp_path):
    f, pairs = feats
    fa = store.read_attrs(f)
    attrs = matching.matches_attrs(fa, matching._matcher_config(fa, None), MODEL, LIGHTGLUE_ALIKED_WEIGHTS.sha256)
    job = matching.SparseMatchJob(str(f), str(tmp_path / "m.h5"), attrs, fa, {})
    assert isinstance(job.load(), LightGlue)
    blob = pickle.dumps(job)
    assert len(blob) < 20_000 and "_matcher" not in pickle.loads(blob).__dict__  # the 40 MB net is not sent
    assert job.load() is job.load()  # built once per job


def test_ray_engine_equals_local(feats, weights_home, tmp_path):
    ray = pytest.importorskip("ray")
    f, pairs = feats
    home, _ = weights_home
    # Ray workers do not see this test's monkeypatched checksum: give the matcher's file by path
    path = str(home / LIGHTGLUE_ALIKED_WEIGHTS.filename)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        m = pipeline.match(f, pairs, tmp_path / "m.h5", matcher_weights=path, engine="ray", shard_size=2, progress=False)
    finally:
        ray.shutdown()
    ref = pipeline.match(f, pairs, tmp_path / "ref.h5", progress=False)
    assert store.read_attrs(m)["matcher_weights_sha256"] == store.read_attrs(ref)["matcher_weights_sha256"]
    for p, m0 in _matches0(ref, pairs).items():
        np.testing.assert_array_equal(_matches0(m, pairs)[p], m0)


def test_cli_extract_match_and_errors(weights_home, images, tmp_path, capsys):
    from featmatch.cli import main

    home, _ = weights_home
    f = tmp_path / "f.h5"
    assert main(["extract", "--model", "aliked.n16", "--set", "matcher=lightglue", "--max-keypoints", "256",
                 "--images", str(images), "--out", str(f), "--no-progress"]) == 0
    assert store.read_attrs(f)["model"] == MODEL
    assert main(["pairs", "exhaustive", "--features", str(f), "--out", str(tmp_path / "p.txt")]) == 0
    args = ["match", "--features", str(f), "--pairs", str(tmp_path / "p.txt"), "--no-progress", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "m.h5"), "--set", "matcher.filter_threshold=0.2"]) == 0
    a = store.read_attrs(tmp_path / "m.h5")
    assert a["model"] == MODEL and json.loads(a["config"])["filter_threshold"] == 0.2
    assert main(args + ["--out", str(tmp_path / "n.h5"), "--set", "matcher=mnn"]) == 0
    assert store.read_attrs(tmp_path / "n.h5")["model"] == "aliked.n16"
    capsys.readouterr()
    (home / LIGHTGLUE_ALIKED_WEIGHTS.filename).rename(tmp_path / "moved.pth")
    try:
        assert main(args + ["--out", str(tmp_path / "x.h5")]) == 1
    finally:
        (tmp_path / "moved.pth").rename(home / LIGHTGLUE_ALIKED_WEIGHTS.filename)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "featmatch download aliked.n16+lightglue" in err and "--matcher-weights" in err


def test_reconstruct_matches_with_lightglue(weights_home, images, tmp_path):
    """The chain runs the combined model's LightGlue (random weights here, so the mapping may
    well fail to initialise; the real run is test_official_weights_* below)."""
    out = tmp_path / "rec"
    try:
        pipeline.reconstruct(images, out, "aliked.n16", overrides={"matcher": "lightglue", **TOP_K}, progress=False)
    except FeatmatchError as e:
        assert "failed to initialise" in str(e)
    assert store.read_attrs(out / "features.h5")["model"] == MODEL
    attrs = store.read_attrs(out / "matches.h5")
    assert attrs["model"] == MODEL and attrs["matcher_weights_sha256"] == LIGHTGLUE_ALIKED_WEIGHTS.sha256


# ----------------------------------------------------------------------------- official weights
@pytest.mark.weights
def test_official_weights_stored_equal_in_memory(images, tmp_path):
    need_weights(MODEL)
    f = tmp_path / "f.h5"
    pipeline.extract(images, f, MODEL, progress=False)
    pairs = pipeline.pairs.exhaustive(store.feature_names(f))
    got = _matches0(pipeline.match(f, pairs, tmp_path / "m.h5", progress=False), pairs)
    exp = _expected(featmatch.load(MODEL), images, pairs)
    for p in pairs:
        np.testing.assert_array_equal(got[p], exp[p])
        assert (got[p] >= 0).sum() > 200, p


@pytest.mark.weights
def test_official_weights_reconstruct_registers_every_view(tmp_path):
    from featmatch.data.scene import orbit_cameras, render_scene

    need_weights(MODEL)
    root = tmp_path / "img"
    render_scene(root, orbit_cameras(5, step_deg=15), seed=0)
    r = pipeline.reconstruct(root, tmp_path / "rec", MODEL, overrides={"top_k": 1024}, progress=False)
    s = r.summary
    assert s["registered_images"] == 5 and s["points3D"] > 200 and s["mean_reprojection_error_px"] < 1.0
    assert store.read_attrs(tmp_path / "rec" / "matches.h5")["model"] == MODEL
