"""Goal-reaching tasks, as an environment describes them in its metadata (never by its name).

An env that supports ``lejepa plan`` publishes ``metadata["control"]``::

    {"goal_indices": [0, 1],          # elements of the flattened state the goal is about
     "goal_low": [0.08, 0.08],        # goals are drawn uniformly in [goal_low, goal_high]
     "goal_high": [0.92, 0.92],
     "success_distance": 0.1,         # success: Euclidean distance <= this ...
     "horizon": 30,                   # ... at some step within this many steps
     "reset_state_option": "state"}   # reset(options={"state": s}) restarts from state s

The state is ``info["state"]`` when the env returns one, else the observation (docs/control.md).

Shape legend: ``S`` flattened state size, ``G`` goal size (``len(goal_indices)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from lejepa_core.errors import UserInputError


class NoControlTaskError(UserInputError):
    """The run's env publishes no ``metadata["control"]`` (or a malformed one)."""


@attrs.frozen(kw_only=True)
class ControlTask:
    """What a goal is, where goals are drawn, and when one counts as reached."""

    goal_indices: tuple[int, ...]
    goal_low: tuple[float, ...]
    goal_high: tuple[float, ...]
    success_distance: float
    horizon: int
    reset_state_option: str = "state"

    @classmethod
    def from_metadata(
        cls, control: Mapping[str, Any] | None, env_id: str = "the env"
    ) -> ControlTask:
        """From ``metadata["control"]``; ``NoControlTaskError`` naming what is missing."""
        if not control:
            raise NoControlTaskError(
                f"{env_id} publishes no metadata['control'] (goal_indices, goal_low, goal_high, "
                "success_distance, horizon): it defines no goal-reaching task (docs/control.md)"
            )
        try:
            task = cls(
                goal_indices=tuple(int(i) for i in control["goal_indices"]),
                goal_low=tuple(float(v) for v in control["goal_low"]),
                goal_high=tuple(float(v) for v in control["goal_high"]),
                success_distance=float(control["success_distance"]),
                horizon=int(control["horizon"]),
                reset_state_option=str(control.get("reset_state_option", "state")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NoControlTaskError(
                f"{env_id}: metadata['control'] is malformed ({type(exc).__name__}: {exc}); "
                "expected goal_indices, goal_low, goal_high, success_distance, horizon"
            ) from None
        g = len(task.goal_indices)
        if g == 0 or len(task.goal_low) != g or len(task.goal_high) != g:
            raise NoControlTaskError(
                f"{env_id}: metadata['control']: goal_indices, goal_low and goal_high must have "
                f"the same non-zero length, got {g}, {len(task.goal_low)}, {len(task.goal_high)}"
            )
        return task

    def sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        """A goal [G], uniform in [goal_low, goal_high]."""
        return rng.uniform(self.goal_low, self.goal_high)

    def distance(self, flat_states: Any, goal: Any) -> Any:
        """flat_states [..., S] and goal [G] -> Euclidean distance [...] (numpy or torch)."""
        part = flat_states[..., list(self.goal_indices)]
        diff = part - goal
        return (diff**2).sum(-1) ** 0.5


def env_state(obs: Any, info: Mapping[str, Any]) -> np.ndarray:
    """The env's true state: ``info["state"]`` when given, else the observation."""
    return np.asarray(info["state"] if "state" in info else obs, dtype=np.float64)
