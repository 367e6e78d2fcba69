"""Generate a trajectory file from any registered gymnasium id.

``generate_dataset("lejepa/BouncingBalls-v0", episodes=10_000, steps=100, out="bb.h5")``

How the data is made (so that it can be reproduced):

* Episodes are cut into fixed *blocks* of ``block_episodes`` consecutive episodes; the block
  size depends only on ``steps`` and the size of one observation, never on ``workers``. A
  block is the unit of work: all its episodes run in lock-step in the env's native vector
  version (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) when the env
  registers one, otherwise one single env after another.
* Episode ``i`` is reset with ``episode_seeds(seed, i, i + 1)`` (a SplitMix64 hash of
  ``(seed, i)``, 63 bits). A native
  vector env that only takes one integer seed is reset once per block with
  ``SeedSequence([seed, block, 1]).generate_state(1)[0]`` instead (``seeding`` attribute
  "per-block"; ``/episode_seeds`` then holds that block seed for each of its episodes).
* Random actions come from ``default_rng(SeedSequence([seed, block, 2]))``, sampled for the
  whole block at once from the action space; ``--policy noop`` uses the env's
  ``metadata["noop_action"]`` (or zeros where they are a valid action). The default,
  ``auto``, is ``noop`` where the env publishes a ``noop_action`` (BouncingBalls: passive
  physics, predictable from observations alone) and ``random`` elsewhere.
* An episode holds ``steps`` observations (the reset observation and ``steps - 1`` env
  steps), fewer when the env terminates or truncates first (ragged episodes).

So the same arguments give the same bytes whatever ``workers`` is: workers only decide which
process runs which block, and blocks are written in order.
"""

from __future__ import annotations

import collections
import itertools
import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lejepa_core.data import schema
from lejepa_core.data.writer import RunningStats, TrajectoryWriter
from lejepa_core.errors import UserInputError

POLICIES = ("auto", "random", "noop")
BLOCK_BYTES = 128 * 2**20  # observations (+ states) held per block
MAX_BLOCK_EPISODES = 2048
_BLOCK_SEED_STREAM = 1
_ACTION_STREAM = 2


def ensure_envs_registered() -> None:
    """Register lejepa's plugin env ids with gymnasium (no-op when the registry is absent)."""
    try:
        from lejepa_core.registry import ensure_envs_registered as register
    except ImportError:  # pragma: no cover - registry not built yet
        return
    register()


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def episode_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """[stop - start] int64 reset seeds of episodes ``start..stop-1`` of a run with ``seed``:
    ``splitmix64(splitmix64(seed) + i) >> 1`` (63-bit, so it fits int64 and any reset)."""
    base = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        x = base + np.arange(start, stop, dtype=np.uint64)
    return (_splitmix64(x) >> np.uint64(1)).astype(np.int64)


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of episode ``index`` of a run with ``seed``."""
    return int(episode_seeds(seed, index, index + 1)[0])


def block_seed(seed: int, block: int) -> int:
    """The reset seed of a whole block, for vector envs that take one integer seed."""
    return int(np.random.SeedSequence([seed, block, _BLOCK_SEED_STREAM]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# What we learn about the env once, in the main process
@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    env_kwargs: dict
    obs_shape: tuple[int, ...]
    obs_dtype: str
    action_shape: tuple[int, ...]
    action_dtype: str
    action_space: Any
    state_shape: tuple[int, ...] | None
    state_dtype: str | None
    vector: bool
    metadata: dict
    noop_action: np.ndarray | None


def probe_env(env_id: str, env_kwargs: dict) -> EnvInfo:
    """Make one single env, reset it, and read its spaces, metadata and ``info["state"]``."""
    import gymnasium as gym
    from gymnasium import spaces

    ensure_envs_registered()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise UserInputError(f"unknown environment {env_id!r}: {exc}") from None
    try:
        env = gym.make(env_id, **env_kwargs)
    except (TypeError, ValueError, gym.error.Error) as exc:
        raise UserInputError(f"{env_id}: bad env kwargs {env_kwargs}: {exc}") from None
    try:
        _, info = env.reset(seed=0)
        obs_space, act_space = env.observation_space, env.action_space
        metadata = dict(env.metadata)
    finally:
        env.close()
    if not isinstance(obs_space, spaces.Box):
        raise UserInputError(
            f"{env_id}: observation space {obs_space} is not supported (array observations only)"
        )
    if not isinstance(
        act_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    ):
        raise UserInputError(
            f"{env_id}: action space {act_space} is not supported (Box, Discrete, MultiDiscrete, MultiBinary)"
        )
    state = info.get("state")
    state = None if state is None else np.asarray(state)
    action_dtype = np.dtype(act_space.dtype) if act_space.dtype is not None else np.dtype(np.int64)
    if isinstance(act_space, (spaces.Discrete, spaces.MultiDiscrete)):  # store compactly
        low = int(np.min(act_space.start))
        high = int(
            np.max(
                act_space.start + act_space.n
                if isinstance(act_space, spaces.Discrete)
                else act_space.start + act_space.nvec
            )
        )
        action_dtype = next(
            np.dtype(t)
            for t in (np.int8, np.int16, np.int32, np.int64)
            if np.iinfo(t).min <= low and high - 1 <= np.iinfo(t).max
        )
    noop = metadata.get("noop_action")
    if noop is not None:
        native = act_space.dtype if act_space.dtype is not None else np.int64
        noop = np.asarray(noop, dtype=native).reshape(act_space.shape)
    elif isinstance(act_space, spaces.Box):
        zeros = np.zeros(act_space.shape, action_dtype)
        noop = zeros if act_space.contains(zeros) else None
    return EnvInfo(
        env_id=env_id,
        env_kwargs=env_kwargs,
        obs_shape=tuple(obs_space.shape),
        obs_dtype=str(np.dtype(obs_space.dtype)),
        action_shape=tuple(act_space.shape),
        action_dtype=str(action_dtype),
        action_space=act_space,
        state_shape=None if state is None else tuple(state.shape),
        state_dtype=None
        if state is None
        else str(state.dtype if state.dtype.kind != "f" else np.dtype(np.float32)),
        vector=spec.vector_entry_point is not None,
        metadata=metadata,
        noop_action=noop,
    )


def sample_actions(space: Any, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``[*shape, *space.shape]`` uniform random actions drawn from ``rng`` in one call."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=shape, dtype=np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        size = (*shape, *space.shape)
        return (space.start + rng.integers(0, space.nvec, size=size)).astype(space.dtype)
    if isinstance(space, spaces.MultiBinary):
        return rng.integers(0, 2, size=(*shape, *space.shape)).astype(space.dtype)
    # Box: uniform where bounded, normal where unbounded, exponential where half-bounded
    size = (*shape, *space.shape)
    low = np.broadcast_to(space.low, space.shape).astype(np.float64)
    high = np.broadcast_to(space.high, space.shape).astype(np.float64)
    if np.dtype(space.dtype).kind in "iu":
        return rng.integers(low.astype(np.int64), high.astype(np.int64) + 1, size=size).astype(
            space.dtype
        )
    bounded = np.isfinite(low) & np.isfinite(high)
    out = rng.uniform(np.where(bounded, low, 0.0), np.where(bounded, high, 1.0), size=size)
    if not bounded.all():
        normal = rng.normal(size=size)
        out = np.where(bounded, out, normal)
        out = np.where(np.isfinite(low) & ~bounded, low + np.abs(normal), out)
        out = np.where(np.isfinite(high) & ~bounded, high - np.abs(normal), out)
    return out.astype(space.dtype)


# --------------------------------------------------------------------------------------------
# One block of episodes (runs in the main process or in a worker)
@dataclass(frozen=True)
class Job:
    info: EnvInfo
    seed: int
    policy: str
    steps: int
    block: int
    start: int  # first episode index
    stop: int
    per_feature: bool  # statistics per last observation axis


@dataclass
class BlockResult:
    observations: np.ndarray  # [sum(lengths), *obs_shape]
    actions: np.ndarray
    rewards: np.ndarray
    states: np.ndarray | None
    lengths: np.ndarray  # [n] int64
    seeds: np.ndarray  # [n] int64
    seeding: str
    stats: RunningStats  # of observations, computed where the block ran


_ENV_CACHE: dict[tuple, Any] = {}
_LIST_SEEDS: dict[str, bool] = {}


def _vector_env(info: EnvInfo, num_envs: int):
    import gymnasium as gym

    key = (info.env_id, json.dumps(info.env_kwargs, sort_keys=True), num_envs)
    if key not in _ENV_CACHE:
        ensure_envs_registered()
        for old in list(_ENV_CACHE):  # keep at most one live vector env per process
            _ENV_CACHE.pop(old).close()
        _ENV_CACHE[key] = gym.make_vec(
            info.env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            **info.env_kwargs,
        )
    return _ENV_CACHE[key]


def close_envs() -> None:
    """Close the vector env this process keeps between blocks."""
    while _ENV_CACHE:
        _ENV_CACHE.popitem()[1].close()


def _block_actions(job: Job, n: int) -> np.ndarray:
    if job.policy == "noop":
        if job.info.noop_action is None:
            raise UserInputError(
                f"{job.info.env_id} publishes no no-op action (metadata['noop_action']); use --policy random"
            )
        return np.broadcast_to(job.info.noop_action, (n, job.steps, *job.info.action_shape)).copy()
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.block, _ACTION_STREAM]))
    return sample_actions(job.info.action_space, rng, (n, job.steps))


def run_block(job: Job) -> BlockResult:
    """Run episodes ``job.start:job.stop`` and return their concatenated arrays."""
    info, steps = job.info, job.steps
    n = job.stop - job.start
    actions = _block_actions(job, n)
    obs = np.empty((n, steps, *info.obs_shape), info.obs_dtype)
    rewards = np.zeros((n, steps), np.float32)
    states = (
        None
        if info.state_shape is None
        else np.empty((n, steps, *info.state_shape), info.state_dtype)
    )
    lengths = np.full(n, steps, np.int64)
    seeds = episode_seeds(job.seed, job.start, job.stop)
    if info.vector:
        seeding = _run_vector(job, actions, obs, rewards, states, lengths, seeds)
    else:
        seeding = "per-episode"
        _run_single(job, actions, obs, rewards, states, lengths, seeds)
    actions[np.arange(n), lengths - 1] = 0  # no action follows the last observation
    rewards[np.arange(n), lengths - 1] = 0
    if (lengths == steps).all():
        flat = lambda a: None if a is None else a.reshape(n * steps, *a.shape[2:])  # noqa: E731
    else:
        mask = np.arange(steps)[None, :] < lengths[:, None]
        flat = lambda a: None if a is None else a[mask]  # noqa: E731
    observations = flat(obs)
    stats = RunningStats(job.per_feature, info.obs_shape[-1] if info.obs_shape else 1)
    stats.update(observations)
    actions = flat(actions).astype(info.action_dtype, copy=False)
    return BlockResult(
        observations, actions, flat(rewards), flat(states), lengths, seeds, seeding, stats
    )


def _run_vector(job, actions, obs, rewards, states, lengths, seeds) -> str:
    from gymnasium.vector import AutoresetMode

    n = len(lengths)
    envs = _vector_env(job.info, n)
    seeding = "per-episode"
    if _LIST_SEEDS.get(job.info.env_id, True):
        try:
            first, reset_info = envs.reset(seed=[int(s) for s in seeds])
            _LIST_SEEDS[job.info.env_id] = True
        except Exception:  # noqa: BLE001 - env only takes one integer seed
            _LIST_SEEDS[job.info.env_id] = False
    if not _LIST_SEEDS[job.info.env_id]:
        seeding = "per-block"
        seeds[:] = block_seed(job.seed, job.block)
        first, reset_info = envs.reset(seed=int(seeds[0]))
    obs[:, 0] = first
    if states is not None:
        states[:, 0] = reset_info["state"]
    same_step = envs.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP
    alive = np.ones(n, bool)
    for t in range(1, job.steps):
        o, r, terminated, truncated, step_info = envs.step(actions[:, t - 1])
        obs[:, t] = o
        rewards[:, t - 1] = r
        if states is not None:
            states[:, t] = step_info["state"]
        done = np.logical_or(terminated, truncated)
        if done.any():
            ended = done & alive
            if same_step and ended.any():  # the returned obs is already the next reset's
                idx = np.flatnonzero(ended)
                obs[idx, t] = np.stack([step_info["final_obs"][i] for i in idx])
                if states is not None:
                    states[idx, t] = np.stack([step_info["final_info"]["state"][i] for i in idx])
            lengths[ended] = t + 1
            alive &= ~done
            if not alive.any():
                break
    return seeding


def _run_single(job, actions, obs, rewards, states, lengths, seeds) -> None:
    import gymnasium as gym

    ensure_envs_registered()
    env = gym.make(job.info.env_id, **job.info.env_kwargs)
    try:
        for j, s in enumerate(seeds):
            o, info = env.reset(seed=int(s))
            obs[j, 0] = o
            if states is not None:
                states[j, 0] = info["state"]
            for t in range(1, job.steps):
                o, r, terminated, truncated, info = env.step(actions[j, t - 1])
                obs[j, t] = o
                rewards[j, t - 1] = r
                if states is not None:
                    states[j, t] = info["state"]
                if terminated or truncated:
                    lengths[j] = t + 1
                    break
    finally:
        env.close()


# --------------------------------------------------------------------------------------------
def default_block_episodes(steps: int, info: EnvInfo) -> int:
    """Episodes per block: about ``BLOCK_BYTES`` of observations, at most 2048."""
    row = int(np.prod(info.obs_shape, dtype=np.int64)) * np.dtype(info.obs_dtype).itemsize
    if info.state_shape is not None:
        row += int(np.prod(info.state_shape, dtype=np.int64)) * np.dtype(info.state_dtype).itemsize
    return int(np.clip(BLOCK_BYTES // max(1, row * steps), 1, MAX_BLOCK_EPISODES))


def _json_safe(metadata: dict) -> dict:
    out = {}
    for key, value in metadata.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[str(key)] = value
    return out


def generate_dataset(
    env_id: str,
    *,
    episodes: int,
    steps: int,
    out: str | Path,
    seed: int = 0,
    workers: int = 1,
    env_kwargs: dict | None = None,
    policy: str = "auto",
    compression: str = "auto",
    block_episodes: int | None = None,
    progress: bool = True,
) -> Path:
    """Run ``episodes`` episodes of ``steps`` observations and write them to ``out``.

    Returns the path written. The file appears atomically at the end; an interruption leaves
    no partial file and any existing ``out`` untouched. See the module docstring for seeding.
    """
    env_kwargs = dict(env_kwargs or {})
    if episodes < 1 or steps < 1:
        raise UserInputError(
            f"episodes and steps must be >= 1, got episodes={episodes}, steps={steps}"
        )
    if seed < 0:
        raise UserInputError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise UserInputError(f"workers must be >= 1, got {workers}")
    if policy not in POLICIES:
        raise UserInputError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserInputError(f"{out}: directory {out.parent} does not exist")
    info = probe_env(env_id, env_kwargs)
    if policy == "auto":  # passive dynamics where the env says how to do nothing
        policy = "noop" if info.noop_action is not None else "random"
    if policy == "noop" and info.noop_action is None:
        raise UserInputError(
            f"{env_id} publishes no no-op action (metadata['noop_action']); use --policy random"
        )
    block = block_episodes or default_block_episodes(steps, info)
    metadata = _json_safe(info.metadata)
    feature_names = list(metadata.get("feature_names") or [])
    per_feature = schema.per_feature_stats(info.obs_shape, tuple(feature_names))
    jobs = [
        Job(info, seed, policy, steps, b, start, min(start + block, episodes), per_feature)
        for b, start in enumerate(range(0, episodes, block))
    ]
    state_names = list(
        metadata.get("state_feature_names") or (feature_names if info.state_shape else [])
    )
    attrs = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "feature_names": feature_names,
        "state_feature_names": state_names,
        "action_space": str(info.action_space),
        "env_metadata": json.dumps(metadata),
        "policy": policy,
        "seed": seed,
        "steps": steps,
        "block_episodes": block,
        "vectorized": info.vector,
    }
    if "pad_value" in metadata:
        attrs["pad_value"] = metadata["pad_value"]
    writer = TrajectoryWriter(
        out,
        obs_shape=info.obs_shape,
        obs_dtype=info.obs_dtype,
        action_shape=info.action_shape,
        action_dtype=info.action_dtype,
        state_shape=info.state_shape,
        state_dtype=info.state_dtype,
        attrs=attrs,
        compression=compression,
    )
    with writer:
        seeding = set()
        pool = None
        if workers > 1 and len(jobs) > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            pool = context.Pool(min(workers, len(jobs)))  # before any progress thread starts
        try:
            results = _in_order(pool, jobs, 2 * workers) if pool else map(run_block, jobs)
            with _progress(progress, episodes) as advance:
                for result in results:
                    seeding.add(result.seeding)
                    writer.append(
                        result.observations,
                        result.actions,
                        rewards=result.rewards,
                        states=result.states,
                        lengths=result.lengths,
                        seeds=result.seeds,
                        stats=result.stats,
                    )
                    advance(len(result.lengths), int(result.lengths.sum()))
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            close_envs()
        writer.attrs["seeding"] = "per-block" if "per-block" in seeding else "per-episode"
    return out


def _in_order(pool, jobs: list[Job], window: int):
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

    def __enter__(self):
        from lejepa_core.progress import progress_bar

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
