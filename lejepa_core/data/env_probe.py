"""What ``generate`` learns about an env once, in the main process: ``probe_env`` makes one
single env, resets it, and reads its spaces, metadata and ``info["state"]``."""

from __future__ import annotations

import json
from typing import Any

import attrs
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lejepa_core.errors import UserInputError
from lejepa_core.registry import ensure_envs_registered

ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


@attrs.frozen(kw_only=True)
class ProbedEnv:
    """The spaces and metadata of one env id with its kwargs.

    obs_shape/obs_dtype: one observation; action_shape/action_dtype: one action as stored
    (Discrete/MultiDiscrete in the smallest signed int that holds them); state_shape/state_dtype:
    ``info["state"]`` (float32 for float states) or None; vector: the id registers a native
    vector env; noop_action: [*action_shape] the env's "do nothing" action or None.
    """

    env_id: str
    env_kwargs: dict
    obs_shape: tuple[int, ...]
    obs_dtype: str
    action_shape: tuple[int, ...]
    action_dtype: str
    action_space: Any
    observation_space: Any
    state_shape: tuple[int, ...] | None
    state_dtype: str | None
    vector: bool
    metadata: dict
    noop_action: np.ndarray | None = attrs.field(eq=False)


def probe_env(env_id: str, env_kwargs: dict) -> ProbedEnv:
    """Make one single env, reset it, and read its spaces, metadata and ``info["state"]``."""
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
    if not isinstance(act_space, ACTION_SPACES):
        raise UserInputError(
            f"{env_id}: action space {act_space} is not supported (Box, Discrete, MultiDiscrete, MultiBinary)"
        )
    state = info.get("state")
    state = None if state is None else np.asarray(state)
    action_dtype = stored_action_dtype(act_space)
    noop = metadata.get("noop_action")
    if noop is not None:
        native = act_space.dtype if act_space.dtype is not None else np.int64
        noop = np.asarray(noop, dtype=native).reshape(act_space.shape)
    elif isinstance(act_space, spaces.Box):
        zeros = np.zeros(act_space.shape, action_dtype)
        noop = zeros if act_space.contains(zeros) else None
    return ProbedEnv(
        env_id=env_id,
        env_kwargs=env_kwargs,
        obs_shape=tuple(obs_space.shape),
        obs_dtype=str(np.dtype(obs_space.dtype)),
        action_shape=tuple(act_space.shape),
        action_dtype=str(action_dtype),
        action_space=act_space,
        observation_space=obs_space,
        state_shape=None if state is None else tuple(state.shape),
        state_dtype=None
        if state is None
        else str(state.dtype if state.dtype.kind != "f" else np.dtype(np.float32)),
        vector=spec.vector_entry_point is not None,
        metadata=metadata,
        noop_action=noop,
    )


def stored_action_dtype(space: spaces.Space) -> np.dtype:
    """The dtype actions of ``space`` are stored in: the space's own, except Discrete and
    MultiDiscrete, which get the smallest signed int that holds every action."""
    if not isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return np.dtype(space.dtype) if space.dtype is not None else np.dtype(np.int64)
    low = int(np.min(space.start))
    stop = space.start + (space.n if isinstance(space, spaces.Discrete) else space.nvec)
    high = int(np.max(stop))
    return next(
        np.dtype(t)
        for t in (np.int8, np.int16, np.int32, np.int64)
        if np.iinfo(t).min <= low and high - 1 <= np.iinfo(t).max
    )


def json_safe(metadata: dict) -> dict:
    """The JSON-serialisable part of an env's ``metadata`` (arrays as lists)."""
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
