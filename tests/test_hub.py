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
    """xfeat's weight spec pointed at a local file:// URL (no network)."""
    src = tmp_path / "src.pt"
    torch.save({"a": torch.ones(2)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    card = get_entry("xfeat").card
    spec = dataclasses.replace(card.weights, sha256=digest, urls=(src.as_uri(),), pypi=None, installed=())
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path / "home"))
    return src, spec


def test_download_verifies_and_caches(fake_source, tmp_path):
    src, spec = fake_source
    path = hub.download(spec, name="xfeat")
    assert path == tmp_path / "home" / spec.filename and path.read_bytes() == src.read_bytes()
    assert hub.resolve(spec, name="xfeat") == path
    assert not list((tmp_path / "home").glob("*.part")) and [p.name for p in (tmp_path / "home").iterdir()] == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # normal permissions, not mkstemp's 0600


def test_download_rejects_wrong_checksum_and_keeps_cache_clean(fake_source, monkeypatch, tmp_path):
    src, spec = fake_source
    bad = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(DownloadError, match="sha256"):
        hub.download(bad, name="xfeat")
    assert not (tmp_path / "home" / spec.filename).exists()


def test_unreachable_sources_fail_over_with_one_message(fake_source, monkeypatch):
    src, spec = fake_source
    dead = dataclasses.replace(spec, urls=("http://127.0.0.1:9/xfeat.pt", src.as_uri()))
    assert hub.download(dead, name="xfeat").is_file()  # first URL refused at once, second works
    gone = dataclasses.replace(spec, urls=("http://127.0.0.1:9/xfeat.pt",))
    with pytest.raises(DownloadError, match="could not download weights for 'xfeat'"):
        hub.download(gone, name="xfeat", force=True)


def test_corrupt_cached_file_is_reported(fake_source, tmp_path):
    src, spec = fake_source
    home = tmp_path / "home"
    home.mkdir()
    (home / spec.filename).write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="featmatch download xfeat --force"):
        hub.resolve(spec, name="xfeat")


def test_load_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "_installed_path", lambda spec: None)
    monkeypatch.setattr(hub, "download", lambda *a, **k: pytest.fail("load() must not download"))
    with pytest.raises(featmatch.WeightsNotFoundError):
        featmatch.load("xfeat-star")


def test_hub_and_registry_layers_are_one_way():
    """hub works on WeightSpecs and never imports the registry (issue 13, point 19); the
    registry turns names into specs."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(hub))
    imported = {getattr(n, "module", None) or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("registry" in m for m in imported), imported
    with pytest.raises(featmatch.UsageError, match="WeightSpec.*registry.weights_path"):
        hub.resolve("xfeat")
    from featmatch import registry

    assert registry.WeightSpec is hub.WeightSpec  # models keep importing it from the registry


@pytest.mark.parametrize("origin, fix", [
    ("user", "saved with torch.save"),
    ("cache", "featmatch download xfeat --force"),
    ("package", "reinstall featmatch"),
])
def test_unreadable_weights_message_fits_where_the_file_came_from(tmp_path, origin, fix):
    """A user's own file is not 'downloaded again' (issue 13, point 10)."""
    bad = tmp_path / "some.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(WeightsError, match=fix) as e:
        hub.read_state_dict(bad, origin=origin, name="xfeat")
    assert ("download" in str(e.value)) == (origin == "cache")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(b"PK\x03\x04" + bytes(16))  # a zip header, then garbage
    with pytest.raises(WeightsError, match=fix):
        hub.read_state_dict(trunc, origin=origin, name="xfeat")


def test_load_with_a_users_unreadable_file_says_so(tmp_path):
    bad = tmp_path / "some.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint; pass a checkpoint") as e:
        featmatch.load("xfeat", weights=bad)
    assert "download" not in str(e.value)
    with pytest.raises(featmatch.WeightsNotFoundError, match="is a directory"):
        featmatch.load("xfeat", weights=tmp_path)


def test_origin_of_resolved_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATMATCH_HOME", str(tmp_path))
    spec = featmatch.model_card("loftr.tiny").weights
    assert spec.in_package and not featmatch.model_card("xfeat").weights.in_package
    assert hub.origin(spec, hub.resolve(spec, name="loftr.tiny")) == "package"
    assert hub.origin(spec, tmp_path / spec.filename) == "cache"
    assert hub.origin(spec, tmp_path / "x.pt", user_given=True) == "user"
