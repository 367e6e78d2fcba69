"""The lejepa trajectory file: names, version and validation (schema v1).

One HDF5 file, flat, one dataset per array, episodes concatenated along the first axis and
located by ``/episode_offsets`` (see ``docs/data.md``)::

    /observations     [T_total, *obs_shape]     chunked along steps, lossless compression
    /actions          [T_total, *action_shape]  action taken after each observation (last one of
                                                every episode padded with 0)
    /rewards          [T_total] float32         optional; reward of actions[t] (last padded 0)
    /states           [T_total, *state_shape]   optional; true physical state (pixels mode)
    /episode_offsets  [E + 1] int64             episode e is rows offsets[e]:offsets[e+1]
    /episode_seeds    [E] int64                 seed passed to reset (-1 when unknown)

Root attributes are plain strings and numbers (lists and dicts as JSON strings): nothing
pickled. ``validate`` checks everything a reader relies on and raises ``DatasetError`` with
one line naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lejepa_core.errors import DatasetError

SCHEMA_NAME = "lejepa-trajectories"
SCHEMA_VERSION = 1

OBSERVATIONS = "observations"
ACTIONS = "actions"
REWARDS = "rewards"
STATES = "states"
EPISODE_OFFSETS = "episode_offsets"
EPISODE_SEEDS = "episode_seeds"

REQUIRED_DATASETS = (OBSERVATIONS, ACTIONS, EPISODE_OFFSETS, EPISODE_SEEDS)
PER_STEP_DATASETS = (OBSERVATIONS, ACTIONS, REWARDS, STATES)

# Root attributes stored as JSON strings (decoded by ``decode_attrs``).
JSON_ATTRS = (
    "env_kwargs",
    "feature_names",
    "state_feature_names",
    "mean",
    "std",
    "min",
    "max",
    "env_metadata",
)
REQUIRED_ATTRS = ("schema", "schema_version", "env_id", "obs_dtype", "mean", "std", "min", "max")

STAT_NAMES = ("mean", "std", "min", "max")

# Rows validated per read when scanning float data for NaN/inf.
SCAN_ROWS_BYTES = 64 * 2**20


def fail(path: str | Path, problem: str) -> DatasetError:
    """The one error of this module: ``DatasetError("FILE: problem")``."""
    return DatasetError(f"{path}: {problem}")


def to_attr(value: Any) -> Any:
    """Encode one attribute value: str/int/float/bool as is, anything else as JSON."""
    if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
        return value
    return json.dumps(value)


def decode_attrs(path: str | Path, raw: h5py.AttributeManager) -> dict[str, Any]:
    """Root attributes as Python values (JSON attributes parsed, numpy scalars unwrapped)."""
    out: dict[str, Any] = {}
    for key in raw:
        try:
            value = raw[key]
        except (OSError, TypeError) as exc:  # unreadable (e.g. a pickled object)
            raise fail(path, f"attribute {key!r} cannot be read: {exc}") from None
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        if key in JSON_ATTRS and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise fail(path, f"attribute {key!r} is not valid JSON: {value[:60]!r}") from None
        out[key] = value
    return out


def per_feature_stats(obs_shape: tuple[int, ...], feature_names: tuple[str, ...]) -> bool:
    """True when statistics are lists over the last observation axis (vector observations),
    False when they are scalars over all elements (images, grids)."""
    if len(obs_shape) == 0:
        return False
    if len(obs_shape) == 1:
        return True
    return len(feature_names) > 0 and len(feature_names) == obs_shape[-1]


def validate(path: str | Path, f: h5py.File, *, scan_values: bool = True) -> dict[str, Any]:
    """Check that ``f`` is a readable lejepa trajectory file of this schema version.

    Returns the decoded root attributes. Raises ``DatasetError("FILE: what is wrong")``.
    ``scan_values`` reads all float data once to reject NaN/inf (cost: one pass over the file).
    """
    attrs = decode_attrs(path, f.attrs)
    if attrs.get("schema") != SCHEMA_NAME:
        found = attrs.get("schema")
        what = "has no 'schema' attribute" if found is None else f"has schema {found!r}"
        raise fail(path, f"not a lejepa trajectory file ({what}, expected {SCHEMA_NAME!r})")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise fail(
            path,
            f"schema_version {version!r} is not supported (this lejepa reads {SCHEMA_VERSION})",
        )
    for key in REQUIRED_ATTRS:
        if key not in attrs:
            raise fail(path, f"missing root attribute {key!r}")
    for name in REQUIRED_DATASETS:
        if name not in f:
            raise fail(path, f"missing dataset /{name}")
        if not isinstance(f[name], h5py.Dataset):
            raise fail(path, f"/{name} is not a dataset")

    obs = f[OBSERVATIONS]
    if obs.ndim < 1:
        raise fail(path, "/observations has no step axis")
    if str(obs.dtype) != attrs["obs_dtype"]:
        raise fail(
            path,
            f"/observations has dtype {obs.dtype}, attribute obs_dtype says {attrs['obs_dtype']}",
        )
    if obs.dtype.kind not in "fiub":
        raise fail(path, f"/observations has unsupported dtype {obs.dtype}")
    total = obs.shape[0]

    offsets_ds = f[EPISODE_OFFSETS]
    if offsets_ds.ndim != 1 or offsets_ds.dtype.kind not in "iu":
        raise fail(
            path,
            f"/episode_offsets must be 1-d integers, got {offsets_ds.dtype}{list(offsets_ds.shape)}",
        )
    offsets = read_all(path, offsets_ds).astype(np.int64)
    if len(offsets) < 2:
        raise fail(path, f"/episode_offsets has {len(offsets)} entries: the file holds no episode")
    if offsets[0] != 0:
        raise fail(path, f"/episode_offsets starts at {offsets[0]}, not 0")
    steps = np.diff(offsets)
    if (steps <= 0).any():
        bad = int(np.flatnonzero(steps <= 0)[0])
        raise fail(
            path,
            f"/episode_offsets not strictly increasing at episode {bad} ({offsets[bad]} -> {offsets[bad + 1]})",
        )
    if offsets[-1] != total:
        raise fail(
            path, f"/episode_offsets ends at {offsets[-1]} but /observations has {total} rows"
        )
    num_episodes = len(offsets) - 1
    if f[EPISODE_SEEDS].shape != (num_episodes,):
        raise fail(
            path,
            f"/episode_seeds has shape {list(f[EPISODE_SEEDS].shape)}, expected [{num_episodes}]",
        )
    for name in PER_STEP_DATASETS:
        if name in f:
            ds = f[name]
            if not isinstance(ds, h5py.Dataset) or ds.ndim < 1 or ds.shape[0] != total:
                shape = list(ds.shape) if isinstance(ds, h5py.Dataset) else "a group"
                raise fail(
                    path, f"/{name} has shape {shape}, expected {total} rows like /observations"
                )
            if ds.dtype.kind not in "fiub":
                raise fail(path, f"/{name} has unsupported dtype {ds.dtype}")

    per_feature = per_feature_stats(obs.shape[1:], tuple(attrs.get("feature_names") or ()))
    for key in STAT_NAMES:
        value = np.asarray(attrs[key], dtype=np.float64)
        expected = (obs.shape[-1],) if per_feature else ()
        if value.shape != expected:
            raise fail(
                path, f"statistic {key!r} has shape {list(value.shape)}, expected {list(expected)}"
            )
        if not np.isfinite(value).all():
            raise fail(path, f"statistic {key!r} is not finite: {attrs[key]}")

    if scan_values:
        for name in (OBSERVATIONS, STATES, REWARDS):
            if name in f and f[name].dtype.kind == "f":
                check_finite(path, f[name])
    return attrs


def read_all(path: str | Path, ds: h5py.Dataset) -> np.ndarray:
    """``ds[...]`` with read failures (truncated or corrupt chunks) as ``DatasetError``."""
    try:
        return ds[...]
    except (OSError, RuntimeError, ValueError) as exc:
        raise fail(path, f"cannot read {ds.name} (truncated or corrupt file?): {exc}") from None


def check_finite(path: str | Path, ds: h5py.Dataset, data: np.ndarray | None = None) -> None:
    """Raise when float dataset ``ds`` (or its already-read copy ``data``) holds NaN or inf.

    Scans in blocks of about 64 MiB so the boolean mask never costs a full copy.
    """
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    rows = max(1, SCAN_ROWS_BYTES // row_bytes)
    for start in range(0, ds.shape[0], rows):
        if data is not None:
            block = data[start : start + rows]
        else:
            try:
                block = ds[start : start + rows]
            except (OSError, RuntimeError, ValueError) as exc:
                raise fail(
                    path, f"cannot read {ds.name} (truncated or corrupt file?): {exc}"
                ) from None
        finite = np.isfinite(block)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite.reshape(len(block), -1).all(axis=1))[0])
            raise fail(path, f"{ds.name} holds non-finite values (first at row {row})")
