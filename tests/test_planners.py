"""Planners as a component kind (register_planners), the built-in cem / mppi / random on
problems with a known optimum, the simulator problem (the oracle) and the MPC policy."""

import attrs
import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from lejepa_core import hookimpl
from lejepa_core import registry as registry_module
from lejepa_core.control.policy import MPCPolicy
from lejepa_core.control.problem import SimulatorProblem
from lejepa_core.control.setup import build_planner
from lejepa_core.control.tasks import ControlTask
from lejepa_core.errors import UserInputError
from lejepa_core.interfaces import Planner
from lejepa_core.registry import get_plugin_manager, get_registry
from lejepa_plugins.planners import SequenceDistribution


class MatchProblem:
    """Discrete: cost = number of steps whose action differs from a target sequence."""

    def __init__(self, target, n):
        self.target = torch.as_tensor(target)
        self.horizon, self.action_space = len(target), spaces.Discrete(n)
        self.calls = 0

    def cost(self, actions):
        self.calls += actions.shape[0]
        return (actions != self.target).sum(1).float()


class BoxProblem:
    """Box [2]: cost = distance of the summed actions to a point."""

    def __init__(self):
        self.horizon = 5
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.goal = torch.tensor([3.0, -2.0])

    def cost(self, actions):
        return (actions.sum(1) - self.goal).norm(dim=-1)


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_cem_and_mppi_find_a_discrete_target_sequence(name):
    problem = MatchProblem([3, 0, 7, 7, 1, 5], 9)
    planner = build_planner(name, {"samples": 200, "iterations": 6}, None)
    plan = planner.plan(problem, torch.Generator().manual_seed(0))
    assert plan.tolist() == [3, 0, 7, 7, 1, 5]
    assert problem.calls == 200 * 6  # the budget: samples x iterations


def test_random_shooting_is_worse_than_cem_at_the_same_budget():
    target = [1, 2, 3, 4, 5, 6, 7, 8]
    costs = {}
    for name in ("random", "cem"):
        problem = MatchProblem(target, 9)
        plan = build_planner(name, {"samples": 100, "iterations": 5}, None).plan(
            problem, torch.Generator().manual_seed(1)
        )
        costs[name] = float(problem.cost(plan[None])[0])
    assert costs["cem"] == 0 and costs["random"] >= 3


@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_planners_search_box_actions_within_bounds(name):
    problem = BoxProblem()
    plan = build_planner(name, {"samples": 300, "iterations": 8}, None).plan(
        problem, torch.Generator().manual_seed(0)
    )
    assert plan.shape == (5, 2) and plan.abs().max() <= 1.0
    assert float(problem.cost(plan[None])[0]) < 0.3


def test_multidiscrete_samples_stay_in_each_component_range():
    space = spaces.MultiDiscrete([2, 5], start=[1, -2])
    values = SequenceDistribution(space, 4).sample(500, torch.Generator().manual_seed(0))
    assert values.shape == (500, 4, 2)
    assert set(values[..., 0].unique().tolist()) == {1, 2}
    assert set(values[..., 1].unique().tolist()) == {-2, -1, 0, 1, 2}


def test_planner_parameters_are_checked():
    with pytest.raises(UserInputError, match="samples"):
        build_planner("cem", {"samples": "many"}, None)
    with pytest.raises(UserInputError, match="unknown"):
        build_planner("cem", {"sample": 3}, None)


def test_a_third_party_planner_registers_through_register_planners(monkeypatch):
    class First(Planner):
        """Always the first action."""

        @attrs.frozen(kw_only=True)
        class Params:
            value: int = 0

        def plan(self, problem, generator):
            return torch.full((problem.horizon,), self.params.value)

    class Plugin:
        @hookimpl
        def register_planners(self, register):
            register("first", First)

    monkeypatch.delenv("LEJEPA_DISABLE_PLUGINS", raising=False)
    registry_module.reset()
    try:
        pm = get_plugin_manager()
        pm.register_plugin(Plugin(), "first-plugin", distribution="first-dist", version="1")
        assert {"cem", "mppi", "random", "first"} <= set(get_registry().names("planner"))
        assert get_registry().names("action_encoder") == ["default"]
        plan = build_planner("first", {"value": 2}, None).plan(MatchProblem([0, 0], 3), None)
        assert plan.tolist() == [2, 2]
    finally:
        registry_module.reset()


TASK = ControlTask(
    goal_indices=(0, 1), goal_low=(0.1, 0.1), goal_high=(0.9, 0.9), success_distance=0.05, horizon=5
)


def test_the_oracle_problem_replays_candidates_from_the_current_state():
    env = gymnasium.make("lejepa/BouncingBalls-v0", num_balls=2)
    obs, _ = env.reset(seed=4)
    vector = gymnasium.make_vec("lejepa/BouncingBalls-v0", num_envs=3, num_balls=2)
    goal = np.array([0.5, 0.5])
    problem = SimulatorProblem(vector, TASK, obs, goal, horizon=4, action_space=spaces.Discrete(9))
    actions = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 6, 0, 3]])
    costs = problem.cost(actions)
    for i in range(3):  # the single env from the same state, the same actions
        single = gymnasium.make("lejepa/BouncingBalls-v0", num_balls=2)
        single.reset(options={"state": obs})
        distances = []
        for a in actions[i].tolist():
            state, *_ = single.step(a)
            distances.append(np.linalg.norm(state[0, :2] - goal))
        assert float(costs[i]) == pytest.approx(np.mean(distances), abs=1e-6)
    assert float(costs[1]) != pytest.approx(float(costs[0]))  # pushes change the outcome


class CountingPlanner(Planner):
    def __init__(self):
        super().__init__(None)
        self.calls = 0

    def plan(self, problem, generator):
        self.calls += 1
        return torch.arange(self.calls * 10, self.calls * 10 + 4)


@pytest.mark.parametrize(
    "every, calls, played", [(1, 5, [10, 20, 30, 40, 50]), (3, 2, [10, 11, 12, 20, 21])]
)
def test_mpc_policy_replans_every_few_steps(every, calls, played):
    planner = CountingPlanner()
    policy = MPCPolicy(planner, lambda frames, state, goal: None, replan_every=every)
    policy.reset(np.zeros(2))
    actions = [policy.act([], np.zeros(1)) for _ in range(5)]
    assert actions == played and planner.calls == calls and policy.actions == 5
    with pytest.raises(ValueError, match="replan_every"):
        MPCPolicy(planner, None, replan_every=0)


class StubModel:
    """Latents are 2-D positions; action a moves the x coordinate by a (first k actions)."""

    def encode(self, obs, context=False):
        return torch.as_tensor(obs, dtype=torch.float32).reshape(*np.shape(obs)[:-1], 2)

    def predict_latent(self, z, k, actions=None):
        steps = torch.arange(actions.shape[1])[None, :] < k[:, None]  # [M, H]
        moved = (actions.float() * steps).sum(1)  # [M]
        return z[:, -1] + torch.stack([moved, torch.zeros_like(moved)], -1)


class StubProbe:
    def decode(self, z):
        return z  # the "state" is the latent


def test_latent_problems_score_predicted_steps_against_the_goal():
    from lejepa_core.control.problem import LatentGoalProblem, LatentProblem

    context = np.zeros((2, 2))  # W = 2 frames at the origin
    actions = torch.tensor([[1, 1, 1], [0, 0, 0], [3, 0, 0]])
    goal_problem = LatentGoalProblem(
        StubModel(), context, np.array([3.0, 0.0]), horizon=3, action_space=spaces.Discrete(4)
    )
    # positions 1, 2, 3 -> distances 2, 1, 0; origin -> 3, 3, 3; 3, 3, 3 -> 0, 0, 0
    assert goal_problem.cost(actions).tolist() == pytest.approx([1.0, 3.0, 0.0])
    task = ControlTask(
        goal_indices=(0,), goal_low=(0.0,), goal_high=(5.0,), success_distance=0.1, horizon=3
    )
    state_problem = LatentProblem(
        StubModel(),
        StubProbe(),
        task,
        context,
        np.array([2.0]),
        horizon=3,
        action_space=spaces.Discrete(4),
    )
    assert state_problem.cost(actions).tolist() == pytest.approx([2 / 3, 2.0, 1.0])


def test_random_shooting_samples_box_actions_uniformly_within_the_bounds():
    low, high = np.array([-1.0, 0.0], np.float32), np.array([1.0, 4.0], np.float32)
    space = spaces.Box(low, high, dtype=np.float32)
    values = SequenceDistribution(space, 3, uniform=True).sample(
        4000, torch.Generator().manual_seed(0)
    )
    assert values.shape == (4000, 3, 2)
    assert values[..., 0].min() >= -1 and values[..., 1].max() <= 4
    assert values[..., 1].mean().item() == pytest.approx(2.0, abs=0.1)
    assert values[..., 1].std().item() == pytest.approx(4 / 12**0.5, abs=0.05)  # uniform's std
