"""Built-in planners: search over action sequences for the lowest cost of a planning problem.

Shape legend: ``N`` candidate sequences (``samples``), ``H`` the problem's horizon, ``*act``
one action (``()`` for Discrete, ``[M]`` for MultiDiscrete, the Box's shape).

Every planner draws ``samples`` sequences per iteration, ``iterations`` times, and returns the
lowest-cost sequence it evaluated ([H, *act]). The problem's ``cost(actions [N, H, *act]) ->
[N]`` hides whether a learned model or the true simulator scores them, so the same planner with
the same budget serves both (``lejepa plan``'s oracle).

``cem``     cross-entropy method: refit a per-step distribution to the ``elites`` best.
``mppi``    model-predictive path integral: refit with weights ``softmax(-cost / temperature)``.
``random``  random shooting: the best of ``samples x iterations`` uniform sequences.

Distributions: discrete actions (Discrete, MultiDiscrete) are independent categoricals per step
and component (probabilities [H, M, n_max], impossible values at 0); Box actions independent
Gaussians per step and element, clipped to the bounds.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from gymnasium import spaces

from lejepa_core import hookimpl
from lejepa_core.interfaces import Planner
from lejepa_core.params import in_range, param, positive


class SequenceDistribution:
    """A per-step distribution over action sequences of ``space`` and horizon ``horizon``."""

    def __init__(
        self, space: spaces.Space, horizon: int, *, floor: float = 0.0, uniform: bool = False
    ):
        """uniform: Box actions uniform within the (finite) bounds instead of Gaussian."""
        self.space, self.horizon, self.floor, self.uniform = space, horizon, floor, uniform
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
            nvec = np.atleast_1d(space.n if isinstance(space, spaces.Discrete) else space.nvec)
            start = np.atleast_1d(space.start).astype(np.int64)
            self.nvec = torch.as_tensor(nvec.ravel(), dtype=torch.int64)  # [M]
            self.start = torch.as_tensor(start.ravel())  # [M]
            width = int(self.nvec.max())
            self.valid = torch.arange(width)[None, :] < self.nvec[:, None]  # [M, n_max]
            self.probs = self.valid.float().expand(horizon, -1, -1).clone()  # [H, M, n_max]
            self.probs /= self.probs.sum(-1, keepdim=True)
            self.discrete = True
        elif isinstance(space, spaces.Box):
            self.low = torch.as_tensor(space.low, dtype=torch.float32)
            self.high = torch.as_tensor(space.high, dtype=torch.float32)
            self.mean = ((self.low + self.high) / 2).expand(horizon, *space.shape).clone()
            self.std = ((self.high - self.low) / 2).expand(horizon, *space.shape).clone()
            self.discrete = False
        else:
            raise ValueError(
                f"planners search Discrete, MultiDiscrete and Box actions, got {space}"
            )

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """[n, H, *act] actions (int64 for discrete spaces, float32 for Box)."""
        if not self.discrete and self.uniform:
            u = torch.rand(n, *self.mean.shape, generator=generator)
            return self.low + u * (self.high - self.low)
        if not self.discrete:
            noise = torch.randn(n, *self.mean.shape, generator=generator)
            return torch.minimum(torch.maximum(self.mean + self.std * noise, self.low), self.high)
        h, m, width = self.probs.shape
        flat = self.probs.reshape(h * m, width)
        idx = torch.multinomial(flat, n, replacement=True, generator=generator)  # [H*M, n]
        values = idx.T.reshape(n, h, m) + self.start  # [n, H, M]
        return values[..., 0] if isinstance(self.space, spaces.Discrete) else values

    def refit(self, actions: torch.Tensor, weights: torch.Tensor, smoothing: float) -> None:
        """Move the distribution toward ``actions [n, H, *act]`` weighted by ``weights [n]``
        (summing to 1); ``smoothing``: the share of the old distribution kept."""
        w = weights.float()
        if not self.discrete:
            shape = (-1,) + (1,) * (actions.dim() - 1)
            mean = (w.view(shape) * actions).sum(0)
            var = (w.view(shape) * (actions - mean) ** 2).sum(0)
            self.mean = smoothing * self.mean + (1 - smoothing) * mean
            self.std = smoothing * self.std + (1 - smoothing) * var.sqrt()
            return
        values = actions.reshape(actions.shape[0], self.horizon, -1) - self.start  # [n, H, M]
        onehot = torch.nn.functional.one_hot(values.long(), self.probs.shape[-1]).float()
        new = (w[:, None, None, None] * onehot).sum(0)  # [H, M, n_max]
        probs = smoothing * self.probs + (1 - smoothing) * new
        probs = (probs + self.floor) * self.valid
        self.probs = probs / probs.sum(-1, keepdim=True)


@attrs.frozen(kw_only=True)
class SearchParams:
    samples: int = param(256, "candidate sequences per iteration", positive)
    iterations: int = param(3, "refits of the distribution (random: more samples)", positive)


class _Search(Planner):
    """Sample, score, refit; return the best sequence seen. [H, *act]."""

    def plan(self, problem, generator: torch.Generator) -> torch.Tensor:
        dist = SequenceDistribution(
            problem.action_space, problem.horizon, floor=self.floor, uniform=self.uniform
        )
        best, best_cost = None, float("inf")
        for _ in range(self.params.iterations):
            actions = dist.sample(self.params.samples, generator)  # [N, H, *act]
            cost = problem.cost(actions).float().cpu()  # [N]
            i = int(torch.argmin(cost))
            if float(cost[i]) < best_cost:
                best, best_cost = actions[i], float(cost[i])
            self.refit(dist, actions, cost)
        return best

    floor = 0.0
    uniform = False  # Box: sample uniformly in the bounds (random shooting)

    def refit(self, dist: SequenceDistribution, actions: torch.Tensor, cost: torch.Tensor):
        raise NotImplementedError


class CEMPlanner(_Search):
    """Cross-entropy method: refit a per-step distribution to the elite sequences. -> [H, *act]."""

    @attrs.frozen(kw_only=True)
    class Params(SearchParams):
        elites: int = param(25, "sequences the distribution is refitted to", positive)
        smoothing: float = param(0.1, "share of the old distribution kept", in_range(0.0, 1.0))
        floor: float = param(
            0.01, "added to every probability (discrete): keeps exploring", in_range(0.0, 1.0)
        )

    @property
    def floor(self) -> float:
        return self.params.floor

    def refit(self, dist, actions, cost):
        elites = torch.topk(-cost, min(self.params.elites, cost.shape[0])).indices
        weights = torch.full((elites.shape[0],), 1.0 / elites.shape[0])
        dist.refit(actions[elites], weights, self.params.smoothing)


class MPPIPlanner(_Search):
    """Model-predictive path integral: refit with weights softmax(-cost / temperature). -> [H, *act]."""

    @attrs.frozen(kw_only=True)
    class Params(SearchParams):
        temperature: float = param(
            0.05, "temperature of the weights, in units of the cost's spread (std)", positive
        )
        smoothing: float = param(0.1, "share of the old distribution kept", in_range(0.0, 1.0))
        floor: float = param(
            0.01, "added to every probability (discrete): keeps exploring", in_range(0.0, 1.0)
        )

    @property
    def floor(self) -> float:
        return self.params.floor

    def refit(self, dist, actions, cost):
        scale = cost.std().clamp(min=1e-8) * self.params.temperature
        weights = torch.softmax(-(cost - cost.min()) / scale, 0)
        dist.refit(actions, weights, self.params.smoothing)


class RandomPlanner(_Search):
    """Random shooting: the best of samples x iterations uniform sequences. -> [H, *act]."""

    Params = SearchParams
    uniform = True

    def refit(self, dist, actions, cost):
        pass  # the distribution stays uniform


@hookimpl
def register_planners(register):
    register("cem", CEMPlanner)
    register("mppi", MPPIPlanner)
    register("random", RandomPlanner)
