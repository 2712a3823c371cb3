"""Exceptions raised by featmatch.

Every error featmatch raises on bad input is a :class:`FeatmatchError` whose message is
one line naming the problem and the fix; the CLI prints it without a traceback.
"""

from __future__ import annotations


class FeatmatchError(Exception):
    """Base class: a one-line, user-facing problem (bad input, missing weights, ...).

    ``cli``: the same message worded for the command line, where it differs (``--weights
    PATH`` instead of ``weights=PATH``); the CLI prints it instead of the message.
    """

    exit_code = 1

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli


class UsageError(FeatmatchError, ValueError):
    """The call itself is wrong (unknown model, misspelt option, bad shape)."""

    exit_code = 2


class ImageReadError(FeatmatchError, ValueError):
    """An image file is missing, empty, corrupt or of an unsupported kind."""


class WeightsNotFoundError(FeatmatchError, FileNotFoundError):
    """Weights are not cached; the message names the `featmatch download` command."""


class WeightsError(FeatmatchError):
    """A weight file exists but is corrupt, has the wrong hash, or the wrong keys."""


class DownloadError(FeatmatchError):
    """Every source of a weight file failed."""
