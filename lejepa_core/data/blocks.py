"""One block of episodes, run in the main process or in a worker: ``run_block(job)``.

All episodes of a block run in lock-step in the env's native vector version when the id
registers one (one vector env is kept per process between blocks), otherwise one single env
after another. Shape legend: ``n`` episodes of the block, ``T`` = ``steps``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from lejepa_core.data import schema, seeding
from lejepa_core.data.env_probe import ProbedEnv
from lejepa_core.data.writer import RunningStats
from lejepa_core.errors import UserInputError
from lejepa_core.registry import ensure_envs_registered


@attrs.frozen(kw_only=True)
class Job:
    """Episodes ``start..stop-1`` (block number ``block``) of a run with ``seed``."""

    info: ProbedEnv
    seed: int
    policy: str  # "random" or "noop"
    steps: int
    block: int
    start: int
    stop: int
    per_feature: bool  # statistics per last observation axis
    sweep: bool = False  # reset episode i with options={"episode": i} (metadata["episode_count"])
    episode_keys: tuple[str, ...] = ()  # reset info entries stored per episode
    target_key: str | None = None  # per-frame bool info entry stored as /target_allowed


@attrs.define(kw_only=True)
class BlockResult:
    """The episodes of one block, concatenated (``L`` = sum(lengths) rows)."""

    observations: np.ndarray  # [L, *obs_shape]
    actions: np.ndarray  # [L, *action_shape]
    rewards: np.ndarray  # [L] float64 (the env's Python floats)
    states: np.ndarray | None  # [L, *state_shape]
    lengths: np.ndarray  # [n] int64
    seeds: np.ndarray  # [n] int64 reset seed of each episode
    ends: np.ndarray  # [n] int8 schema.END_* flags: how each episode ended
    seeding: str  # "per-episode" or "per-block"
    keys: dict[str, list] | None = None  # name -> [n] reset info values (Job.episode_keys)
    target_allowed: np.ndarray | None = None  # [L] int8 (Job.target_key)
    stats: RunningStats  # of observations, computed where the block ran


_ENV_CACHE: dict[tuple, Any] = {}
_LIST_SEEDS: dict[str, bool] = {}  # env id -> its vector env takes a list of seeds


def sample_actions(space: Any, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``[*shape, *space.shape]`` uniform random actions drawn from ``rng`` in one call."""
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


def block_actions(job: Job, n: int) -> np.ndarray:
    """[n, T, *action_shape] actions of the block: the env's no-op, or seeded random ones."""
    if job.policy == "noop":
        if job.info.noop_action is None:
            raise UserInputError(
                f"{job.info.env_id} publishes no no-op action (metadata['noop_action']); use --policy random"
            )
        return np.broadcast_to(job.info.noop_action, (n, job.steps, *job.info.action_shape)).copy()
    rng = seeding.action_rng(job.seed, job.block)
    return sample_actions(job.info.action_space, rng, (n, job.steps))


def run_block(job: Job) -> BlockResult:
    """Run episodes ``job.start:job.stop`` and return their concatenated arrays."""
    info, steps = job.info, job.steps
    n = job.stop - job.start
    actions = block_actions(job, n)  # [n, T, *action]
    obs = np.empty((n, steps, *info.obs_shape), info.obs_dtype)
    rewards = np.zeros((n, steps), np.float64)
    states = (
        None
        if info.state_shape is None
        else np.empty((n, steps, *info.state_shape), info.state_dtype)
    )
    lengths = np.full(n, steps, np.int64)
    seeds = seeding.episode_seeds(job.seed, job.start, job.stop)
    ends = np.full(n, schema.END_CUT, np.int8)
    extras = _Extras(job, n)
    if info.vector and not job.sweep:  # a sweep resets each episode with its own options
        seeding_mode = _run_vector(job, actions, obs, rewards, states, lengths, seeds, ends, extras)
    else:
        seeding_mode = "per-episode"
        _run_single(job, actions, obs, rewards, states, lengths, seeds, ends, extras)
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
    return BlockResult(
        observations=observations,
        actions=flat(actions).astype(info.action_dtype, copy=False),
        rewards=flat(rewards),
        states=flat(states),
        lengths=lengths,
        seeds=seeds,
        ends=ends,
        seeding=seeding_mode,
        stats=stats,
        keys=extras.keys if job.episode_keys else None,
        target_allowed=None if extras.allowed is None else flat(extras.allowed),
    )


class _Extras:
    """A block's episode keys ({name: [n]}) and target mask ([n, T] int8), filled from infos."""

    def __init__(self, job: Job, n: int):
        self.job = job
        self.keys: dict[str, list] = {name: [None] * n for name in job.episode_keys}
        self.allowed = None if job.target_key is None else np.zeros((n, job.steps), np.int8)

    def reset(self, info: dict, index: Any = None) -> None:
        """Record the reset ``info`` of episode ``index`` (all episodes of a vector env)."""
        for name in self.keys:
            if name not in info:
                raise UserInputError(
                    f"{self.job.info.env_id}: metadata['episode_keys'] names {name!r} but the "
                    "reset info has no such entry"
                )
            values = info[name]
            if index is None:
                self.keys[name] = [v.item() if isinstance(v, np.generic) else v for v in values]
            else:
                self.keys[name][index] = values
        self.frame(info, index, 0)

    def frame(self, info: dict, index: Any, t: int) -> None:
        """Record the target flag of frame ``t`` (of every episode when ``index`` is None)."""
        if self.allowed is None:
            return
        key = self.job.target_key
        if key not in info:
            raise UserInputError(
                f"{self.job.info.env_id}: metadata['target_key'] is {key!r} but the info of "
                f"frame {t} has no such entry"
            )
        self.allowed[slice(None) if index is None else index, t] = np.asarray(info[key], bool)


def _vector_env(info: ProbedEnv, num_envs: int):
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


def end_flags(terminated: Any, truncated: Any) -> Any:
    """``schema.END_*`` flags of an env's last step (arrays or bools)."""
    return (
        np.asarray(terminated, np.int8) * schema.END_TERMINATED
        | np.asarray(truncated, np.int8) * schema.END_TRUNCATED
    )


def _run_vector(job, actions, obs, rewards, states, lengths, seeds, ends, extras) -> str:
    """Fill the block's arrays in place from one vector env; returns the seeding used."""
    n = len(lengths)
    envs = _vector_env(job.info, n)
    seeding_mode = "per-episode"
    if _LIST_SEEDS.get(job.info.env_id, True):
        try:
            first, reset_info = envs.reset(seed=[int(s) for s in seeds])
            _LIST_SEEDS[job.info.env_id] = True
        except Exception:  # noqa: BLE001 - env only takes one integer seed
            _LIST_SEEDS[job.info.env_id] = False
    if not _LIST_SEEDS[job.info.env_id]:
        seeding_mode = "per-block"
        seeds[:] = seeding.block_seed(job.seed, job.block)
        first, reset_info = envs.reset(seed=int(seeds[0]))
    obs[:, 0] = first
    extras.reset(reset_info)
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
        if extras.allowed is not None:
            extras.frame(step_info, None, t)
        done = np.logical_or(terminated, truncated)
        if done.any():
            ended = done & alive
            if same_step and ended.any():  # the returned obs is already the next reset's
                idx = np.flatnonzero(ended)
                obs[idx, t] = np.stack([step_info["final_obs"][i] for i in idx])
                if states is not None:
                    states[idx, t] = np.stack([step_info["final_info"]["state"][i] for i in idx])
                if extras.allowed is not None:
                    final = np.asarray(step_info["final_info"][job.target_key], bool)
                    extras.allowed[idx, t] = final[idx]
            lengths[ended] = t + 1
            ends[ended] = end_flags(terminated, truncated)[ended]
            alive &= ~done
            if not alive.any():
                break
    return seeding_mode


def _run_single(job, actions, obs, rewards, states, lengths, seeds, ends, extras) -> None:
    """Fill the block's arrays in place, one single env episode after another."""
    ensure_envs_registered()
    env = gym.make(job.info.env_id, **job.info.env_kwargs)
    try:
        for j, s in enumerate(seeds):
            options = {"episode": job.start + j} if job.sweep else None
            o, info = env.reset(seed=int(s), options=options)
            obs[j, 0] = o
            extras.reset(info, j)
            if states is not None:
                states[j, 0] = info["state"]
            for t in range(1, job.steps):
                o, r, terminated, truncated, info = env.step(actions[j, t - 1])
                obs[j, t] = o
                rewards[j, t - 1] = r
                extras.frame(info, j, t)
                if states is not None:
                    states[j, t] = info["state"]
                if terminated or truncated:
                    lengths[j] = t + 1
                    ends[j] = end_flags(terminated, truncated)
                    break
    finally:
        env.close()
