"""Per-episode identifiers and the per-frame target mask (schema v1 additions, docs/data.md).

An env names them in its metadata; the core never learns what they mean::

    metadata["episode_keys"] = ("task_id", "pair_index")   # info entries at reset, str or int
    metadata["target_key"] = "is_output"                     # bool info entry at every frame

and the generator stores them as::

    /episode_keys/<name>  [E] int64, float64 or UTF-8   the reset info's ``<name>`` per episode
    /target_allowed       [T] int8                     1 where the frame may be a prediction
                                                       target (absent: every frame may)

Files without them still read: ``read_keys`` gives ``{}`` and ``read_target_allowed`` None.
A float key named ``difficulty`` (in [0, 1]) is what a training curriculum sorts episodes by
(``curriculum.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

EPISODE_KEYS = "episode_keys"
TARGET_ALLOWED = "target_allowed"
TARGET_ALLOWED_ATTRS = {
    "description": "1 where observation t may be a prediction target (the env's target_key)",
    "axes": ["step"],
}


def declared(metadata: dict) -> tuple[tuple[str, ...], str | None]:
    """``(episode key names, target key or None)`` an env's metadata declares."""
    keys = metadata.get("episode_keys") or ()
    if isinstance(keys, str) or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"metadata['episode_keys']={keys!r}; expected a list of info key names")
    target = metadata.get("target_key")
    if target is not None and not (isinstance(target, str) and target):
        raise ValueError(f"metadata['target_key']={target!r}; expected an info key name")
    return tuple(keys), target


def key_array(name: str, values: list[Any]) -> np.ndarray:
    """``[n]`` int64 (ints), float64 (numbers, some not int) or object array of str (strings)
    of one key's values."""
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, np.int64)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values) and not any(
        isinstance(v, (bool, np.bool_)) for v in values
    ):
        return np.asarray(values, np.float64)
    if all(isinstance(v, (str, np.str_)) for v in values):
        return np.asarray([str(v) for v in values], dtype=object)
    kinds = sorted({type(v).__name__ for v in values})
    raise ValueError(
        f"episode key {name!r} has values of type {kinds}; expected all int or all str (or "
        "all numbers, stored as float)"
    )


class KeyBuffer:
    """The episode keys and target mask of a file being written, one ``add`` per block."""

    def __init__(self) -> None:
        self.columns: dict[str, list[np.ndarray]] | None = None
        self.masks: list[np.ndarray] | None = None

    def add(self, keys: dict[str, Any] | None, episodes: int, mask: Any | None, rows: int) -> None:
        """``keys``: name -> ``[episodes]`` values; ``mask``: ``[rows]`` 0/1 (every block the
        same key names, and a mask in every block or in none)."""
        names = sorted(keys or {})
        if self.columns is not None and names != sorted(self.columns):
            raise ValueError(
                f"episode keys {names} differ from earlier blocks' {sorted(self.columns)}"
            )
        if self.masks is not None and (mask is None) != (not self.masks):
            raise ValueError("target_allowed must be given for every block or for none")
        columns = {name: key_array(name, list(keys[name])) for name in names}
        for name, values in columns.items():
            if len(values) != episodes:
                raise ValueError(
                    f"episode key {name!r}: {len(values)} values for {episodes} episodes"
                )
        if mask is not None:
            mask = np.asarray(mask).reshape(-1)
            if mask.shape != (rows,) or ((mask != 0) & (mask != 1)).any():
                raise ValueError(
                    f"target_allowed: expected [{rows}] values 0 or 1, got {mask.shape}"
                )
        self.columns = self.columns if self.columns is not None else {n: [] for n in names}
        self.masks = self.masks if self.masks is not None else []
        for name, values in columns.items():
            self.columns[name].append(values)
        if mask is not None:
            self.masks.append(mask.astype(np.int8))

    def write(self, f: h5py.File) -> None:
        """Create ``/episode_keys/<name>`` and ``/target_allowed`` where given."""
        if self.masks:
            ds = f.create_dataset(TARGET_ALLOWED, data=np.concatenate(self.masks))
            for key, value in TARGET_ALLOWED_ATTRS.items():
                ds.attrs[key] = value if isinstance(value, str) else json.dumps(value)
        if not self.columns:
            return
        group = f.create_group(EPISODE_KEYS)
        for name, parts in self.columns.items():
            values = np.concatenate(parts)
            if values.dtype == object:
                group.create_dataset(name, data=values.tolist(), dtype=h5py.string_dtype("utf-8"))
            else:
                group.create_dataset(name, data=values)


def read_keys(f: h5py.File) -> dict[str, np.ndarray]:
    """name -> ``[E]`` int64, float64 or object array of str; ``{}`` for files without keys."""
    if EPISODE_KEYS not in f:
        return {}
    out = {}
    for name, ds in f[EPISODE_KEYS].items():
        if ds.dtype.kind in "OS":
            out[name] = np.asarray(ds.asstr()[...], dtype=object)
        elif ds.dtype.kind == "f":
            out[name] = ds[...].astype(np.float64)
        else:
            out[name] = ds[...].astype(np.int64)
    return out


def read_target_allowed(f: h5py.File) -> np.ndarray | None:
    """``[T]`` bool, or None when every frame may be a target."""
    return None if TARGET_ALLOWED not in f else f[TARGET_ALLOWED][...].astype(bool)


def validate(path: str | Path, f: h5py.File, num_episodes: int, total: int) -> str | None:
    """The problem with ``/episode_keys`` or ``/target_allowed`` as one phrase, or None."""
    if EPISODE_KEYS in f:
        group = f[EPISODE_KEYS]
        if not isinstance(group, h5py.Group):
            return f"/{EPISODE_KEYS} is not a group"
        for name, ds in group.items():
            if not isinstance(ds, h5py.Dataset) or ds.shape != (num_episodes,):
                shape = list(ds.shape) if isinstance(ds, h5py.Dataset) else "a group"
                return f"/{EPISODE_KEYS}/{name} has shape {shape}, expected [{num_episodes}]"
            if ds.dtype.kind not in "iufOS":
                return f"/{EPISODE_KEYS}/{name} has dtype {ds.dtype}, expected numbers or strings"
    if TARGET_ALLOWED in f:
        ds = f[TARGET_ALLOWED]
        if not isinstance(ds, h5py.Dataset) or ds.shape != (total,):
            shape = list(ds.shape) if isinstance(ds, h5py.Dataset) else "a group"
            return f"/{TARGET_ALLOWED} has shape {shape}, expected [{total}] like /observations"
        values = ds[...]
        if ds.dtype.kind not in "iub" or ((values != 0) & (values != 1)).any():
            return f"/{TARGET_ALLOWED} must hold 0 or 1 per step"
    return None
