"""Open, validate and hold a lejepa trajectory file for training.

``TrajectoryData.open(path)`` validates the file (schema, datasets, offsets, finite values)
and either loads it into memory on the training device (``observations``/``states`` are
tensors) or keeps it open for streaming reads. Either way ``data.rows(idx)`` returns rows on
``data.device``. ``WindowSampler`` (in ``sampler.py``) draws training windows from it.

Shape legend: ``T`` total steps of the file (episodes concatenated), ``E`` episodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from lejepa_core.data import episode_keys, schema
from lejepa_core.data.row_reader import RowReader
from lejepa_core.data.staging import available_memory, fits, stage  # noqa: F401 - re-exported
from lejepa_core.data.stats import episode_end_counts, observation_stats
from lejepa_core.errors import DatasetError

ON_DEVICE = ("auto", "always", "never")
STREAM_CHUNK_CACHE_BYTES = 64 * 2**20


class TrajectoryData:
    """A validated trajectory file, resident on ``device`` or streamed from disk.

    observations: [T, *obs_shape] on ``device`` when resident (standardised float32 when
        ``normalize``: with ``normalization``), else None.
    states: [T, *state_shape] raw physical state when resident: ``/states`` when the file has
        it, else the raw float observations; None when neither exists.
    episode_offsets: [E + 1] int64 on CPU; episode e is rows ``offsets[e]:offsets[e + 1]``.
    episode_keys: name -> [E] int64 or str per-episode identifiers (``{}`` when none stored).
    target_allowed: [T] bool on CPU, the frames that may be prediction targets (None: all).

    Callers read rows through ``rows(idx)`` and place their indices and generators on
    ``device``, whether the data is resident or streamed.
    """

    path: Path
    env_id: str
    env_kwargs: dict
    feature_names: tuple[str, ...]
    state_feature_names: tuple[str, ...]
    obs_shape: tuple[int, ...]
    obs_dtype: str
    state_shape: tuple[int, ...] | None
    stats: dict  # the file's statistics (every episode)
    normalization: dict | None  # the mean/std observations are standardised with, or None
    attrs: dict
    num_episodes: int
    num_steps: int
    episode_offsets: torch.Tensor
    observations: torch.Tensor | None
    states: torch.Tensor | None

    def __init__(self) -> None:  # use TrajectoryData.open
        self._file: h5py.File | None = None
        self._readers: dict[str, RowReader] = {}

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        on_device: str = "auto",
        normalize: bool = False,
        stats: Mapping | Callable[[TrajectoryData], Mapping] | None = None,
    ) -> TrajectoryData:
        """Validate ``path`` and load it (``on_device`` "always"/"auto") or stream it ("never").

        normalize: standardise float observations with ``stats``: a mapping with ``mean`` and
        ``std`` (e.g. a run's stored statistics), or a function of the opened, still raw data
        that returns one (training: ``lambda data: data.episode_stats(train_episodes)``);
        without ``stats``, the file's own statistics (every episode, validation included).

        Raises ``DatasetError("FILE: what is wrong")`` for a missing, truncated, corrupt or
        foreign file, another schema version, inconsistent shapes or non-finite values.
        """
        if on_device not in ON_DEVICE:
            raise ValueError(f"on_device must be one of {ON_DEVICE}, got {on_device!r}")
        path = Path(path)
        if not path.exists():
            raise schema.fail(path, "no such file")
        if not path.is_file():
            raise schema.fail(path, "not a file")
        try:
            f = h5py.File(path, "r", rdcc_nbytes=STREAM_CHUNK_CACHE_BYTES)
        except OSError as exc:
            reason = str(exc).split("(")[0].strip().rstrip(",") or type(exc).__name__
            raise schema.fail(
                path, f"not a readable HDF5 file (truncated or corrupt?): {reason}"
            ) from None
        self = cls()
        self._file = f
        try:
            self._load(path, torch.device(device), on_device, normalize)
            if self.normalize:
                found = stats(self) if callable(stats) else stats
                self._standardize(self.stats if found is None else found)
        except BaseException:
            self.close()
            raise
        return self

    def _load(self, path: Path, device: torch.device, on_device: str, normalize: bool) -> None:
        f = self._file
        resident_guess = on_device == "always"
        attrs = schema.validate(path, f, scan_values=False)
        obs_ds = f[schema.OBSERVATIONS]
        self.path = path
        self.attrs = attrs
        self.env_id = str(attrs.get("env_id", ""))
        self.env_kwargs = dict(attrs.get("env_kwargs") or {})
        self.feature_names = tuple(attrs.get("feature_names") or ())
        self.obs_shape = tuple(obs_ds.shape[1:])
        self.obs_dtype = str(obs_ds.dtype)
        self.stats = {key: attrs[key] for key in schema.STAT_NAMES}
        self.normalization = None
        self.num_steps = int(obs_ds.shape[0])
        offsets = schema.read_all(path, f[schema.EPISODE_OFFSETS]).astype(np.int64)
        self.episode_offsets = torch.from_numpy(offsets)
        self.num_episodes = len(offsets) - 1
        self.episode_keys = episode_keys.read_keys(f)
        allowed = episode_keys.read_target_allowed(f)
        self.target_allowed = None if allowed is None else torch.from_numpy(allowed)
        self.normalize = bool(normalize) and obs_ds.dtype.kind == "f"
        self._has_states = schema.STATES in f
        float_obs = obs_ds.dtype.kind == "f"
        if self._has_states:
            self.state_shape = tuple(f[schema.STATES].shape[1:])
            self.state_feature_names = tuple(attrs.get("state_feature_names") or ())
        elif float_obs:
            self.state_shape = self.obs_shape
            self.state_feature_names = tuple(attrs.get("state_feature_names") or self.feature_names)
        else:
            self.state_shape = None
            self.state_feature_names = ()

        need = obs_ds.nbytes + (f[schema.STATES].nbytes if self._has_states else 0)
        if self.normalize and not self._has_states:
            need += obs_ds.nbytes  # raw copy kept as `states`
        resident = resident_guess or (on_device == "auto" and fits(need, device))
        self.resident = resident
        self.observations = None
        self.states = None
        if resident:
            raw_t = stage(path, obs_ds, device)
            self.observations = raw_t  # standardised by `open` once the statistics are known
            if self._has_states:
                self.states = stage(path, f[schema.STATES], device)
            elif float_obs:
                self.states = raw_t
            for name in (schema.REWARDS,):
                if name in f and f[name].dtype.kind == "f":
                    schema.check_finite(path, f[name])
        else:
            for name in (schema.OBSERVATIONS, schema.STATES, schema.REWARDS):
                if name in f and f[name].dtype.kind == "f":
                    schema.check_finite(path, f[name])

    def _standardize(self, stats: Mapping) -> None:
        """Standardise observations with ``stats["mean"]``/``["std"]`` from now on (lists: per
        last axis; one value: all elements; a zero std counts as 1); resident ones in place."""
        mean = np.asarray(stats["mean"], np.float32)
        std = np.asarray(stats["std"], np.float32)
        try:
            np.broadcast_shapes(mean.shape, std.shape, self.obs_shape)
        except ValueError:
            raise DatasetError(
                f"{self.path}: normalisation statistics of shape {list(mean.shape)} do not fit "
                f"observations of shape {list(self.obs_shape)}"
            ) from None
        self.normalization = {key: np.asarray(stats[key]).tolist() for key in ("mean", "std")}
        self._mean = torch.from_numpy(np.array(mean))
        self._std = torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32))
        if self.observations is not None:
            self.observations = self._normalize(self.observations)

    def _normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """(obs - mean) / std as float32 (see ``_standardize``)."""
        return (obs.to(torch.float32) - self._mean.to(obs.device)) / self._std.to(obs.device)

    def episode_stats(self, episodes: torch.Tensor | np.ndarray) -> dict[str, Any]:
        """mean/std/min/max of the raw observations of ``episodes`` ([n] int), in the layout of
        ``stats`` (``lejepa_core.data.stats``: from the tensor when resident, else the file)."""
        return observation_stats(self, episodes)

    def raw_observations(self, rows: np.ndarray) -> np.ndarray:
        """Raw observations of ``rows`` ([R] int, sorted, unique) as a CPU array: gathered from
        the resident tensor while it is still raw, else read from the file."""
        if self.observations is not None and self.normalization is None:
            index = torch.as_tensor(rows, dtype=torch.int64, device=self.observations.device)
            return self.observations[index].cpu().numpy()
        self._open_readers()
        return self._readers[schema.OBSERVATIONS].read(np.asarray(rows, np.int64))

    # -- rows -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where ``rows`` returns its tensors: the loading device when resident, else CPU."""
        return self.observations.device if self.observations is not None else torch.device("cpu")

    def rows(self, idx: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows ``idx`` ([n] int, any order, repeats allowed) on ``device``, resident or streamed.

        Returns (observations [n, *obs_shape] normalised like ``observations``, raw states
        [n, *state_shape] or None). Streamed data is read once per sorted unique row.
        """
        if self.observations is not None:
            idx = torch.as_tensor(idx, dtype=torch.int64, device=self.device).reshape(-1)
            states = None if self.states is None else self.states[idx]
            return self.observations[idx], states
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu().numpy()
        unique, inverse = np.unique(idx, return_inverse=True)
        obs, states = self.read_rows(unique)
        inverse = torch.from_numpy(inverse.reshape(-1))
        return obs[inverse], None if states is None else states[inverse]

    def read_rows(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Read ``rows`` ([R] int, sorted, unique) from disk (see ``RowReader``); ``rows(idx)``
        is the mode-independent way in.

        Returns (observations [R, *obs_shape] normalised like ``observations``, raw states
        [R, *state_shape] or None), on CPU.
        """
        self._open_readers()
        raw = torch.from_numpy(self._readers[schema.OBSERVATIONS].read(rows))
        obs = self._normalize(raw) if self.normalize else raw
        if self._has_states:
            states = torch.from_numpy(self._readers[schema.STATES].read(rows))
        elif self.state_shape is not None:
            states = raw
        else:
            states = None
        return obs, states

    def _open_readers(self) -> None:
        if self._file is None:
            raise DatasetError(f"{self.path}: the file is closed")
        if not self._readers:
            for name in (schema.OBSERVATIONS, schema.STATES):
                if name in self._file:
                    self._readers[name] = RowReader(self.path, self._file[name])

    # -- splits and bookkeeping -------------------------------------------------------------
    def check_source(self, env_id: str, env_kwargs: dict, *, where: str = "data") -> None:
        """Raise ``DatasetError`` unless the file was generated from ``env_id`` with
        ``env_kwargs`` (so a recipe change never trains silently on an old file)."""
        wanted = json.loads(json.dumps(env_kwargs))  # TOML/tuple values as the file stores them
        if self.env_id != env_id or self.env_kwargs != wanted:
            raise DatasetError(
                f"{self.path}: generated from {self.env_id} {json.dumps(self.env_kwargs)}, but "
                f"{where}.env_id/env_kwargs ask for {env_id} {json.dumps(wanted)}; delete the file "
                f"to regenerate it, or set {where}.path to another file"
            )

    def episode_lengths(self) -> torch.Tensor:
        """[E] int64 number of steps of each episode."""
        return self.episode_offsets[1:] - self.episode_offsets[:-1]

    def episode_split(self, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Split whole episodes into (train, val) index tensors, [E_train] and [E_val] int64.

        Reproducible for the same (num_episodes, val_fraction, seed); sorted; disjoint. At
        least one validation episode when ``val_fraction > 0`` and E >= 2, and at least one
        training episode always.
        """
        return episode_split(self.num_episodes, val_fraction, seed)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def __enter__(self) -> TrajectoryData:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "resident" if getattr(self, "resident", False) else "streaming"
        return (
            f"TrajectoryData({str(getattr(self, 'path', '?'))!r}, env={getattr(self, 'env_id', '?')!r}, "
            f"episodes={getattr(self, 'num_episodes', '?')}, steps={getattr(self, 'num_steps', '?')}, {mode})"
        )


def episode_split(
    num_episodes: int, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """See ``TrajectoryData.episode_split``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, num_episodes - 1)
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(num_episodes, generator=generator)
    val = order[:n_val].sort().values
    train = order[n_val:].sort().values
    return train, val


def inspect_dataset(
    path: str | Path, *, val_fraction: float = 0.1, split_seed: int = 0
) -> dict[str, Any]:
    """Everything ``lejepa inspect`` prints, as plain data (validates the file)."""
    with TrajectoryData.open(path, on_device="never") as data:
        f = data._file
        datasets = {
            name: {
                "shape": list(f[name].shape),
                "dtype": str(f[name].dtype),
                "compression": f[name].compression,
                "chunks": list(f[name].chunks or []),
            }
            for name in f
            if isinstance(f[name], h5py.Dataset)
        }
        lengths = data.episode_lengths()
        train, val = data.episode_split(val_fraction, split_seed)
        return {
            "path": str(data.path),
            "env_id": data.env_id,
            "env_kwargs": data.env_kwargs,
            "episodes": data.num_episodes,
            "total_steps": data.num_steps,
            "episode_length": {
                "min": int(lengths.min()),
                "max": int(lengths.max()),
                "mean": float(lengths.double().mean()),
            },
            "obs_shape": list(data.obs_shape),
            "obs_dtype": data.obs_dtype,
            "state_shape": None if data.state_shape is None else list(data.state_shape),
            "feature_names": list(data.feature_names),
            "state_feature_names": list(data.state_feature_names),
            "stats": data.stats,
            "datasets": datasets,
            "split": {
                "val_fraction": val_fraction,
                "seed": split_seed,
                "train_episodes": len(train),
                "val_episodes": len(val),
                "train_steps": int(lengths[train].sum()),
                "val_steps": int(lengths[val].sum()),
            },
            "attrs": data.attrs,
            "file_bytes": data.path.stat().st_size,
            "episode_ends": episode_end_counts(f),
            "episode_keys": {name: len(set(v.tolist())) for name, v in data.episode_keys.items()},
        }
