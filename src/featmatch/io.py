"""Atomic file output: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps ``suffix`` (default: the target's suffix) so writers that
    pick a format from the extension (OpenCV, matplotlib, numpy) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix="." + target.stem + ".", suffix=suffix or target.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_output_path(path: Union[str, os.PathLike], suffixes: tuple[str, ...] = (), option: str = "output") -> Path:
    """Check an output file name before any work is done, so a bad name fails at once
    instead of after the compute. Missing parent folders are allowed: :func:`atomic_path`
    creates them when the file is written (the same for every featmatch output).

    Args:
        path: the file to be written.
        suffixes: accepted extensions (lower case, with the dot); empty: any.
        option: the option or argument name used in the message (``--output``).

    Returns:
        the absolute path.

    Raises:
        UsageError: wrong extension, an existing directory, a parent that is a file, or a
            folder that cannot be written.
    """
    from .errors import UsageError

    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{option} {p} is a directory; give a file name inside it, e.g. {p / ('out' + (suffixes[0] if suffixes else ''))}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{option} must end in {' or '.join(suffixes)}, got '{path}'")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {p}: no permission to write in {parent}")
    return p.absolute()
