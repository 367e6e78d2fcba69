"""Natively vectorised ``lejepa/BouncingBalls-v0``: E copies stepped in one array computation.

Trajectories equal those of E single ``BouncingBallsEnv``s under
``gymnasium.vector.SyncVectorEnv`` with the same seeds (``reset(seed=s)`` seeds copy i with
``s + i``): both run ``BallPhysics`` on float64 arrays, and copy i draws its initial states from
its own ``np.random.Generator``. Autoreset: ``AutoresetMode.NEXT_STEP`` (gymnasium's default):
the step after a truncation resets that copy and returns its first observation, reward 0.

Observations: float32 ``[E, N, 4]`` (state), ``[E, H, W]`` (pixels) or ``[E, N, H, W]``
(ball_channels), the image modes with
``info["state"]: [E, N, 4]`` and the mask ``info["_state"]: [E]``). Actions: int ``[E]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lejepa_envs.ball_physics import BallPhysics, BallsConfig, state_array
from lejepa_envs.ball_render import render_rgb
from lejepa_envs.bouncing_balls import (
    IMAGE_MODES,
    RENDER_MODES,
    check_render_mode,
    env_metadata,
    observation_space,
    render_observation,
)


class BouncingBallsVectorEnv(VectorEnv):
    """``num_envs`` copies of BouncingBalls. Other keyword arguments: see ``BallsConfig``."""

    metadata = {
        "render_modes": list(RENDER_MODES),
        "render_fps": 20,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        *,
        num_envs: int = 1,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ):
        """max_episode_steps: what ``gymnasium.make_vec`` passes for a spec's time limit; an
        alias of ``max_steps``."""
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        check_render_mode(render_mode)
        if max_episode_steps is not None:
            if kwargs.get("max_steps", max_episode_steps) != max_episode_steps:
                raise ValueError(
                    f"max_steps={kwargs['max_steps']!r} and max_episode_steps="
                    f"{max_episode_steps!r} disagree; give one of them"
                )
            kwargs["max_steps"] = max_episode_steps
        self.config = BallsConfig(**kwargs)
        self.physics = BallPhysics(self.config)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.metadata = env_metadata(self.config, type(self).metadata)
        self.single_observation_space = observation_space(self.config)
        self.single_action_space = gym.spaces.Discrete(self.config.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        e, n = self.num_envs, self.config.num_balls
        self._state = np.zeros((4, n, e))  # physics layout [4, N, E] float64
        self._steps = np.zeros(e, dtype=np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * e
        self._autoreset = np.zeros(e, dtype=bool)  # truncated last step: reset on this one
        self._all_true = np.ones(e, dtype=bool)

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ):
        """seed: None, an int s (copy i gets s + i) or one seed per copy.

        options: ``{"reset_mask": bool [E]}`` resets only those copies;
        ``{"state": [E, N, 4]}`` starts from that state instead of random ones.
        """
        e = self.num_envs
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(e)]
        else:
            seeds = [None if x is None else int(x) for x in seed]
            if len(seeds) != e:
                raise ValueError(f"seed must hold num_envs={e} seeds, got {len(seeds)}")
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", self._all_true))
        if mask.shape != (e,) or mask.dtype != np.bool_:
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({e},)")
        state = options.pop("state", None)
        if state is not None:
            checked = self.physics.check_state(state)
            if checked.shape[-1] != e:
                raise ValueError(f"options['state'] must be [{e}, N, 4], got {np.shape(state)}")
            self._state[:, :, mask] = checked[:, :, mask]
        for i in np.flatnonzero(mask):
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
            if state is None:
                self._state[:, :, i] = self.physics.sample_state(self._rngs[i])
        self._steps[mask] = 0
        self._autoreset[mask] = False
        return self._observation(), self._info(mask)

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be ints of shape ({self.num_envs},), got {actions!r}")
        if (actions < 0).any() or (actions >= self.config.num_actions).any():
            raise ValueError(f"actions must lie in [0, {self.config.num_actions}), got {actions!r}")
        self.physics.step(self._state, actions)
        self._steps += 1
        rewards = np.zeros(self.num_envs)
        terminations = np.zeros(self.num_envs, dtype=bool)
        if self._autoreset.any():  # NEXT_STEP: these copies restart instead of stepping
            for i in np.flatnonzero(self._autoreset):
                self._state[:, :, i] = self.physics.sample_state(self._rngs[i])
            self._steps[self._autoreset] = 0
        if self.config.max_steps is None:
            truncations = np.zeros(self.num_envs, dtype=bool)
        else:
            truncations = self._steps >= self.config.max_steps
        self._autoreset = truncations.copy()
        return self._observation(), rewards, terminations, truncations, self._info(self._all_true)

    @property
    def state(self) -> np.ndarray:
        """The true states, float32 [E, N, 4] (x, y, vx, vy)."""
        return state_array(self._state)

    def _observation(self) -> np.ndarray:
        if self.config.obs_mode in IMAGE_MODES:
            return render_observation(self.config, self.physics.radius, self._state[:2].T)
        return self.state

    def _info(self, mask: np.ndarray) -> dict[str, Any]:
        if self.config.obs_mode not in IMAGE_MODES:
            return {}
        return {"state": self.state, "_state": mask.copy()}

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``rgb_array``: one uint8 [render_size, render_size, 3] frame per copy."""
        if self.render_mode is None:
            return None
        radius, box, size = self.physics.radius, self.config.box, self.config.render_size
        return tuple(render_rgb(pos, radius, box, size) for pos in self._state[:2].T)
