"""Frozen configuration dataclasses and a strict ``from_dict``.

Every model has one frozen dataclass config. Overrides come in as plain dicts (keyword
arguments, CLI options, YAML) and go through :func:`from_dict`, which rejects unknown
keys with their full dotted path and a close-match suggestion, so a misspelt option is
an error instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Mapping, TypeVar

from .errors import UsageError

C = TypeVar("C")


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid keys: {', '.join(sorted(options))}"


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert simple values (lists -> tuples, ints -> floats) to the field's type."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_dict(tp, value, _path=path)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], path) for v in value)
        if args and len(args) != len(value):
            raise UsageError(f"config key '{path}' expects {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, path) for v, a in zip(value, args)) if args else tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(value, args[0], path)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any] | None = None, *, base: C | None = None,
              _path: str = "") -> C:
    """Build a frozen config dataclass from a mapping, rejecting unknown keys.

    Args:
        cls: the dataclass type.
        data: overrides; nested dataclass fields accept nested mappings.
        base: start from this instance instead of the class defaults.

    Raises:
        UsageError: a key is not a field of ``cls`` (the message names its full path).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{_path}.{key}" if _path else key
        if key not in fields:
            raise UsageError(f"unknown option '{full}' for {cls.__name__}{_suggest(key, list(fields))}")
        tp = hints.get(key, Any)
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            current = getattr(base, key) if base is not None else None
            kwargs[key] = from_dict(tp, value, base=current, _path=full)
        else:
            kwargs[key] = _coerce(value, tp, full)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config (for reports and hashing)."""
    return dataclasses.asdict(cfg)
