"""Helpers for component parameter classes (``@attrs.frozen(kw_only=True)``).

    @attrs.frozen(kw_only=True)
    class Params:
        hidden_dim: int = param(128, "width of the hidden layers", positive)
        dropout: float = param(0.0, "dropout probability", in_range(0.0, 1.0))

A failing validator raises ``ValueError("hidden_dim: expected > 0, got -3")``; the recipe
loader prefixes the table, giving ``encoder.hidden_dim: expected > 0, got -3``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs


def param(default: Any, help: str, *validators: Callable) -> Any:
    """An attrs field with a default, a help string (shown by the CLI) and validators."""
    kw: dict[str, Any] = {"metadata": {"help": help}}
    if validators:
        kw["validator"] = list(validators)
    if isinstance(default, (list, dict, set)):
        kw["factory"] = lambda: type(default)(default)
    else:
        kw["default"] = default
    return attrs.field(**kw)


def help_of(field: attrs.Attribute) -> str:
    return field.metadata.get("help", "")


def _fail(attribute: attrs.Attribute, expected: str, value: Any) -> None:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    raise ValueError(f"{attribute.name}: expected {expected}, got {shown}")


def finite(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Not NaN or +-inf, an integer within 64 bits as TOML defines them (None allowed:
    optional fields)."""
    if isinstance(value, float) and not math.isfinite(value):
        _fail(attribute, "a finite number", value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        _fail(attribute, "a 64-bit integer", value)


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Finite value > 0 (None allowed: optional fields)."""
    finite(instance, attribute, value)
    if value is not None and not value > 0:
        _fail(attribute, "a positive value", value)


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Finite value >= 0 (None allowed)."""
    finite(instance, attribute, value)
    if value is not None and not value >= 0:
        _fail(attribute, "a value >= 0", value)


def in_range(low: float, high: float) -> Callable:
    """low <= value <= high."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not (low <= value <= high):
            _fail(attribute, f"a value in [{low}, {high}]", value)

    return check


def below_one(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """0 <= value < 1 (e.g. AdamW's betas)."""
    if value is not None and not 0.0 <= value < 1.0:
        _fail(attribute, "a value in [0, 1)", value)


def one_of(options: Sequence[Any]) -> Callable:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in options:
            _fail(attribute, "one of " + ", ".join(map(repr, options)), value)

    return check


def each(validator: Callable) -> Callable:
    """Apply ``validator`` to every item of a tuple field."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        for item in value:
            validator(instance, attribute, item)

    return check


def non_empty(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if len(value) == 0:
        _fail(attribute, "a non-empty array", value)


def file_path(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A path the operating system can take: not empty, no NUL byte, no name longer than 255
    bytes (the limit of common file systems)."""
    if value is None:
        return
    if value == "":
        _fail(attribute, "a path", value)
    if "\x00" in value:
        _fail(attribute, "a path without NUL bytes", value.replace("\x00", "\\0"))
    for part in value.replace("\\", "/").split("/"):
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > 255:
            raise ValueError(
                f"{attribute.name}: expected file and directory names of at most 255 bytes, "
                f'got a name of {size} bytes ("{part[:24]}...")'
            )


def registered_env_id(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A registered gymnasium id, never gymnasium's ``module:EnvId`` form, which imports
    ``module``: a recipe never imports code by path."""
    if value is not None and ":" in value:
        module = value.split(":", 1)[0]
        raise ValueError(
            f"{attribute.name}: {value!r} would import the module {module!r} "
            "(gymnasium's module:EnvId form); recipes never import code by path: register "
            "the env in a plugin's register_envs hook (docs/plugins.md) and give its id"
        )
