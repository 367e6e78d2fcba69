"""A damped pendulum as a gymnasium environment, published with the metadata lejepa reads.

Observation ``float32 [2]`` = (theta, omega); action ``Box(-2, 2, (1,))``, a torque.
theta'' = -(g / L) sin(theta) - c omega + torque, integrated by semi-implicit Euler.
"""

import gymnasium as gym
import numpy as np


class DampedPendulumEnv(gym.Env):
    metadata = {
        "render_modes": [],
        "feature_names": ["theta", "omega"],
        "feature_groups": {"angle": ["theta"], "angular_velocity": ["omega"]},
        "derivatives": {"theta": "omega"},
        "noop_action": [0.0],
    }

    def __init__(
        self,
        *,
        dt: float = 0.05,
        damping: float = 0.1,
        gravity: float = 9.81,
        length: float = 1.0,
        max_steps: int = 200,
    ):
        self.dt, self.damping, self.gravity, self.length = dt, damping, gravity, length
        self.max_steps = max_steps
        self.metadata = {**type(self).metadata, "dt": dt}
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.state = np.zeros(2)
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.array(
            [self.np_random.uniform(-np.pi, np.pi), self.np_random.uniform(-1.0, 1.0)]
        )
        self.steps = 0
        return self.state.astype(np.float32), {}

    def step(self, action):
        theta, omega = self.state
        torque = float(np.clip(np.asarray(action).reshape(-1)[0], -2.0, 2.0))
        accel = -(self.gravity / self.length) * np.sin(theta) - self.damping * omega + torque
        omega = omega + self.dt * accel
        theta = theta + self.dt * omega
        self.state = np.array([theta, omega])
        self.steps += 1
        return self.state.astype(np.float32), 0.0, False, self.steps >= self.max_steps, {}
