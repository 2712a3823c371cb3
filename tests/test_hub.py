import dataclasses
import hashlib
import os

import pytest
import torch

import featmatch
from featmatch import hub
from featmatch.errors import DownloadError, WeightsError
from featmatch.registry import get_entry


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """Point xfeat's weight spec at a local file:// URL (no network)."""
    src = tmp_path / "src.pt"
    torch.save({"a": torch.ones(2)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    card = get_entry("xfeat").card
    spec = dataclasses.replace(card.weights, sha256=digest, urls=(src.as_uri(),), pypi=None, installed=())
    monkeypatch.setattr(hub, "_spec", lambda name: spec)
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path / "home"))
    return src, spec


def test_download_verifies_and_caches(fake_source, tmp_path):
    src, spec = fake_source
    path = hub.download("xfeat")
    assert path == tmp_path / "home" / spec.filename and path.read_bytes() == src.read_bytes()
    assert hub.resolve("xfeat") == path
    assert not list((tmp_path / "home").glob("*.part")) and [p.name for p in (tmp_path / "home").iterdir()] == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # normal permissions, not mkstemp's 0600


def test_download_rejects_wrong_checksum_and_keeps_cache_clean(fake_source, monkeypatch, tmp_path):
    src, spec = fake_source
    bad = dataclasses.replace(spec, sha256="0" * 64)
    monkeypatch.setattr(hub, "_spec", lambda name: bad)
    with pytest.raises(DownloadError, match="sha256"):
        hub.download("xfeat")
    assert not (tmp_path / "home" / spec.filename).exists()


def test_unreachable_sources_fail_over_with_one_message(fake_source, monkeypatch):
    src, spec = fake_source
    dead = dataclasses.replace(spec, urls=("http://127.0.0.1:9/xfeat.pt", src.as_uri()))
    monkeypatch.setattr(hub, "_spec", lambda name: dead)
    assert hub.download("xfeat").is_file()  # first URL refused at once, second works
    gone = dataclasses.replace(spec, urls=("http://127.0.0.1:9/xfeat.pt",))
    monkeypatch.setattr(hub, "_spec", lambda name: gone)
    with pytest.raises(DownloadError, match="could not download weights for 'xfeat'"):
        hub.download("xfeat", force=True)


def test_corrupt_cached_file_is_reported(fake_source, tmp_path):
    src, spec = fake_source
    home = tmp_path / "home"
    home.mkdir()
    (home / spec.filename).write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="featmatch download xfeat --force"):
        hub.resolve("xfeat")


def test_load_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "_installed_path", lambda spec: None)
    monkeypatch.setattr(hub, "download", lambda *a, **k: pytest.fail("load() must not download"))
    with pytest.raises(featmatch.WeightsNotFoundError):
        featmatch.load("xfeat-star")
