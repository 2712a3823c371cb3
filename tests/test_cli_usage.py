"""The CLI papercuts a new user hit (issue 13): option values, devices, output paths,
closed pipes, --debug placement, timings, thresholds in --help, cache-independent listing.

Most runs call ``featmatch.cli.main`` in-process (fast); the pipe and one end-to-end run
use a subprocess. Models: ``sift`` (no weights needed), so nothing here reads the cache.
"""

import os
import subprocess
import sys

import cv2
import pytest

from featmatch import cli


@pytest.fixture(scope="module")
def pair(shifted_pair_dir):
    return str(shifted_pair_dir / "a.png"), str(shifted_pair_dir / "b.png")


def fm(capsys, *args):
    """Run `featmatch ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse errors and --help
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err):
    lines = [l for l in err.strip().splitlines() if not l.startswith("featmatch: WARNING")]
    assert len(lines) == 1 and lines[0].startswith("featmatch: error:") and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------- points 1, 2, 4: values
@pytest.mark.parametrize("flag, via_set, message", [
    (["--max-keypoints", "-5"], ["--set", "top_k=-5"], "top_k must be an integer >= 1, got -5"),
    (["--max-keypoints", "0"], ["--set", "top_k=0"], "top_k must be an integer >= 1, got 0"),
    (["--resize", "10"], ["--set", "resize=10"], "resize must be an integer >= 32"),
])
def test_flags_and_set_refuse_the_same_nonsense(capsys, pair, flag, via_set, message):
    for extra in (flag, via_set):
        code, _, err = fm(capsys, "match", *pair, "--model", "sift", *extra)
        assert code == 2 and message in one_line(err), err


@pytest.mark.parametrize("extra, message", [
    (["--set", "rootsift=no"], "option 'rootsift' must be true or false (or 1/0), got 'no'"),
    (["--set", "rootsift=maybe"], "option 'rootsift' must be true or false"),
    (["--threshold", "-1"], "--threshold must be > 0 pixels, got -1"),
    (["--threshold", "0"], "--threshold must be > 0 pixels"),
    (["--set", "matcher=lightglue"], "model 'sift' has no matcher 'lightglue'; use one of: mnn"),
    (["--set", "matcher=5.0"], "--set matcher=NAME takes a matcher name"),
    (["--set", "detection_threshold=1"], "unknown option 'detection_threshold' for SIFTConfig"),
    (["--set", "top_k=5", "--max-keypoints", "5"], "top_k given twice"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--viz-max-lines", "-1", "--viz", "x.png"], "--viz-max-lines must be >= 0"),
])
def test_bad_values_are_usage_errors(capsys, pair, extra, message):
    code, _, err = fm(capsys, "match", *pair, "--model", "sift", *extra)
    assert code == 2 and message in one_line(err), err


def test_cli_booleans_mean_what_they_say(capsys, pair, monkeypatch):
    """--set rootsift=False used to turn RootSIFT on."""
    import featmatch.registry as registry

    seen = []
    real = registry.load
    monkeypatch.setattr(registry, "load", lambda *a, **k: seen.append(k) or real(*a, **k))
    for text, value in (("False", False), ("0", False), ("TRUE", True), ("1", True)):
        code, out, err = fm(capsys, "match", *pair, "--model", "sift", "--set", f"rootsift={text}",
                            "--set", "matcher.ratio=0.7", "--geometry", "none")
        assert code == 0, err
        assert seen[-1]["rootsift"] is value and seen[-1]["matcher"] == {"ratio": 0.7}


def test_help_shows_nested_set_thresholds_and_device(capsys):
    code, out, _ = fm(capsys, "match", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "--set matcher.ratio=0.6" in text and "true/false/1/0" in text  # point 4, 1
    assert "default: 1 px for fundamental, 3 px for homography" in text  # point 17
    assert "auto (CUDA, then MPS, then CPU; the default)" in text  # point 5
    assert "--viz-max-lines" in text and "--viz-inliers-only" in text and "--threads" in text


# ----------------------------------------------------------------- point 5: devices
def test_unavailable_device_is_a_usage_error(capsys, pair):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = fm(capsys, "match", *pair, "--model", "sift", "--device", "cuda")
    assert code == 2 and "device 'cuda' is not available" in one_line(err)


# ----------------------------------------------------------------- point 7: output paths
def test_output_paths_checked_before_any_compute(capsys, pair, tmp_path, monkeypatch):
    import featmatch.registry as registry

    monkeypatch.setattr(registry, "load", lambda *a, **k: pytest.fail("output path not checked before loading"))
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--output", str(tmp_path)], "is a directory"),
        (["--viz", str(tmp_path)], "is a directory"),
        (["--output", str(tmp_path / "afile" / "m.npz")], "is a file, not a folder"),
        (["--output", str(tmp_path / "m.txt")], "--output must end in .npz or .json"),
        (["--output", str(tmp_path / "m.png.npz"), "--viz", str(tmp_path / "v.gif")], "--viz must end in"),
    ]
    for extra, message in cases:
        code, _, err = fm(capsys, "match", *pair, "--model", "sift", *extra)
        assert code == 2 and message in one_line(err), (extra, err)


def test_missing_output_folders_are_created(capsys, pair, tmp_path):
    out, viz = tmp_path / "new" / "deeper" / "m.json", tmp_path / "other" / "v.png"
    code, stdout, err = fm(capsys, "match", *pair, "--model", "sift", "--output", out, "--viz", viz)
    assert code == 0, err
    assert out.is_file() and viz.is_file()


# ----------------------------------------------------------------- point 9: --debug anywhere
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_subcommand(capsys, pair, where):
    args = ["match", *pair, "--model", "sift", "--set", "nope=1"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    code, _, err = fm(capsys, *args)
    assert code == 2 and "Traceback" in err and "unknown option 'nope'" in err.strip().splitlines()[-1]
    code, _, err = fm(capsys, "list", "--debug")
    assert code == 0


# ----------------------------------------------------------------- point 16: timings, threads
def test_timings_are_split_and_threads_set(capsys, pair):
    import torch

    before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        code, out, err = fm(capsys, "match", *pair, "--model", "sift", "--threads", "1")
        assert code == 0, err
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(before)
        cv2.setNumThreads(cv_before)
    line = out.splitlines()[0]
    for step in ("load", "extract", "match", "geometry"):
        assert f" {step} " in line.split("time:")[1], line


# ----------------------------------------------------------------- points 11, 13: featmatch list
def test_list_is_independent_of_the_cache(capsys, tmp_path, monkeypatch):
    """After `featmatch download --all` (or with any cache) the listing is the same for
    weights that ship in the package; per-model max_pixels is shown."""
    from featmatch import hub
    from featmatch.registry import model_card

    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    code, out, _ = fm(capsys, "list")
    rows = {l.split()[0]: l for l in out.splitlines() if l and not l.startswith(("model ", "weights", "max px"))}
    assert code == 0 and rows["loftr.tiny"].endswith("in package  1.2M")
    assert " no " in rows["xfeat"] and rows["xfeat"].endswith("8.0M") and rows["aliked.n16"].endswith("2.5M")
    tiny = model_card("loftr.tiny").weights
    (tmp_path / tiny.filename).write_bytes(hub.resolve(tiny, name="loftr.tiny").read_bytes())  # as download --all did
    (tmp_path / model_card("xfeat").weights.filename).write_bytes(b"x")
    code, out, _ = fm(capsys, "list")
    rows = {l.split()[0]: l for l in out.splitlines() if l}
    assert "in package" in rows["loftr.tiny"] and " yes " in rows["xfeat"]
    code, out, _ = fm(capsys, "download", "loftr.tiny")
    assert code == 0 and "ship inside the featmatch package" in out


# ----------------------------------------------------------------- points 10, 18: messages
def test_weights_messages_fit_the_cli(capsys, pair, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    monkeypatch.setattr("featmatch.hub._installed_path", lambda spec: None)
    code, _, err = fm(capsys, "match", *pair, "--model", "xfeat")
    line = one_line(err)
    assert code == 1 and "featmatch download xfeat" in line and "--weights PATH" in line and "weights=PATH" not in line
    code, _, err = fm(capsys, "match", *pair, "--model", "xfeat", "--weights", pair[0])
    line = one_line(err)
    assert code == 1 and "not a PyTorch checkpoint" in line and "download" not in line


# ----------------------------------------------------------------- point 8: closed stdout
def test_closed_stdout_does_not_stop_the_run(pair, tmp_path):
    """`featmatch match ... | head -0`: the run finishes and writes its files, quietly."""
    viz, out = tmp_path / "v.png", tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "featmatch", "match", *pair, "--model", "sift", "--viz", str(viz),
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "BrokenPipe" not in err and "Traceback" not in err, err
    assert viz.is_file() and out.is_file()


def test_pipeline_commands_type_set_like_match(capsys, pair, tmp_path):
    """`featmatch extract --set` goes through the same typed parsing as `match --set`."""
    import shutil

    d = tmp_path / "imgs"
    d.mkdir()
    for p in pair:
        shutil.copy(p, d)
    out = tmp_path / "f.h5"
    for extra, message in ((["--set", "rootsift=no"], "option 'rootsift' must be true or false (or 1/0), got 'no'"),
                           (["--max-keypoints", "0"], "top_k must be an integer >= 1, got 0")):
        code, _, err = fm(capsys, "extract", "--images", d, "--out", out, "--model", "sift", *extra)
        assert code == 2 and message in one_line(err), err
    assert not out.exists()
