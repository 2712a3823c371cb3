"""Frozen configuration dataclasses: strict ``from_dict``, typed values, text parsing.

Every model has one frozen dataclass config, one commented field per option. This module
is the one place where option values are checked against the field's declared type:

* :func:`from_dict` (keyword arguments, YAML, the CLI) rejects unknown keys with their
  full dotted path and a close-match suggestion, and wrong-typed values (``'yes'`` for a
  ``bool``, ``1.5`` for an ``int``, a string for a group of options) with one line;
* :func:`check_types` checks a config instance built directly (``XFeatConfig(top_k="x")``);
  every model calls it when it is built;
* :func:`parse_assignments` turns command-line ``KEY=VALUE`` strings into typed values
  once, driven by the same field types (``true/false/1/0`` for booleans, ``none`` for
  optional fields, ``0.6,1.3`` or ``[0.6, 1.3]`` for tuples, ``matcher.ratio=0.8`` for
  nested options).

Value *ranges* (``top_k >= 1``, ...) are checked by the models (``models.base``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import typing
from typing import Any, Iterable, Mapping, TypeVar

from .errors import UsageError

C = TypeVar("C")

_TRUE = ("true", "1")
_FALSE = ("false", "0")
_NONE = ("none", "null")


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid keys: {', '.join(sorted(options))}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        inner = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or None" if type(None) in args else "")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"{len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a group of options ({tp.__name__})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _group_error(tp: Any, path: str, value: Any) -> UsageError:
    names = [f.name for f in dataclasses.fields(tp)]
    return UsageError(f"option '{path}' is a group of options ({tp.__name__}), not a value (got {value!r}); "
                      f"set its fields instead, e.g. {path}.{names[0]}=... (fields: {', '.join(names)})")


def _is_bool(v: Any) -> bool:
    t = type(v)
    return isinstance(v, bool) or (t.__module__ == "numpy" and t.__name__ in ("bool_", "bool"))  # numpy's too


def _bad(path: str, tp: Any, value: Any) -> UsageError:
    return UsageError(f"option '{path}' must be {_type_name(tp)}, got {value!r}")


def check_value(value: Any, tp: Any, path: str) -> Any:
    """``value`` converted to the declared type ``tp`` (ints -> floats, lists -> tuples,
    mappings -> nested configs), or :class:`UsageError` naming ``path``.

    Accepted: ``bool`` fields take only booleans; ``int`` fields integers (not booleans,
    not 1.5); ``float`` fields finite-or-infinite real numbers (not booleans, not NaN);
    ``str`` fields strings; ``Optional[X]`` None or X; tuples their element types.
    """
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _bad(path, tp, value)
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(value, a, path)
            except UsageError:
                continue
        raise _bad(path, tp, value)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise _bad(path, tp, value)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _bad(path, tp, value)
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(v, args[0], path) for v in value)
        if args and len(args) != len(value):
            raise UsageError(f"option '{path}' expects {len(args)} values, got {len(value)}: {list(value)!r}")
        return tuple(check_value(v, a, path) for v, a in zip(value, args)) if args else tuple(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            check_types(value, _path=path)
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, _path=path)
        raise _group_error(tp, path, value)
    if tp is bool:
        if _is_bool(value):
            return bool(value)
        raise UsageError(f"option '{path}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not _is_bool(value):
            return int(value)
        raise _bad(path, tp, value)
    if tp is float:
        if isinstance(value, numbers.Real) and not _is_bool(value):
            if math.isnan(float(value)):
                raise UsageError(f"option '{path}' must be a number, got NaN")
            return float(value)
        raise _bad(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(path, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _bad(path, tp, value)
    return value  # an annotation this checker does not know: accepted as is


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(cfg: Any, _path: str = "") -> None:
    """Check every field of a config instance against its declared type (recursively).

    Raises:
        UsageError: one line naming the option, the expected type and the value.
    """
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        full = f"{_path}.{f.name}" if _path else f.name
        check_value(getattr(cfg, f.name), hints.get(f.name, Any), full)


def from_dict(cls: type[C], data: Mapping[str, Any] | None = None, *, base: C | None = None,
              _path: str = "") -> C:
    """Build a frozen config dataclass from a mapping, rejecting unknown keys and
    values of the wrong type.

    Args:
        cls: the dataclass type.
        data: overrides; nested dataclass fields accept nested mappings.
        base: start from this instance instead of the class defaults.

    Raises:
        UsageError: a key is not a field of ``cls`` (the message names its full path), or
            a value does not fit the field's declared type.
    """
    data = dict(data or {})
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{_path}.{key}" if _path else key
        if key not in fields:
            raise UsageError(f"unknown option '{full}' for {cls.__name__}{_suggest(str(key), list(fields))}")
        tp = hints.get(key, Any)
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            current = getattr(base, key) if base is not None else None
            kwargs[key] = from_dict(tp, value, base=current, _path=full)
        else:
            kwargs[key] = check_value(value, tp, full)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- text values
def parse_text(text: str, tp: Any, path: str) -> Any:
    """Parse a command-line value for a field of type ``tp`` (once, strictly).

    ``bool``: ``true/false/1/0`` (any case); ``int``/``float``: numbers; ``Optional``:
    ``none``/``null`` for None; tuples: ``a,b`` or a JSON list; ``str``: the text.

    Raises:
        UsageError: the text does not fit the type (one line naming the option).
    """
    t = text.strip()
    origin = typing.get_origin(tp)
    if tp is Any or tp is typing.Any:
        try:
            return json.loads(t)
        except json.JSONDecodeError:
            return t
    if origin is typing.Union:
        args = typing.get_args(tp)
        if type(None) in args and t.lower() in _NONE:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_text(t, a, path)
            except UsageError:
                continue
        raise UsageError(f"option '{path}' must be {_type_name(tp)}, got '{text}'")
    if dataclasses.is_dataclass(tp):
        raise _group_error(tp, path, text)
    if origin is typing.Literal:
        for a in typing.get_args(tp):
            if str(a) == t:
                return a
        raise UsageError(f"option '{path}' must be {_type_name(tp)}, got '{text}'")
    if origin is tuple:
        if t.startswith("["):
            try:
                items = json.loads(t)
            except json.JSONDecodeError:
                raise UsageError(f"option '{path}' expects {_type_name(tp)} like 1,2 or [1, 2], got '{text}'") from None
            items = [json.dumps(v) if not isinstance(v, str) else v for v in items]
        else:
            items = [s for s in t.split(",") if s.strip()] if t else []
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(parse_text(s, args[0], path) for s in items)
        if args and len(args) != len(items):
            raise UsageError(f"option '{path}' expects {len(args)} values, got {len(items)}: '{text}'")
        return tuple(parse_text(s, a, path) for s, a in zip(items, args)) if args else tuple(items)
    if tp is bool:
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise UsageError(f"option '{path}' must be true or false (or 1/0), got '{text}'")
    if tp is int:
        try:
            return int(t)
        except ValueError:
            raise UsageError(f"option '{path}' must be an integer, got '{text}'") from None
    if tp is float:
        try:
            v = float(t)
        except ValueError:
            raise UsageError(f"option '{path}' must be a number, got '{text}'") from None
        if math.isnan(v):
            raise UsageError(f"option '{path}' must be a number, got '{text}'")
        return v
    if tp is str:
        if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
            return t[1:-1]
        return t
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        return t


def parse_assignments(cls: type, items: Iterable[str], *, flag: str = "--set") -> dict[str, Any]:
    """``["top_k=500", "matcher.ratio=0.8"]`` -> ``{"top_k": 500, "matcher": {"ratio": 0.8}}``
    with each value parsed by :func:`parse_text` for the field it names in ``cls``.

    Raises:
        UsageError: no ``=``, an unknown key (with a suggestion), a value of the wrong type,
            or a group of options given a single value (``matcher=x``).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"{flag} expects KEY=VALUE (e.g. {flag} top_k=500), got '{item}'")
        key, text = item.split("=", 1)
        parts = [p.strip() for p in key.strip().split(".")]
        node, owner, path = out, cls, ""
        for i, part in enumerate(parts):
            path = f"{path}.{part}" if path else part
            if not dataclasses.is_dataclass(owner):
                raise UsageError(f"option '{path.rsplit('.', 1)[0]}' has no sub-options (got '{key}')")
            names = [f.name for f in dataclasses.fields(owner)]
            if part not in names:
                raise UsageError(f"unknown option '{path}' for {owner.__name__}{_suggest(part, names)}")
            tp = _hints(owner).get(part, Any)
            if i == len(parts) - 1:
                node[part] = parse_text(text, tp, path)
            else:
                nxt = node.setdefault(part, {})
                if not isinstance(nxt, dict):
                    raise UsageError(f"option '{path}' is set twice (as a value and as a group)")
                node, owner = nxt, _unwrap_optional(tp)
    return out


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return tp


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config (for reports and hashing)."""
    return dataclasses.asdict(cfg)
