"""What lejepa knows of an environment: read from its ``metadata``, never from its name.

An environment (built-in or a third party's) publishes these optional keys in
``env.metadata``; the generator stores the JSON-serialisable metadata in the dataset file
(attribute ``env_metadata``), so evaluation and the report read them from the file without
making the env. docs/envs.md#metadata-lejepa-reads is the reference.

| key | type | used for |
| --- | --- | --- |
| ``feature_names`` | list[str] | names of the observation's last axis |
| ``feature_groups`` | dict[str, list[str]] | probe R^2 and eval errors per group |
| ``state_feature_names`` / ``state_feature_groups`` | as above | the same for ``/states`` |
| ``dt`` | float | the step length (constant-velocity baseline) |
| ``derivatives`` | dict[str, str] | feature -> the feature that is its time derivative |
| ``box`` | [w, h] | the extent of 2-D positions (pictures) |
| ``positions`` | [str, str] | the two features drawn as a 2-D position (pictures) |
| ``cell_values`` | int | integer-grid observations take values ``0 .. cell_values-1`` |
| ``pad_value`` | int | the grid value that means "outside the grid" |
| ``palette`` | list[[r, g, b]] | colour of each cell value (pictures) |
| ``background_value`` | int | the grid value of empty cells inside the grid (default 0) |
| ``grid_rules`` | str | name of the env's grid rules (``register_grid_rules``; grid evaluation) |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value or ()))


def _groups(value: Any) -> dict[str, tuple[str, ...]]:
    return {str(group): _names(names) for group, names in dict(value or {}).items()}


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@attrs.frozen(kw_only=True)
class EnvInfo:
    """The env metadata lejepa reads (see the module docstring); every field may be empty."""

    feature_names: tuple[str, ...] = attrs.field(default=(), converter=_names)
    feature_groups: dict[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_groups)
    state_feature_names: tuple[str, ...] = attrs.field(default=(), converter=_names)
    state_feature_groups: dict[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_groups)
    dt: float | None = attrs.field(default=None, converter=_optional_float)
    derivatives: dict[str, str] = attrs.field(
        factory=dict, converter=lambda d: {str(k): str(v) for k, v in dict(d or {}).items()}
    )
    box: tuple[float, float] | None = attrs.field(
        default=None, converter=lambda b: None if b is None else (float(b[0]), float(b[1]))
    )
    positions: tuple[str, ...] = attrs.field(default=(), converter=_names)
    cell_values: int | None = attrs.field(default=None, converter=_optional_int)
    pad_value: int | None = attrs.field(default=None, converter=_optional_int)
    palette: tuple[tuple[int, int, int], ...] = attrs.field(
        default=(), converter=lambda p: tuple(tuple(int(c) for c in rgb) for rgb in (p or ()))
    )
    background_value: int | None = attrs.field(default=None, converter=_optional_int)
    grid_rules: str | None = attrs.field(
        default=None, converter=lambda v: None if v is None else str(v)
    )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> EnvInfo:
        """The fields above from an env's ``metadata`` (unknown keys ignored)."""
        metadata = dict(metadata or {})
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in metadata.items() if k in names and v is not None})

    def state_names(self) -> tuple[str, ...]:
        """Names of the state probes decode: ``state_feature_names``, else ``feature_names``."""
        return self.state_feature_names or self.feature_names

    def state_groups(self) -> dict[str, tuple[str, ...]]:
        """Feature groups of the probed state (``state_feature_groups``, else
        ``feature_groups`` when the state is the observation)."""
        if self.state_feature_names:
            return dict(self.state_feature_groups)
        return dict(self.feature_groups)

    def group_indices(self, names: tuple[str, ...] | None = None) -> dict[str, list[int]]:
        """Group -> indices into the last axis of the probed state; ``{"all": [...]}`` when the
        env names no groups. ``names`` overrides :meth:`state_names` (e.g. ``f0..fN``)."""
        names = tuple(names if names is not None else self.state_names())
        index = {n: i for i, n in enumerate(names)}
        groups = {
            g: [index[n] for n in members if n in index]
            for g, members in self.state_groups().items()
        }
        groups = {g: idx for g, idx in groups.items() if idx}
        return groups or {"all": list(range(len(names)))}

    def derivative_pairs(self, names: tuple[str, ...] | None = None) -> list[tuple[int, int]]:
        """(feature index, its derivative's index) pairs in the probed state's last axis."""
        names = tuple(names if names is not None else self.state_names())
        index = {n: i for i, n in enumerate(names)}
        return [
            (index[f], index[d]) for f, d in self.derivatives.items() if f in index and d in index
        ]

    @property
    def is_grid(self) -> bool:
        """Integer-grid observations with a known number of cell values."""
        return self.cell_values is not None

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready dict (for run directories and checkpoints)."""
        out = attrs.asdict(self, recurse=False)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}
