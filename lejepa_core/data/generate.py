"""Generate a trajectory file from any registered gymnasium id.

``generate_dataset("lejepa/BouncingBalls-v0", episodes=10_000, steps=100, out="bb.h5")``

How the data is made (so that it can be reproduced):

* ``env_probe.probe_env`` reads the env's spaces, metadata and ``info["state"]`` once.
* Episodes are cut into fixed *blocks* of ``block_episodes`` consecutive episodes; the block
  size depends only on ``steps`` and the size of one observation, never on ``workers``. A
  block is the unit of work (``blocks.run_block``): all its episodes run in lock-step in the
  env's native vector version (``gymnasium.make_vec(..., vectorization_mode=
  "vector_entry_point")``) when the env registers one, otherwise one single env after another.
* Every seed (episode resets, block resets, random actions) comes from ``seeding``.
* ``--policy noop`` uses the env's ``metadata["noop_action"]`` (or zeros where they are a
  valid action). The default, ``auto``, is ``noop`` where the env publishes a ``noop_action``
  (BouncingBalls: passive physics, predictable from observations alone) and ``random``
  elsewhere.
* ``order="sweep"`` resets episode ``i`` with ``options={"episode": i}`` instead of a random
  one, for envs that publish ``metadata["episode_count"]`` (e.g. every pair of every ARC task
  once, in order); ``episodes`` may not exceed that count.
* An env's ``metadata["episode_keys"]`` (reset info entries, int or str) are stored per
  episode under ``/episode_keys``, its ``metadata["target_key"]`` (a per-frame bool info
  entry) as ``/target_allowed`` (``episode_keys.py``).
* An episode holds ``steps`` observations (the reset observation and ``steps - 1`` env
  steps), fewer when the env terminates or truncates first (ragged episodes).

So the same arguments give the same bytes whatever ``workers`` is: workers only decide which
process runs which block, and blocks are written in order.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import json
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lejepa_core.data import episode_keys, schema
from lejepa_core.data.blocks import BlockResult, Job, close_envs, run_block
from lejepa_core.data.env_probe import ProbedEnv, json_safe, probe_env
from lejepa_core.data.writer import TrajectoryWriter, make_parent_dir
from lejepa_core.errors import UserInputError
from lejepa_core.progress import progress_bar

POLICIES = ("auto", "random", "noop")
ORDERS = ("seeded", "sweep")
BLOCK_BYTES = 128 * 2**20  # observations (+ states) held per block
MAX_BLOCK_EPISODES = 2048


def default_block_episodes(steps: int, info: ProbedEnv) -> int:
    """Episodes per block: about ``BLOCK_BYTES`` of observations, at most 2048."""
    row = int(np.prod(info.obs_shape, dtype=np.int64)) * np.dtype(info.obs_dtype).itemsize
    if info.state_shape is not None:
        row += int(np.prod(info.state_shape, dtype=np.int64)) * np.dtype(info.state_dtype).itemsize
    return int(np.clip(BLOCK_BYTES // max(1, row * steps), 1, MAX_BLOCK_EPISODES))


def generate_dataset(
    env_id: str,
    *,
    episodes: int | None,
    steps: int,
    out: str | Path,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict | None = None,
    policy: str = "auto",
    compression: str = "auto",
    block_episodes: int | None = None,
    progress: bool = True,
    order: str = "seeded",
) -> Path:
    """Run ``episodes`` episodes of ``steps`` observations and write them to ``out``.

    Returns the path written. The file appears atomically at the end; an interruption leaves
    no partial file and any existing ``out`` untouched. See the module docstring for seeding.
    """
    env_kwargs = dict(env_kwargs or {})
    if episodes is None and order != "sweep":
        raise UserInputError("episodes is required (only order 'sweep' defaults to every episode)")
    if (episodes is not None and episodes < 1) or steps < 1:
        raise UserInputError(
            f"episodes and steps must be >= 1, got episodes={episodes}, steps={steps}"
        )
    if seed < 0:
        raise UserInputError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise UserInputError(f"workers must be >= 1, got {workers}")
    if policy not in POLICIES:
        raise UserInputError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if order not in ORDERS:
        raise UserInputError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    out = Path(out)
    info = probe_env(env_id, env_kwargs)
    try:
        keys, target_key = episode_keys.declared(info.metadata)
    except ValueError as exc:
        raise UserInputError(f"{env_id}: {exc}") from None
    if order == "sweep":
        episodes = check_sweep(env_id, info.metadata, episodes)
    if policy == "auto":  # passive dynamics where the env says how to do nothing
        policy = "noop" if info.noop_action is not None else "random"
    if policy == "noop" and info.noop_action is None:
        raise UserInputError(
            f"{env_id} publishes no no-op action (metadata['noop_action']); use --policy random"
        )
    block = block_episodes or default_block_episodes(steps, info)
    metadata = json_safe(info.metadata)
    feature_names = list(metadata.get("feature_names") or [])
    per_feature = schema.per_feature_stats(info.obs_shape, tuple(feature_names))
    jobs = [
        Job(
            info=info,
            seed=seed,
            policy=policy,
            steps=steps,
            block=b,
            start=start,
            stop=min(start + block, episodes),
            per_feature=per_feature,
            sweep=order == "sweep",
            episode_keys=keys,
            target_key=target_key,
        )
        for b, start in enumerate(range(0, episodes, block))
    ]
    make_parent_dir(out)  # like `lejepa run`; only once the arguments and the env are checked
    writer = TrajectoryWriter(
        out,
        obs_shape=info.obs_shape,
        obs_dtype=info.obs_dtype,
        action_shape=info.action_shape,
        action_dtype=info.action_dtype,
        state_shape=info.state_shape,
        state_dtype=info.state_dtype,
        attrs={
            **_file_attrs(info, metadata, policy=policy, seed=seed, steps=steps, block=block),
            "order": order,
        },
        compression=compression,
        reward_dtype="float64",  # gymnasium rewards are Python floats
        dataset_attrs=schema.dataset_attrs(
            metadata, info.obs_shape, info.action_shape, info.state_shape
        ),
    )
    with writer:
        seeding = _write_blocks(writer, jobs, workers=workers, progress=progress)
        writer.attrs["seeding"] = "per-block" if "per-block" in seeding else "per-episode"
    return out


def check_sweep(env_id: str, metadata: dict, episodes: int | None) -> int:
    """The episodes of a sweep (``episodes``, or every one when None); ``UserInputError``
    unless ``env_id`` can be swept for that many."""
    count = metadata.get("episode_count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UserInputError(
            f"order 'sweep': {env_id} (with these env kwargs) publishes no "
            "metadata['episode_count'], so its episodes cannot be swept; use order 'seeded'"
        )
    if episodes is None:
        return count
    if episodes > count:
        raise UserInputError(
            f"order 'sweep': episodes={episodes} but {env_id} (with these env kwargs) has "
            f"{count} episodes to sweep; expected episodes <= {count}"
        )
    return episodes


def _file_attrs(
    info: ProbedEnv, metadata: dict, *, policy: str, seed: int, steps: int, block: int
) -> dict:
    """The root attributes that say how the file was made (docs/data.md)."""
    feature_names = list(metadata.get("feature_names") or [])
    state_names = list(
        metadata.get("state_feature_names") or (feature_names if info.state_shape else [])
    )
    attrs = {
        "env_id": info.env_id,
        "env_kwargs": info.env_kwargs,
        "feature_names": feature_names,
        "state_feature_names": state_names,
        "action_space": schema.space_to_json(info.action_space),
        "observation_space": schema.space_to_json(info.observation_space),
        "env_metadata": json.dumps(metadata),
        "policy": policy,
        "seed": seed,
        "steps": steps,
        "block_episodes": block,
        "vectorized": info.vector,
    }
    if "pad_value" in metadata:
        attrs["pad_value"] = metadata["pad_value"]
    return attrs


def _write_blocks(
    writer: TrajectoryWriter, jobs: list[Job], *, workers: int, progress: bool
) -> set[str]:
    """Run ``jobs`` (in a pool of ``workers`` processes when > 1) and append their results to
    ``writer`` in order; returns the seeding modes the blocks used."""
    seeding = set()
    pool = None
    if workers > 1 and len(jobs) > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        # before any progress thread starts; the workers ignore Ctrl-C (the main process
        # stops them: one line, no worker tracebacks)
        pool = context.Pool(min(workers, len(jobs)), initializer=_worker_signals)
    try:
        results = _in_order(pool, jobs, 2 * workers) if pool else map(run_block, jobs)
        with _progress(progress, jobs[-1].stop) as advance:
            for result in results:
                seeding.add(result.seeding)
                writer.append(
                    result.observations,
                    result.actions,
                    rewards=result.rewards,
                    states=result.states,
                    lengths=result.lengths,
                    seeds=result.seeds,
                    ends=result.ends,
                    stats=result.stats,
                    episode_keys=result.keys,
                    target_allowed=result.target_allowed,
                )
                advance(len(result.lengths), int(result.lengths.sum()))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        close_envs()
    return seeding


def _worker_signals() -> None:
    """In a pool worker: Ctrl-C is ignored (the main process stops the pool), SIGTERM ends it
    quietly, and on Linux it is killed when the main process dies (no orphan computing on and
    printing broken-pipe tracebacks)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _in_order(pool, jobs: list[Job], window: int) -> Iterator[BlockResult]:
    """Results of ``run_block`` over ``jobs`` in order, at most ``window`` blocks in flight
    (``Pool.imap`` would buffer every finished block in memory when writing is the slower side)."""
    pending: collections.deque = collections.deque()
    remaining = iter(jobs)
    for job in itertools.islice(remaining, window):
        pending.append(pool.apply_async(run_block, (job,)))
    while pending:
        result = pending.popleft().get()
        for job in itertools.islice(remaining, 1):
            pending.append(pool.apply_async(run_block, (job,)))
        yield result


class _progress:
    """The generation bar: episodes done, episodes/s and steps/s (``advance(episodes, steps)``)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar = progress_bar(
            self.enabled, self.total, label="generating", fields={"rate": ("", "{}")}
        )
        update = self.bar.__enter__()
        start, counts = time.perf_counter(), {"episodes": 0, "steps": 0}

        def advance(episodes: int, steps: int) -> None:
            counts["episodes"] += episodes
            counts["steps"] += steps
            elapsed = max(time.perf_counter() - start, 1e-9)
            rate = f"{counts['episodes'] / elapsed:,.0f} episodes/s  {counts['steps'] / elapsed:,.0f} steps/s"
            update(advance=episodes, rate=rate)

        return advance

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)
