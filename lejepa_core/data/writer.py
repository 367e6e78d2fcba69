"""Atomic writer of lejepa trajectory files (schema v1, see ``schema.py``).

Rows are appended a block of whole episodes at a time into a temporary file next to the
destination; ``commit`` writes the offsets, seeds and statistics, fsyncs and ``os.replace``s
it over the destination. Any failure (or ``abort``) removes the temporary file, so an
interrupted run leaves no half-written file and never damages an existing one. A failed
write (a full disk) is a ``StorageError``; the temporary file ``.<name>.<pid>.<random>.tmp``
is removed, and one left by a killed process is removed by the next writer of the same file
(``lejepa_core.files``). A destination that is a symbolic link is written through: the file it
points to is replaced and the link kept; a link that does not resolve is an error::

    with TrajectoryWriter(out, obs_shape=(3, 4), obs_dtype="float32", ...) as writer:
        writer.append(observations, actions, lengths=lengths, seeds=seeds)
    # committed here; on an exception nothing changed on disk
"""

from __future__ import annotations

import datetime
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lejepa_core import __version__
from lejepa_core.data import schema
from lejepa_core.data.episode_keys import KeyBuffer
from lejepa_core.errors import StorageError, UserInputError
from lejepa_core.files import destination, remove_stale_temp_files, temp_prefix, write_failure

# Target uncompressed size of one chunk: small enough that streaming reads of scattered
# windows decompress little, large enough to keep per-chunk overhead low when writing.
CHUNK_BYTES = 64 * 2**10
STATS_BLOCK_VALUES = 2**20  # values per statistics pass
COMPRESSIONS = ("auto", "lzf", "gzip", "none")
RAW_FLOAT_ROW = 256  # "auto": float rows up to this many values are stored raw


class RunningStats:
    """Mean/std/min/max over the last axis (``per_feature``) or over all elements.

    Blocks are merged with Chan et al.'s parallel update in float64, so the result does not
    depend on how rows were split into blocks (up to rounding).
    """

    def __init__(self, per_feature: bool, num_features: int):
        shape = (num_features,) if per_feature else ()
        self.per_feature = per_feature
        self.count = 0
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)
        self.min = np.full(shape, np.inf)
        self.max = np.full(shape, -np.inf)

    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x`` ([..., F] per feature, any shape otherwise).

        Works through ~1M values at a time (cache-sized temporaries, no full-size copies).
        """
        flat = x.reshape(-1, x.shape[-1]) if self.per_feature else x.reshape(-1, 1)
        step = max(1, STATS_BLOCK_VALUES // flat.shape[1])
        for start in range(0, flat.shape[0], step):
            self.merge(self._block(flat[start : start + step]))

    def _block(self, rows: np.ndarray) -> RunningStats:
        columns = np.ascontiguousarray(rows.T)  # [F, n]: reductions along contiguous rows are fast
        mean = columns.mean(axis=1, dtype=np.float64)
        work = columns.dtype if columns.dtype.kind == "f" else np.float64
        centred = columns - mean.astype(work)[:, None]
        residual = centred.mean(axis=1, dtype=np.float64)  # rounding of `mean` in float32
        np.square(centred, out=centred)
        m2 = centred.sum(axis=1, dtype=np.float64) - rows.shape[0] * np.square(residual)
        block = RunningStats(self.per_feature, len(mean))
        block.count, block.mean, block.m2 = rows.shape[0], mean, m2
        block.min = columns.min(axis=1).astype(np.float64)
        block.max = columns.max(axis=1).astype(np.float64)
        if not self.per_feature:
            block.mean, block.m2, block.min, block.max = (
                v[0] for v in (mean, m2, block.min, block.max)
            )
        return block

    def merge(self, other: RunningStats) -> None:
        """Chan et al.'s parallel combination of two sets of statistics."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / total)
        self.count = total
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    def finite(self) -> bool:
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.m2).all())

    def as_attrs(self) -> dict[str, Any]:
        std = np.sqrt(self.m2 / max(self.count, 1))
        out = {}
        for key, value in (("mean", self.mean), ("std", std), ("min", self.min), ("max", self.max)):
            out[key] = value.tolist() if self.per_feature else float(value)
        return out


def _compression_kwargs(
    compression: str | None, dtype: np.dtype, row_size: int = 1
) -> dict[str, Any]:
    """h5py filter arguments of one dataset (``row_size``: values per step).

    ``"auto"`` (default): float arrays of at most ``RAW_FLOAT_ROW`` values per step (physical
    state vectors) are stored raw: they compress only to ~0.75 of their size with lzf, at a
    cost that halves generation throughput and slows streaming reads ~10x
    (``docs/benchmarks.md``); everything else (images, grids, actions, rewards) is lzf.
    ``"lzf"``, ``"gzip"`` (level 1 + byte shuffle), ``"gzip-N"``, ``"none"``: the same for
    every dataset.
    """
    if compression == "auto":
        vector = np.dtype(dtype).kind == "f" and 1 < row_size <= RAW_FLOAT_ROW
        compression = "none" if vector else "lzf"
    if compression in (None, "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression.startswith("gzip"):
        level = int(compression.partition("-")[2] or 1)
        return {"compression": "gzip", "compression_opts": level, "shuffle": True}
    raise ValueError(f"unknown compression {compression!r}; choose one of {COMPRESSIONS} or gzip-N")


class TrajectoryWriter:
    """Write a trajectory file atomically.

    obs_shape, obs_dtype: one observation.  action_shape, action_dtype: one action.
    state_shape, state_dtype: one true state (pixels mode), or None for no ``/states``.
    rewards: whether to write ``/rewards``; reward_dtype: its float dtype (the source's).
    attrs: extra root attributes (``env_id``, ``env_kwargs``, ``feature_names``, ...): plain
        values as is, lists and dicts as JSON.
    dataset_attrs: attributes of the per-step datasets, e.g. ``{"observations": {"axes":
        [...]}}`` (lists and dicts as JSON).
    ``/episode_ends`` is written when every ``append`` passed ``ends``.
    ``/episode_keys`` and ``/target_allowed``: from ``append``'s arguments (``episode_keys.py``).
    """

    def __init__(
        self,
        out: str | Path,
        *,
        obs_shape: Sequence[int],
        obs_dtype: str,
        action_shape: Sequence[int],
        action_dtype: str,
        state_shape: Sequence[int] | None = None,
        state_dtype: str | None = None,
        rewards: bool = True,
        attrs: dict[str, Any] | None = None,
        compression: str | None = "auto",
        reward_dtype: str = "float32",
        dataset_attrs: dict[str, dict[str, Any]] | None = None,
    ):
        self.out = destination(out)
        self.attrs = dict(attrs or {})
        self.obs_shape = tuple(int(d) for d in obs_shape)
        feature_names = tuple(self.attrs.get("feature_names") or ())
        per_feature = schema.per_feature_stats(self.obs_shape, feature_names)
        self.stats = RunningStats(per_feature, self.obs_shape[-1] if self.obs_shape else 1)
        self._lengths: list[np.ndarray] = []
        self._seeds: list[np.ndarray] = []
        self._ends: list[np.ndarray | None] = []
        self._keys = KeyBuffer()
        self._rows = 0
        self._done = False
        if not self.out.parent.is_dir():
            raise schema.fail(self.out, f"directory {self.out.parent} does not exist")
        remove_stale_temp_files(self.out.parent, self.out.name)  # left by a killed writer
        self.tmp = self.out.parent / f"{temp_prefix(self.out.name)}{secrets.token_hex(4)}.tmp"
        _compression_kwargs(compression, np.dtype("float32"))  # unknown names fail early
        self.compression = compression or "none"
        self._file: h5py.File | None = None
        try:
            self._file = h5py.File(self.tmp, "w")
            specs = [
                (schema.OBSERVATIONS, self.obs_shape, obs_dtype),
                (schema.ACTIONS, tuple(action_shape), action_dtype),
            ]
            if rewards:
                specs.append((schema.REWARDS, (), reward_dtype))
            if state_shape is not None:
                specs.append((schema.STATES, tuple(state_shape), state_dtype or "float32"))
            self._datasets = {}
            for name, shape, dtype in specs:
                row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
                chunk_rows = max(1, CHUNK_BYTES // row_bytes)
                self._datasets[name] = self._file.create_dataset(
                    name,
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=np.dtype(dtype),
                    chunks=(chunk_rows, *shape),
                    **_compression_kwargs(
                        compression, np.dtype(dtype), int(np.prod(shape, dtype=np.int64))
                    ),
                )
                for key, value in (dataset_attrs or {}).get(name, {}).items():
                    self._datasets[name].attrs[key] = schema.to_attr(value)
        except BaseException as exc:
            failure = write_failure(self.out, exc) if isinstance(exc, OSError) else None
            self.abort()
            if failure:
                raise StorageError(failure) from None
            raise

    # -- writing ---------------------------------------------------------------------------
    def append(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        *,
        lengths: Sequence[int] | np.ndarray,
        seeds: Sequence[int] | np.ndarray,
        rewards: np.ndarray | None = None,
        states: np.ndarray | None = None,
        stats: RunningStats | None = None,
        ends: Sequence[int] | np.ndarray | None = None,
        episode_keys: dict[str, Any] | None = None,
        target_allowed: np.ndarray | None = None,
    ) -> None:
        """Append whole episodes: arrays ``[sum(lengths), ...]``, episodes concatenated.

        ``stats``: the statistics of ``observations`` when already computed (in a worker).
        ``ends``: one ``schema.END_*`` flag set per episode (how it ended), when known.
        ``episode_keys``: name -> [episodes] ints or strs; ``target_allowed``: [rows] 0/1.
        """
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        n = int(lengths.sum())
        if len(seeds) != len(lengths) or (lengths <= 0).any():
            raise ValueError(
                f"need one seed and a positive length per episode, got {len(seeds)} seeds, lengths {lengths[:8]}"
            )
        if ends is not None and len(ends) != len(lengths):
            raise ValueError(f"need one end flag per episode, got {len(ends)} for {len(lengths)}")
        given = {schema.OBSERVATIONS: observations, schema.ACTIONS: actions}
        if schema.REWARDS in self._datasets:
            given[schema.REWARDS] = rewards if rewards is not None else np.zeros(n, np.float32)
        if schema.STATES in self._datasets:
            if states is None:
                raise ValueError("this file has /states: pass states")
            given[schema.STATES] = states
        for name, array in given.items():
            ds = self._datasets[name]
            if array.shape != (n, *ds.shape[1:]):
                raise ValueError(
                    f"{name}: expected shape {[n, *ds.shape[1:]]}, got {list(array.shape)}"
                )
        if stats is None:
            stats = RunningStats(self.stats.per_feature, len(np.atleast_1d(self.stats.mean)))
            stats.update(observations)
        if not stats.finite():  # a NaN/inf anywhere makes the mean or m2 non-finite
            raise schema.fail(
                self.out, f"non-finite observations in the episodes from {self.num_episodes} on"
            )
        self._keys.add(episode_keys, len(lengths), target_allowed, n)
        self.stats.merge(stats)
        try:
            for name, array in given.items():
                ds = self._datasets[name]
                ds.resize(self._rows + n, axis=0)
                ds[self._rows : self._rows + n] = array
        except OSError as exc:  # a full disk: the caller's abort removes the temporary file
            raise StorageError(write_failure(self.out, exc)) from None
        self._rows += n
        self._lengths.append(lengths)
        self._seeds.append(seeds)
        self._ends.append(None if ends is None else np.asarray(ends, np.int8).reshape(-1))

    @property
    def num_episodes(self) -> int:
        return sum(len(x) for x in self._lengths)

    # -- finishing -------------------------------------------------------------------------
    def commit(self) -> Path:
        """Write offsets, seeds and attributes; fsync; atomically replace ``out``."""
        if self._done:
            return self.out
        try:
            if self._rows == 0:
                raise schema.fail(self.out, "no episode was written")
            lengths = np.concatenate(self._lengths)
            offsets = np.zeros(len(lengths) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            self._file.create_dataset(schema.EPISODE_OFFSETS, data=offsets)
            self._file.create_dataset(schema.EPISODE_SEEDS, data=np.concatenate(self._seeds))
            if all(e is not None for e in self._ends):
                self._file.create_dataset(schema.EPISODE_ENDS, data=np.concatenate(self._ends))
            self._keys.write(self._file)
            obs = self._datasets[schema.OBSERVATIONS]
            attrs = {
                "schema": schema.SCHEMA_NAME,
                "schema_version": schema.SCHEMA_VERSION,
                "lejepa_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
                "obs_dtype": str(obs.dtype),
                "num_episodes": len(lengths),
                "num_steps": self._rows,
                "compression": self.compression,
                "env_id": "",
                "env_kwargs": {},
                "feature_names": [],
                **self.attrs,
                **schema.stats_to_attrs(self.stats.as_attrs()),
            }
            for key, value in attrs.items():
                self._file.attrs[key] = schema.to_attr(value)
            self._file.flush()
            self._file.close()
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.out)
            _fsync_dir(self.out.parent)
        except BaseException as exc:
            failure = write_failure(self.out, exc) if isinstance(exc, OSError) else None
            self.abort()
            if failure:
                raise StorageError(failure) from None
            raise
        self._done = True
        return self.out

    def abort(self) -> None:
        """Discard everything written; the destination is untouched."""
        self._done = True
        try:
            if self._file is not None and self._file.id.valid:
                _close_discarding(self._file)
        except Exception:  # noqa: BLE001 - closing a broken file must not hide the real error
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _close_discarding(file: h5py.File) -> None:
    """Close an HDF5 file whose contents are thrown away. Its pending writes are sent to the
    null device first: after a failed write (a full disk) HDF5 cannot flush them, and a file it
    could not close crashes the interpreter at exit."""
    try:
        handle = file.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, int(handle))
        finally:
            os.close(null)
    except (OSError, TypeError, ValueError, RuntimeError):
        pass
    file.close()


def make_parent_dir(out: str | Path) -> None:
    """Create the directory ``out`` will be written in (and its parents), like ``mkdir -p``."""
    parent = Path(out).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(
            f"{out}: cannot create directory {parent}: {exc.strerror or exc}"
        ) from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
