"""Strict structuring of plain TOML data into attrs classes.

Why not cattrs: we need one ``path: expected ..., got ...`` line per problem, every problem
collected, no silent coercion (``1.7`` is not an int, ``"false"`` is not a bool, ``[0.9]`` is
not a ``tuple[float, float]``), and did-you-mean suggestions for unknown keys.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, Union

import attrs

# scalar type -> (as messages name it, plural, accepted TOML types); a bool is never a number
_SCALARS: dict[Any, tuple[str, str, tuple[type, ...]]] = {
    int: ("an int", "ints", (int,)),
    float: ("a number", "numbers", (int, float)),
    bool: ("true or false", "booleans", (bool,)),
    str: ("a string", "strings", (str,)),
}


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return {dict: "a table", list: "an array"}.get(type(value)) or repr(value)


def _fixed_items(tp: Any) -> tuple[Any, ...] | None:
    """Item types of a fixed-length ``tuple[X, Y]``; None for ``tuple[X, ...]`` and ``list[X]``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args and args[-1] is not Ellipsis:
        return args
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _SCALARS:
        return _SCALARS[tp][0]
    if origin is Literal:
        return "one of " + ", ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (tuple, list):
        fixed = _fixed_items(tp)
        item_types = set(fixed or typing.get_args(tp)[:1])
        if len(item_types) != 1:  # untyped, or mixed as in tuple[int, str]
            return f"an array of {len(fixed)} items" if fixed else "an array"
        (item,) = item_types
        plural = _SCALARS[item][1] if item in _SCALARS else f"items ({_type_name(item)})"
        return f"an array of {len(fixed)} {plural}" if fixed else f"an array of {plural}"
    if origin is dict or tp is dict:
        return "a table"
    return getattr(tp, "__name__", str(tp))


def describe_type(tp: Any) -> str:
    """A type as docs show it: ``int``, ``number``, ``"ema" | "shared"``, ``array of ints``."""
    if typing.get_origin(tp) is Literal:
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    text = _type_name(tp)
    for article in ("an ", "a "):
        text = text.replace(" or " + article, " or ")
        text = text[len(article) :] if text.startswith(article) else text
    return text


def structure_value(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check ``value`` against type ``tp``; append ``path: message`` lines to ``errors``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            result = structure_value(value, arg, path, trial)
            if not trial:
                return result
        errors.append(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
        return None
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
    elif tp in _SCALARS:
        if isinstance(value, _SCALARS[tp][2]) and (tp is bool or not isinstance(value, bool)):
            return float(value) if tp is float else value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            items = _fixed_items(tp) or (typing.get_args(tp) or (Any,))[:1] * len(value)
            if len(items) == len(value):
                pairs = enumerate(zip(value, items, strict=True))
                return tuple(structure_value(v, t, f"{path}[{i}]", errors) for i, (v, t) in pairs)
            errors.append(f"{path}: expected {_type_name(tp)}, got an array of {len(value)}")
            return None
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif attrs.has(tp):
        if isinstance(value, dict):
            return structure_attrs(value, tp, path, errors)
    else:
        raise TypeError(f"unsupported recipe field type {tp!r} at {path}")
    errors.append(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
    return None


def structure_attrs(
    data: dict[str, Any], cls: type, path: str, errors: list[str], *, skip: tuple[str, ...] = ()
) -> Any:
    """Build ``cls`` from ``data``, rejecting unknown keys and checking every field's type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    prefix = f"{path}." if path else ""
    kwargs: dict[str, Any] = {}
    n_errors = len(errors)
    for key, value in data.items():
        if key in skip:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(sorted(fields)) or "none"
            errors.append(f"{prefix}{key}: unknown key{hint}; known keys: {known}")
            continue
        kwargs[key] = structure_value(value, hints[key], f"{prefix}{key}", errors)
    for name, field in fields.items():
        if name not in data and field.default is attrs.NOTHING:
            errors.append(f"{prefix}{name}: required key is missing ({_type_name(hints[name])})")
    if len(errors) > n_errors:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        field, sep, rest = message.partition(": ")
        if sep and field in fields:  # validators from lejepa_core.params name their field
            errors.append(f"{prefix}{field}: {rest}")
        else:
            errors.append(f"{path or cls.__name__}: {message}")
        return None


def unstructure(obj: Any) -> Any:
    """attrs instance -> plain dict/list data (tuples become lists) for TOML/JSON."""
    if attrs.has(type(obj)):
        return {
            f.name: unstructure(getattr(obj, f.name)) for f in attrs.fields(type(obj)) if f.init
        }
    if isinstance(obj, (tuple, list)):
        return [unstructure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items()}
    return obj
