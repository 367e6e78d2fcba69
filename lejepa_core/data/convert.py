"""Import a Minari dataset (HDF5 storage) into a lejepa trajectory file.

Minari's on-disk layout (minari 0.5, ``minari/dataset/_storages/hdf5_storage.py``)::

    DATASET_DIR/data/metadata.json     {"data_format": "hdf5", "env_spec": "<EnvSpec JSON>",
                                        "observation_space": ..., "total_episodes": ...}
    DATASET_DIR/data/main_data.hdf5    /episode_{i}/observations [T+1, ...]
                                                    /actions [T, ...]
                                                    /rewards, /terminations, /truncations [T]
                                                    attrs: id, seed (optional), total_steps

Each Minari episode becomes one of ours: its T+1 observations, its T actions followed by a
padding row of zeros (no action follows the last observation), rewards likewise padded (in
their own float dtype: float64 stays float64), the flags of its last step as
``/episode_ends``, its seed as ``/episode_seeds``. Integer (Discrete/MultiDiscrete) actions
are stored like generated ones: in the smallest signed int that holds every action of the
dataset's action space. Dict/Tuple spaces are not supported; JPEG-encoded image observations
are decoded with Pillow when it is installed.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lejepa_core.data import schema
from lejepa_core.data.env_probe import stored_action_dtype
from lejepa_core.data.writer import TrajectoryWriter, make_parent_dir
from lejepa_core.errors import DatasetError, UserInputError
from lejepa_core.progress import progress_bar

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
FLUSH_BYTES = 32 * 2**20
_EPISODE = re.compile(r"^episode_(\d+)$")


def find_minari_files(minari_dir: Path) -> tuple[Path, Path | None]:
    """(main_data.hdf5, metadata.json or None) of a Minari dataset directory (or its data/)."""
    if not minari_dir.exists():
        raise UserInputError(f"{minari_dir}: no such directory")
    if minari_dir.is_file() and minari_dir.name.endswith((".hdf5", ".h5")):
        main, candidates = minari_dir, [minari_dir.parent / METADATA_FILE]
    else:
        main = next(
            (p for p in (minari_dir / "data" / MAIN_FILE, minari_dir / MAIN_FILE) if p.exists()),
            None,
        )
        if main is None:
            raise DatasetError(
                f"{minari_dir}: not a Minari dataset (no data/{MAIN_FILE} or {MAIN_FILE})"
            )
        candidates = [minari_dir / "data" / METADATA_FILE, minari_dir / METADATA_FILE]
    metadata = next((p for p in candidates if p.exists()), None)
    return main, metadata


def _read_metadata(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read Minari metadata: {exc}") from None


def _env_from_metadata(metadata: dict[str, Any]) -> tuple[str, dict]:
    spec = metadata.get("env_spec")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            spec = None
    if isinstance(spec, dict):
        return str(spec.get("id") or ""), dict(spec.get("kwargs") or {})
    return str(metadata.get("dataset_id") or ""), {}


def _spaces(metadata: dict[str, Any]) -> dict[str, dict]:
    """The serialised observation/action spaces of Minari's metadata (JSON data), when present."""
    out = {}
    for key in schema.SPACE_ATTRS:
        value = metadata.get(key)
        try:
            value = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "type" in value:
            out[key] = value
    return out


def _action_dtype(path: Path, space: dict | None, stored: np.dtype) -> np.dtype:
    """The one rule for actions: integer actions of a Discrete/MultiDiscrete space in the
    smallest signed int holding the space; anything else as stored."""
    if space is None or space.get("type") not in ("Discrete", "MultiDiscrete"):
        return np.dtype(stored)
    try:
        return stored_action_dtype(schema.space_from_json(space))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the action space {space}: {exc}") from None


def _end_flags(group: h5py.Group) -> int:
    """``schema.END_*`` flags of an episode's last step (0 when it has no step or no flag)."""
    flags = schema.END_CUT
    for key, bit in (
        ("terminations", schema.END_TERMINATED),
        ("truncations", schema.END_TRUNCATED),
    ):
        if key in group and isinstance(group[key], h5py.Dataset) and group[key].shape[0] > 0:
            flags |= bit * bool(group[key][-1])
    return flags


def _episode_names(path: Path, f: h5py.File) -> list[str]:
    found = sorted((int(m.group(1)), name) for name in f if (m := _EPISODE.match(name)))
    if not found:
        raise DatasetError(f"{path}: no episode_<i> groups: not a Minari HDF5 file")
    return [name for _, name in found]


def _leaf(path: Path, group: h5py.Group, key: str) -> h5py.Dataset:
    if key not in group:
        raise DatasetError(f"{path}: {group.name} has no {key!r}")
    item = group[key]
    if not isinstance(item, h5py.Dataset):
        raise DatasetError(
            f"{path}: {item.name} is a group (Dict/Tuple space): only array spaces are supported"
        )
    return item


def _read_observations(path: Path, ds: h5py.Dataset) -> np.ndarray:
    if ds.dtype.kind != "O" and h5py.check_vlen_dtype(ds.dtype) is None:
        return ds[...]
    try:  # JPEG-encoded frames (minari's default for image spaces)
        from PIL import Image
    except ImportError:
        raise DatasetError(
            f"{path}: {ds.name} holds JPEG-encoded images: install Pillow to convert it"
        ) from None
    return np.stack([np.asarray(Image.open(io.BytesIO(bytes(frame)))) for frame in ds[...]])


def convert_minari(
    minari_dir: str | Path, *, out: str | Path, compression: str = "lzf", progress: bool = True
) -> Path:
    """Write the Minari dataset at ``minari_dir`` to ``out`` (atomically); returns ``out``."""
    minari_dir, out = Path(minari_dir), Path(out)
    main, metadata_path = find_minari_files(minari_dir)
    metadata = _read_metadata(metadata_path)
    if metadata.get("data_format", "hdf5") != "hdf5":
        raise DatasetError(
            f"{minari_dir}: Minari data_format {metadata['data_format']!r} is not supported (hdf5 only)"
        )
    env_id, env_kwargs = _env_from_metadata(metadata)
    spaces = _spaces(metadata)
    try:
        f = h5py.File(main, "r")
    except OSError as exc:
        raise DatasetError(f"{main}: not a readable HDF5 file: {exc}") from None
    with f:
        names = _episode_names(main, f)
        first = f[names[0]]
        obs0 = _read_observations(main, _leaf(main, first, "observations"))
        act0 = _leaf(main, first, "actions")
        state0 = _state(first)  # infos/state (what `lejepa export` writes from /states)
        action_dtype = _action_dtype(main, spaces.get("action_space"), act0.dtype)
        reward_dtype = first["rewards"].dtype if "rewards" in first else np.dtype(np.float32)
        reward_dtype = reward_dtype if reward_dtype.kind == "f" else np.dtype(np.float64)
        attrs = {
            **spaces,
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "feature_names": [],
            "source": "minari",
            "minari_dataset_id": str(metadata.get("dataset_id", "")),
            "minari_version": str(metadata.get("minari_version", "")),
            "minari_metadata": json.dumps(
                {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}
            ),
        }
        make_parent_dir(out)
        writer = TrajectoryWriter(
            out,
            obs_shape=obs0.shape[1:],
            obs_dtype=str(obs0.dtype),
            action_shape=act0.shape[1:],
            action_dtype=str(action_dtype),
            attrs=attrs,
            compression=compression,
            reward_dtype=str(reward_dtype),
            dataset_attrs=schema.dataset_attrs({}, obs0.shape[1:], act0.shape[1:]),
            state_shape=None if state0 is None else state0.shape[1:],
            state_dtype=None if state0 is None else str(state0.dtype),
        )
        with writer, _bar(progress, len(names)) as advance:
            pending: list[tuple] = []
            pending_bytes = 0
            for name in names:
                group = f[name]
                obs = _read_observations(main, _leaf(main, group, "observations"))
                actions = _cast_actions(
                    main, name, _leaf(main, group, "actions")[...], action_dtype
                )
                rewards = _leaf(main, group, "rewards")[...].astype(reward_dtype).reshape(-1)
                steps = len(actions)
                if obs.shape != (steps + 1, *obs0.shape[1:]) or obs.dtype != obs0.dtype:
                    raise DatasetError(
                        f"{main}: /{name}/observations has shape {list(obs.shape)} {obs.dtype}, expected [{steps + 1}, *{list(obs0.shape[1:])}] {obs0.dtype}"
                    )
                if actions.shape[1:] != act0.shape[1:] or len(rewards) != steps:
                    raise DatasetError(
                        f"{main}: /{name} has {len(rewards)} rewards and actions {list(actions.shape)} for {steps + 1} observations"
                    )
                padded = np.concatenate([actions, np.zeros((1, *actions.shape[1:]), actions.dtype)])
                seed = group.attrs.get("seed", -1)
                state = None if state0 is None else _state(group)
                if state0 is not None and (state is None or state.shape[0] != steps + 1):
                    raise DatasetError(
                        f"{main}: /{name}/infos/state is missing or not one per observation"
                    )
                ends = _end_flags(group)
                pending.append((obs, padded, np.append(rewards, 0), int(seed), ends, state))
                pending_bytes += obs.nbytes
                if pending_bytes >= FLUSH_BYTES:
                    _flush(writer, pending)
                    advance(advance=len(pending))
                    pending, pending_bytes = [], 0
            _flush(writer, pending)
            advance(advance=len(pending))
    return out


def _flush(writer: TrajectoryWriter, pending: list) -> None:
    if not pending:
        return
    writer.append(
        np.concatenate([p[0] for p in pending]),
        np.concatenate([p[1] for p in pending]),
        rewards=np.concatenate([p[2] for p in pending]),
        lengths=[len(p[0]) for p in pending],
        seeds=[p[3] for p in pending],
        ends=[p[4] for p in pending],
        states=None if pending[0][5] is None else np.concatenate([p[5] for p in pending]),
    )


def _state(group: h5py.Group) -> np.ndarray | None:
    """``infos/state`` of an episode (one per observation), or None."""
    infos = group.get("infos")
    item = infos.get("state") if isinstance(infos, h5py.Group) else None
    return item[...] if isinstance(item, h5py.Dataset) and item.ndim >= 1 else None


def _cast_actions(path: Path, name: str, actions: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``actions`` in ``dtype`` (the one rule, ``_action_dtype``), refusing values that do not fit."""
    if actions.dtype == dtype or actions.size == 0:
        return actions.astype(dtype, copy=False)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and (actions.min() < info.min or actions.max() > info.max):
        raise DatasetError(
            f"{path}: /{name}/actions hold values outside the action space "
            f"({actions.min()}..{actions.max()} do not fit {dtype})"
        )
    return actions.astype(dtype)


def _bar(enabled: bool, total: int):
    """The conversion bar; yields ``update(advance=episodes)``."""
    return progress_bar(enabled, total, label="converting episodes")


__all__ = ["convert_minari", "find_minari_files"]
