"""Model-predictive control: a trained run (or the simulator) + a planner -> actions.

    policy = MPCPolicy(planner, make_problem, replan_every=1)
    policy.reset(goal)
    action = policy.act(frames, state)   # frames: the last W raw observations; state: the env's

Every ``replan_every`` steps ``make_problem(frames, state, goal)`` builds a planning problem
(``problem.LatentProblem`` for a run, ``problem.SimulatorProblem`` for the oracle), the planner
returns an action sequence [H, *act], and its first ``replan_every`` actions are played.
``latent_policy(run_dir, ...)`` builds the policy of a trained run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lejepa_core.control.problem import LatentProblem
from lejepa_core.control.tasks import ControlTask


class MPCPolicy:
    """Replan every ``replan_every`` steps, play the plan's first actions; ``plan_seconds`` /
    ``plan_cpu_seconds`` accumulate the planning wall / process CPU time (``actions`` counts
    the actions returned)."""

    def __init__(
        self,
        planner: Any,
        make_problem: Callable[[Any, np.ndarray, np.ndarray], Any],
        *,
        replan_every: int = 1,
        seed: int = 0,
    ):
        if replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {replan_every}")
        self.planner, self.make_problem = planner, make_problem
        self.replan_every = replan_every
        self.generator = torch.Generator().manual_seed(seed)
        self.plan_seconds, self.plan_cpu_seconds, self.actions = 0.0, 0.0, 0
        self.goal: np.ndarray | None = None
        self._queue: list[Any] = []

    def reset(self, goal: np.ndarray) -> None:
        self.goal, self._queue = np.asarray(goal), []

    def act(self, frames: Any, state: np.ndarray) -> Any:
        """The next action for the last W raw observations ``frames`` and the env's state."""
        if not self._queue:
            start, cpu = time.perf_counter(), time.process_time()
            problem = self.make_problem(frames, state, self.goal)
            plan = self.planner.plan(problem, self.generator)  # [H, *act]
            self.plan_seconds += time.perf_counter() - start
            self.plan_cpu_seconds += time.process_time() - cpu  # every thread of the process
            self._queue = [a.numpy() for a in plan[: self.replan_every]]
        self.actions += 1
        action = self._queue.pop(0)
        return (
            int(action)
            if action.ndim == 0 and not np.issubdtype(action.dtype, np.floating)
            else action
        )


def latent_problems(
    model: Any, probe: Any, task: ControlTask, *, horizon: int, action_space: Any
) -> Callable[[Any, np.ndarray, np.ndarray], LatentProblem]:
    """``make_problem`` of a trained run: plan in its latent space (the state is not used)."""

    def make(frames: Any, state: np.ndarray, goal: np.ndarray) -> LatentProblem:
        return LatentProblem(
            model,
            probe,
            task,
            np.stack(list(frames)),
            goal,
            horizon=horizon,
            action_space=action_space,
        )

    return make


def latent_policy(
    run_dir: str | Path,
    planner: str = "cem",
    *,
    planner_params: dict[str, Any] | None = None,
    horizon: int | None = None,
    replan_every: int = 1,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[MPCPolicy, Any]:
    """(policy, loaded run) for ``run_dir``: its model, its probe (fitted on its training
    windows: needs the data file), the env's task, and the registered ``planner``."""
    from lejepa_core.control.setup import planning_setup

    setup = planning_setup(run_dir, planner, planner_params=planner_params, device=device)
    h = horizon or setup.plan_horizon
    make = latent_problems(
        setup.model, setup.probe, setup.task, horizon=h, action_space=setup.action_space
    )
    return MPCPolicy(setup.planner, make, replan_every=replan_every, seed=seed), setup
