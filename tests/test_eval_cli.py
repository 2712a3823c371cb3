"""`featmatch eval homography|pose`: tables, outputs, exit codes and one-line errors."""

from __future__ import annotations

import pytest

from featmatch.cli import main

from test_eval_data import make_hpatches, make_pose_scene


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    return make_hpatches(base / "hp", sequences=("v_a",), n_images=3), make_pose_scene(base / "pose", n_pairs=1)


def test_homography_and_pose_commands(roots, tmp_path, capsys):
    hp, ps = roots
    out = tmp_path / "out"
    code = main(["eval", "homography", "--models", "sift,orb", "--data", str(hp), "--output", str(out),
                 "--no-progress", "--max-pairs", "1"])
    res = capsys.readouterr()
    assert code == 0, res.err
    assert "| `sift` |" in res.out and "| `orb` |" in res.out and "MHA@3" in res.out
    assert f"wrote {out / 'homography.json'}" in res.out and (out / "homography.png").exists()
    code = main(["eval", "homography", "--models", "sift", "--data", str(hp), "--output", str(out),
                 "--no-progress", "--no-plot", "--max-pairs", "1", "--estimator", "poselib"])
    res = capsys.readouterr()
    from featmatch.eval.pose import poselib_available

    if poselib_available():
        assert code == 0, res.err
        assert f"wrote {out / 'homography-poselib.json'}" in res.out and "--estimator poselib" in \
            (out / "homography-poselib.md").read_text()
    else:
        assert code == 1 and "pip install poselib" in res.err
    code = main(["eval", "pose", "--models", "sift", "--data", str(ps), "--output", str(out), "--no-progress",
                 "--no-plot", "--threshold", "1", "--resize", "160"])
    res = capsys.readouterr()
    assert code == 0, res.err
    assert "AUC@5" in res.out and (out / "pose.md").exists() and not (out / "pose.png").exists()


@pytest.mark.parametrize("args, code, pattern", [
    (["--models", "nope"], 2, "unknown model 'nope'"),
    (["--models", "sift", "--method", "magic"], 2, "unknown --method 'magic'"),
    (["--models", ","], 2, "--models needs at least one model"),
    (["--models", "sift", "--resize", "8"], 2, "--resize must be at least 32"),
    (["--models", "sift", "--estimator", "poselib", "--method", "ransac"], 2, "with --estimator poselib drop it"),
])
def test_usage_errors_exit_2(roots, tmp_path, capsys, args, code, pattern):
    hp, _ = roots
    assert main(["eval", "homography", "--data", str(hp), "--output", str(tmp_path)] + args) == code
    err = capsys.readouterr().err.strip()
    assert pattern in err and len(err.splitlines()) == 1


def test_missing_subcommand_or_option_exit_2(capsys):
    assert main(["eval"]) == 2
    assert "choose a benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", "homography", "--models", "sift"])
    assert e.value.code == 2


def test_bad_data_exits_1_naming_the_path(roots, tmp_path, capsys):
    hp, ps = roots
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "homography", "--models", "sift", "--data", str(empty), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(empty) in err and "expected HPatches layout" in err and len(err.splitlines()) == 1
    assert main(["eval", "pose", "--models", "sift", "--data", str(hp), "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "no pairs.json or pairs.txt" in err and "expected pose layout" in err


def test_missing_h_file_exits_1(roots, tmp_path, capsys):
    hp, _ = roots
    (hp / "v_a" / "H_1_3").rename(hp / "v_a" / "H_1_3.bak")
    try:
        code = main(["eval", "homography", "--models", "sift", "--data", str(hp), "--output", str(tmp_path)])
    finally:
        (hp / "v_a" / "H_1_3.bak").rename(hp / "v_a" / "H_1_3")
    err = capsys.readouterr().err.strip()
    assert code == 1 and "missing homography" in err and "H_1_3" in err and len(err.splitlines()) == 1


def test_model_spec_with_label_and_weights():
    from featmatch.eval.predict import split_spec

    assert split_spec("xfeat") == ("xfeat", "xfeat", None)
    assert split_spec("mine=xfeat@runs/a/model.pt") == ("mine", "xfeat", "runs/a/model.pt")
    assert split_spec("xfeat@w.pt") == ("xfeat@w.pt", "xfeat", "w.pt")


def test_model_spec_missing_weight_file_is_a_usage_error(tmp_path):
    import pytest

    from featmatch.errors import UsageError
    from featmatch.eval.predict import load_models

    with pytest.raises(UsageError, match="weight file not found for 'mine'"):
        load_models(["mine=xfeat@" + str(tmp_path / "nope.pt")])


def test_max_pairs_is_an_even_spread():
    """Issue 13, point 18: --max-pairs N samples every sequence, not the first N sorted pairs."""
    from featmatch.eval.predict import spread

    items = [f"{s}/{i}" for s in ("a", "b", "c") for i in range(5)]
    picked = spread(items, 3)
    assert picked == ["a/0", "b/2", "c/4"] and {p[0] for p in picked} == {"a", "b", "c"}
    assert spread(items, 1) == ["b/2"] and spread(items, 100) == items and len(spread(items, 7)) == 7


def test_eval_set_options_typed_and_targeted():
    """Issue 13, point 18: eval --set KEY=VALUE for every model, LABEL:KEY=VALUE for one."""
    import pytest

    from featmatch.errors import UsageError
    from featmatch.eval.predict import load_models, model_overrides

    assert model_overrides("sift", options=["rootsift=true", "orb:top_k=5"]) == {"rootsift": True}
    assert model_overrides("orb", options=["orb:top_k=5"], max_keypoints=None) == {"top_k": 5}
    with pytest.raises(UsageError, match="option 'rootsift' must be true or false"):
        model_overrides("sift", options=["rootsift=no"])
    with pytest.raises(UsageError, match="unknown option 'rootsift' for ORBConfig"):
        model_overrides("orb", options=["rootsift=true"])
    with pytest.raises(UsageError, match="no model listed as 'xfeat'"):
        load_models(["sift"], options=["xfeat:top_k=5"])
    (m,) = load_models(["sift"], options=["rootsift=1", "matcher.ratio=0.7"])
    assert m.model.config.rootsift is True and m.model.config.matcher.ratio == 0.7


def test_eval_command_records_set(roots, tmp_path, capsys):
    hp, _ = roots
    code = main(["eval", "homography", "--models", "sift", "--data", str(hp), "--output", str(tmp_path),
                 "--set", "top_k=300", "--max-pairs", "1", "--no-plot", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    import json

    rep = json.loads((tmp_path / "homography.json").read_text())
    assert "--set top_k=300" in rep["command"]
