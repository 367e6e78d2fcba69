"""Planning problems: score candidate action sequences with a learned model or the simulator.

Shape legend: ``N`` candidate sequences, ``H`` horizon, ``*act`` one action, ``W`` context
frames, ``D`` latent_dim, ``S`` flattened state size, ``G`` goal size.

A problem has ``horizon`` H, ``action_space`` (a gymnasium space) and ``cost(actions [N, H,
*act]) -> [N]``: the mean over the H steps of the distance between the goal and the goal
elements of the state reached (``ControlTask.distance``), lower is better. A planner
(``lejepa_core.interfaces.Planner``) sees only that, so the learned model and the true
simulator are searched the same way with the same budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lejepa_core.control.tasks import ControlTask


class LatentProblem:
    """The learned model's view: the context frames are encoded once; for every candidate and
    every step k = 1..H the action-conditioned predictor gives the latent at t + k from the
    first k actions (multi-k, no autoregression); the run's probe decodes it to the state.

    model: a ``WorldModel`` (``lejepa_core.load``); probe: ``Probe`` (target latents -> state);
    context_obs: raw [W, *obs]; goal: [G].
    """

    def __init__(
        self,
        model: Any,
        probe: Any,
        task: ControlTask,
        context_obs: Any,
        goal: np.ndarray,
        *,
        horizon: int,
        action_space: Any,
    ):
        self.model, self.probe, self.task = model, probe, task
        self.horizon, self.action_space = int(horizon), action_space
        self.z_context = model.encode(np.asarray(context_obs), context=True)  # [W, D]
        self.goal = torch.as_tensor(goal, dtype=torch.float64)

    @torch.no_grad()
    def cost(self, actions: torch.Tensor) -> torch.Tensor:
        n, h = actions.shape[:2]
        k = torch.arange(1, h + 1).repeat(n)  # [N*H]: step k of candidate i at row i*H + k-1
        seq = actions.repeat_interleave(h, 0)  # [N*H, H, *act]
        z = self.z_context.unsqueeze(0).expand(n * h, -1, -1)  # [N*H, W, D]
        predicted = self.model.predict_latent(z, k, actions=seq)  # [N*H, D]
        states = self.probe.decode(predicted.cpu()).reshape(n, h, -1).double()  # [N, H, S]
        return self.task.distance(states, self.goal).mean(1)  # [N]


class SimulatorProblem:
    """The oracle's view: ``vector_env`` (N copies) reset to the current true state and
    stepped through each candidate; same cost as ``LatentProblem``. ``state`` is the env's
    state (``tasks.env_state``); ``vector_env.num_envs`` must equal the planner's ``samples``."""

    def __init__(
        self,
        vector_env: Any,
        task: ControlTask,
        state: np.ndarray,
        goal: np.ndarray,
        *,
        horizon: int,
        action_space: Any,
    ):
        self.env, self.task, self.state = vector_env, task, np.asarray(state)
        self.horizon, self.action_space = int(horizon), action_space
        self.goal = np.asarray(goal, dtype=np.float64)

    def cost(self, actions: torch.Tensor) -> torch.Tensor:
        n, h = actions.shape[:2]
        if n != self.env.num_envs:
            raise ValueError(
                f"the oracle's vector env has {self.env.num_envs} copies, got {n} candidates"
            )
        start = np.broadcast_to(self.state, (n, *self.state.shape)).copy()
        self.env.reset(options={self.task.reset_state_option: start})
        acts = actions.numpy()
        total = np.zeros(n)
        for step in range(h):
            obs, _, _, _, info = self.env.step(acts[:, step])
            states = np.asarray(info["state"] if "state" in info else obs, dtype=np.float64)
            total += self.task.distance(states.reshape(n, -1), self.goal)
        return torch.as_tensor(total / h)


class LatentGoalProblem:
    """Planning toward a goal *observation*: the cost is the mean over the H steps of the
    Euclidean distance between the predicted latent and the goal's latent (the target
    encoder's, the space predictions live in); no probe, no task metadata. ``context_obs``:
    raw [W, *obs]; ``goal_obs``: raw [*obs]. For goals that fix the whole observation (every
    object), where ``LatentProblem`` fixes chosen state elements."""

    def __init__(
        self, model: Any, context_obs: Any, goal_obs: Any, *, horizon: int, action_space: Any
    ):
        self.model, self.horizon, self.action_space = model, int(horizon), action_space
        self.z_context = model.encode(np.asarray(context_obs), context=True)  # [W, D]
        self.z_goal = model.encode(np.asarray(goal_obs))  # [D]

    @torch.no_grad()
    def cost(self, actions: torch.Tensor) -> torch.Tensor:
        n, h = actions.shape[:2]
        k = torch.arange(1, h + 1).repeat(n)  # [N*H]
        seq = actions.repeat_interleave(h, 0)  # [N*H, H, *act]
        z = self.z_context.unsqueeze(0).expand(n * h, -1, -1)  # [N*H, W, D]
        predicted = self.model.predict_latent(z, k, actions=seq).reshape(n, h, -1)  # [N, H, D]
        return (predicted - self.z_goal).norm(dim=-1).mean(1).cpu()  # [N]
