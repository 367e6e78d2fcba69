"""The lejepa trajectory file: names, version and validation (schema v1).

One HDF5 file, flat, one dataset per array, episodes concatenated along the first axis and
located by ``/episode_offsets`` (see ``docs/data.md``)::

    /observations     [T_total, *obs_shape]     chunked along steps, lossless compression
    /actions          [T_total, *action_shape]  action taken after each observation (last one of
                                                every episode padded with 0)
    /rewards          [T_total] float           optional; reward of actions[t] (last padded 0)
    /states           [T_total, *state_shape]   optional; true physical state (pixels mode)
    /episode_offsets  [E + 1] int64             episode e is rows offsets[e]:offsets[e+1]
    /episode_seeds    [E] int64                 seed of the reset that started the episode
                                                (-1 when unknown)
    /episode_ends     [E] int8                  optional; how the episode ended: bit 0
                                                terminated, bit 1 truncated, 0 = cut at
                                                ``steps`` (``END_*`` below)
    /episode_keys/*   [E] int64, float64 or str optional; per-episode keys (identifiers,
                                                a float ``difficulty``), and
    /target_allowed   [T] int8                  optional; frames that may be targets
                                                (``episode_keys.py``)

Root attributes are plain strings and numbers (lists and dicts as JSON strings): nothing
pickled. ``validate`` checks everything a reader relies on and raises ``DatasetError`` with
one line naming the file and the problem. Files from before ``/episode_ends``, JSON spaces and
list statistics still read (they are version 1 too: nothing in them is misread).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lejepa_core.data import episode_keys
from lejepa_core.errors import DatasetError

SCHEMA_NAME = "lejepa-trajectories"
SCHEMA_VERSION = 1

OBSERVATIONS = "observations"
ACTIONS = "actions"
REWARDS = "rewards"
STATES = "states"
EPISODE_OFFSETS = "episode_offsets"
EPISODE_SEEDS = "episode_seeds"
EPISODE_ENDS = "episode_ends"

# /episode_ends: bit flags of the env's last step (both set when it reported both); 0 when
# neither: the episode was cut at the generator's ``steps`` (or a Minari collector stopped).
END_CUT = 0
END_TERMINATED = 1
END_TRUNCATED = 2

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
# Spaces as JSON in Minari's form (``space_to_json``); files written before hold str(space),
# which is kept as a string.
SPACE_ATTRS = ("action_space", "observation_space")
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
        elif key in SPACE_ATTRS and isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass  # str(space) of an older file
        out[key] = value
    return out


def stats_to_attrs(stats: dict[str, Any]) -> dict[str, list[float]]:
    """Statistics as the file stores them: always a list (over the last axis, or one value
    over all elements for images and grids); ``stats_from_attrs`` is the inverse."""
    return {key: np.atleast_1d(np.asarray(stats[key], np.float64)).tolist() for key in STAT_NAMES}


def stats_from_attrs(attrs: dict[str, Any], per_feature: bool) -> dict[str, Any]:
    """Statistics in memory: a list per feature (``per_feature``), else one float; files store
    lists (``stats_to_attrs``), files written before stored a float for images and grids."""
    out = {}
    for key in STAT_NAMES:
        value = np.asarray(attrs[key], np.float64)
        out[key] = value.reshape(-1).tolist() if per_feature else float(value.reshape(-1)[0])
    return out


def space_to_json(space: Any) -> dict[str, Any]:
    """A Box/Discrete/MultiDiscrete/MultiBinary space as JSON data, in the form Minari's
    ``serialize_space`` writes (so ``minari`` reads it back): ``{"type": "Box", "dtype":
    "float32", "shape": [...], "low": [...], "high": [...]}``, ``{"type": "Discrete",
    "dtype": "int64", "start": 0, "n": 3}``, ..."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "dtype": str(space.dtype),
            "shape": list(space.shape),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "dtype": str(space.dtype),
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": n if isinstance(n, int) else list(n)}
    raise ValueError(f"no JSON form for {space} (Box, Discrete, MultiDiscrete, MultiBinary only)")


def space_from_json(data: dict[str, Any]) -> Any:
    """The gymnasium space of ``space_to_json``'s data."""
    from gymnasium import spaces

    kind = data.get("type")
    if kind == "Box":
        low = np.asarray(data["low"], dtype=data["dtype"])
        high = np.asarray(data["high"], dtype=data["dtype"])
        return spaces.Box(low, high, shape=tuple(data["shape"]), dtype=data["dtype"])
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"], dtype=data["dtype"], start=data.get("start"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    raise ValueError(f"unknown space type {kind!r}")


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

    Returns the decoded root attributes (statistics as ``stats_from_attrs`` gives them).
    Raises ``DatasetError("FILE: what is wrong")``. ``scan_values`` reads all float data once to reject NaN/inf (cost: one pass over the file).
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
    if EPISODE_ENDS in f:
        ends = f[EPISODE_ENDS]
        if not isinstance(ends, h5py.Dataset) or ends.shape != (num_episodes,):
            shape = list(ends.shape) if isinstance(ends, h5py.Dataset) else "a group"
            raise fail(path, f"/episode_ends has shape {shape}, expected [{num_episodes}]")
        values = read_all(path, ends)
        if ends.dtype.kind not in "iu" or ((values < 0) | (values > 3)).any():
            raise fail(
                path, "/episode_ends must hold integers 0..3 (bit 0 terminated, bit 1 truncated)"
            )
    problem = episode_keys.validate(path, f, num_episodes, total)
    if problem:
        raise fail(path, problem)
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
        expected = [(obs.shape[-1],)] if per_feature else [(1,), ()]  # () in older files
        if value.shape not in expected:
            raise fail(
                path,
                f"statistic {key!r} has shape {list(value.shape)}, expected {list(expected[0])}",
            )
        if not np.isfinite(value).all():
            raise fail(path, f"statistic {key!r} is not finite: {attrs[key]}")
    attrs.update(stats_from_attrs(attrs, per_feature))

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


def dataset_attrs(
    metadata: dict[str, Any],
    obs_shape: tuple[int, ...],
    action_shape: tuple[int, ...],
    state_shape: tuple[int, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """Attributes of the per-step datasets: ``description``; ``axes`` (``"step"`` first,
    then the env's ``observation_axes`` when it publishes them, else ``axis_1 ..`` with the
    named last axis called ``feature``); ``units`` (feature -> unit, the env's
    ``feature_units``) where known."""
    names = tuple(metadata.get("feature_names") or ())
    per_feature = per_feature_stats(obs_shape, names) and len(obs_shape) > 0

    def axes(shape: tuple[int, ...], named: bool, given: Any = None) -> list[str]:
        if given is not None and len(given) == len(shape):
            return ["step", *(str(a) for a in given)]
        out = [f"axis_{i + 1}" for i in range(len(shape))]
        if named and out:
            out[-1] = "feature"
        return ["step", *out]

    units = {str(k): str(v) for k, v in dict(metadata.get("feature_units") or {}).items()}
    out: dict[str, dict[str, Any]] = {
        OBSERVATIONS: {
            "description": "observation t of each episode; episodes back to back (/episode_offsets)",
            "axes": axes(obs_shape, per_feature, metadata.get("observation_axes")),
        },
        ACTIONS: {
            "description": "action taken after observation t; the last row of each episode is 0 (padding)",
            "axes": axes(action_shape, False),
        },
        REWARDS: {
            "description": "reward of the action after observation t; the last row of each episode is 0",
            "axes": ["step"],
        },
    }
    if units and names:
        out[OBSERVATIONS]["units"] = {n: units[n] for n in names if n in units}
    if state_shape is not None:
        state_names = tuple(metadata.get("state_feature_names") or ())
        out[STATES] = {
            "description": "true physical state after observation t (not observed)",
            "axes": axes(state_shape, bool(state_names), metadata.get("state_axes")),
        }
        if units and state_names:
            out[STATES]["units"] = {n: units[n] for n in state_names if n in units}
    return out
