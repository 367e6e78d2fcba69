"""Helpers for component parameter classes (``@attrs.frozen(kw_only=True)``).

    @attrs.frozen(kw_only=True)
    class Params:
        hidden_dim: int = param(128, "width of the hidden layers", positive)
        dropout: float = param(0.0, "dropout probability", in_range(0.0, 1.0))

A failing validator raises ``ValueError("hidden_dim: expected > 0, got -3")``; the recipe
loader prefixes the table, giving ``encoder.hidden_dim: expected > 0, got -3``.
"""

from __future__ import annotations

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


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Value > 0 (None allowed: optional fields)."""
    if value is not None and not value > 0:
        _fail(attribute, "a positive value", value)


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not value >= 0:
        _fail(attribute, "a value >= 0", value)


def in_range(low: float, high: float) -> Callable:
    """low <= value <= high."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not (low <= value <= high):
            _fail(attribute, f"a value in [{low}, {high}]", value)

    return check


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
