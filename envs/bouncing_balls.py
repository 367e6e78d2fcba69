"""``lejepa/BouncingBalls-v0``: N elastic balls in a 2-D box (single environment).

Observation, ``obs_mode="state"``: float32 ``[N, 4]`` of (x, y, vx, vy) per ball.
Observation, ``obs_mode="pixels"``: float32 ``[H, W]`` in [0, 1] (white balls on black,
anti-aliased, row 0 at the top); ``info["state"]`` carries the float32 ``[N, 4]`` true state.
Observation, ``obs_mode="ball_channels"``: float32 ``[N, H, W]``, channel n drawing ball n alone
(the same anti-aliased discs, so which ball is which is readable from one frame); ``info["state"]``
as in pixels mode.
Action: ``Discrete(1 + 4 N)``; 0 is the no-op, ``1 + 4 * ball + d`` adds ``push_speed`` to
that ball's velocity in direction d of (+x, -x, +y, -y). Reward is always 0; the episode never
terminates and is truncated after ``max_steps`` steps when that is set.
Physics and parameters: ``lejepa_envs.ball_physics`` (``BallsConfig``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from lejepa_envs.ball_physics import (
    STATE_DERIVATIVES,
    STATE_FEATURE_GROUPS,
    STATE_FEATURE_NAMES,
    STATE_POSITIONS,
    BallPhysics,
    BallsConfig,
    state_array,
)
from lejepa_envs.ball_render import render_ball_channels, render_gray, render_rgb

RENDER_MODES = ("rgb_array",)
IMAGE_MODES = ("pixels", "ball_channels")  # obs modes whose observations are images


def observation_shape(config: BallsConfig) -> tuple[int, ...]:
    """One observation's shape: ``[N, 4]``, ``[H, W]`` (pixels) or ``[N, H, W]`` (ball_channels)."""
    if config.obs_mode == "pixels":
        return config.image_shape
    if config.obs_mode == "ball_channels":
        return (config.num_balls, *config.image_shape)
    return (config.num_balls, 4)


def render_observation(config: BallsConfig, radius: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """pos [E, N, 2] -> the image observations of ``config.obs_mode``: [E, *observation_shape]."""
    render = render_ball_channels if config.obs_mode == "ball_channels" else render_gray
    return render(pos, radius, config.box, config.image_shape)


def observation_space(config: BallsConfig) -> gym.spaces.Box:
    """The single-env observation space of ``config.obs_mode``."""
    if config.obs_mode in IMAGE_MODES:
        return gym.spaces.Box(0.0, 1.0, shape=observation_shape(config), dtype=np.float32)
    w, h = config.box
    low = np.tile(np.array([0.0, 0.0, -np.inf, -np.inf], np.float32), (config.num_balls, 1))
    high = np.tile(np.array([w, h, np.inf, np.inf], np.float32), (config.num_balls, 1))
    return gym.spaces.Box(low, high, dtype=np.float32)


def env_metadata(config: BallsConfig, base: dict[str, Any]) -> dict[str, Any]:
    """Instance metadata: ``feature_names``/``feature_groups`` name the observation's last axis
    (empty in pixels mode); ``state_*`` always describe the ``[N, 4]`` state. ``dt``,
    ``derivatives`` (x -> vx, y -> vy), ``positions`` and ``box`` are what evaluation reads
    (the constant-velocity baseline, pictures): docs/envs.md#metadata-lejepa-reads."""
    pixels = config.obs_mode in IMAGE_MODES
    return {
        **base,
        "obs_mode": config.obs_mode,
        "feature_names": () if pixels else STATE_FEATURE_NAMES,
        "feature_groups": {} if pixels else dict(STATE_FEATURE_GROUPS),
        "state_feature_names": STATE_FEATURE_NAMES,
        "state_feature_groups": dict(STATE_FEATURE_GROUPS),
        "state_shape": (config.num_balls, 4),
        "dt": float(config.dt),
        "derivatives": dict(STATE_DERIVATIVES),
        "positions": STATE_POSITIONS,
        "box": tuple(float(side) for side in config.box),
        # what a dataset file's /observations and /states attributes say (docs/data.md)
        "observation_axes": _observation_axes(config.obs_mode),
        "state_axes": ("ball", "feature"),
        "feature_units": {"x": "length", "y": "length", "vx": "length/time", "vy": "length/time"},
        "noop_action": 0,  # the generator's default policy for envs that publish one
        "control": control_task(config),
    }


def control_task(config: BallsConfig) -> dict[str, Any]:
    """``lejepa plan``'s goal-reaching task (docs/control.md): bring ball 0's centre within
    ``success_distance`` of a goal position (drawn uniformly where its centre can be) within
    ``horizon`` steps; the other balls move freely. Goal elements: x, y of ball 0 in the
    flattened ``[N, 4]`` state."""
    radius = float(np.broadcast_to(np.asarray(config.radius, np.float64), (config.num_balls,))[0])
    w, h = config.box
    return {
        "goal_indices": [0, 1],
        "goal_low": [radius, radius],
        "goal_high": [w - radius, h - radius],
        "success_distance": 0.05 * min(w, h),
        "horizon": 30,
        "reset_state_option": "state",
    }


def _observation_axes(obs_mode: str) -> tuple[str, ...]:
    image = ("row (top to bottom)", "column")
    return {"pixels": image, "ball_channels": ("ball", *image)}.get(obs_mode, ("ball", "feature"))


def check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")


class BouncingBallsEnv(gym.Env):
    """N balls with exact elastic collisions. Keyword arguments: see ``BallsConfig``."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 20}

    def __init__(self, *, render_mode: str | None = None, **kwargs: Any):
        check_render_mode(render_mode)
        self.config = BallsConfig(**kwargs)
        self.physics = BallPhysics(self.config)
        self.render_mode = render_mode
        self.metadata = env_metadata(self.config, type(self).metadata)
        self.observation_space = observation_space(self.config)
        self.action_space = gym.spaces.Discrete(self.config.num_actions)
        self._state = np.zeros((4, self.config.num_balls, 1))  # physics layout [4, N, E=1]
        self._action = np.zeros(1, dtype=np.int64)
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """options: ``{"state": [N, 4]}`` starts from that state instead of a random one."""
        super().reset(seed=seed)
        state = (options or {}).get("state")
        if state is None:
            self._state[:, :, 0] = self.physics.sample_state(self.np_random)
        else:
            self._state[:] = self.physics.check_state(np.asarray(state)[None])
        self._steps = 0
        return self._observation(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, {self.action_space.n}), got {action!r}")
        self._action[0] = action
        self.physics.step(self._state, self._action)
        self._steps += 1
        truncated = self.config.max_steps is not None and self._steps >= self.config.max_steps
        return self._observation(), 0.0, False, truncated, self._info()

    @property
    def state(self) -> np.ndarray:
        """The true state, float32 [N, 4] (x, y, vx, vy)."""
        return state_array(self._state)[0]

    def _observation(self) -> np.ndarray:
        if self.config.obs_mode in IMAGE_MODES:
            return render_observation(self.config, self.physics.radius, self._state[:2].T)[0]
        return self.state

    def _info(self) -> dict[str, Any]:
        return {"state": self.state} if self.config.obs_mode in IMAGE_MODES else {}

    def render(self):
        """``rgb_array``: uint8 [render_size, render_size, 3], one colour per ball."""
        if self.render_mode is None:
            return None
        return render_rgb(
            self._state[:2, :, 0].T, self.physics.radius, self.config.box, self.config.render_size
        )
