"""``lejepa plan``'s evaluation: goal-reaching tasks on held-out starts, four policies.

Task i starts from ``env.reset(seed=seed + i)`` (seeds far from any dataset's: held-out
starts) with a goal drawn from ``numpy.random.default_rng(seed + i)``; the first W - 1 steps
play the env's no-op (``metadata["noop_action"]``) to fill the context. Then each policy has
``task.horizon`` steps; success: the goal elements come within ``success_distance`` of the
goal at some step (the episode ends there). Policies, on the same starts and goals:

- ``latent``: the planner on the run's model (``problem.LatentProblem``);
- ``oracle``: the same planner, same budget, on the true simulator (``SimulatorProblem``);
- ``random``: uniformly random actions; ``noop``: the no-op action throughout.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import gymnasium
import numpy as np

from lejepa_core.control.policy import MPCPolicy, latent_problems
from lejepa_core.control.problem import SimulatorProblem
from lejepa_core.control.tasks import env_state

SEED_BASE = 7_000_000  # task i starts from env.reset(seed=SEED_BASE + seed + i)
POLICIES = ("latent", "oracle", "random", "noop")


def _noop(env: Any) -> Any:
    noop = env.metadata.get("noop_action")
    if noop is not None:
        return noop
    return np.zeros(env.action_space.shape, env.action_space.dtype)


def run_task(env: Any, setup: Any, policy: Any, index: int, seed: int) -> dict[str, Any]:
    """One task for one policy (an ``MPCPolicy``, or a callable ``(rng) -> action``)."""
    task, start_seed = setup.task, SEED_BASE + seed + index
    rng = np.random.default_rng(start_seed)
    goal = task.sample_goal(rng)
    obs, info = env.reset(seed=start_seed)
    frames = deque([obs], maxlen=setup.context_frames)
    for _ in range(setup.context_frames - 1):
        obs, _, _, _, info = env.step(_noop(env))
        frames.append(obs)
    state = env_state(obs, info)
    path = [state.reshape(-1)[list(task.goal_indices)].tolist()]
    if isinstance(policy, MPCPolicy):
        policy.reset(goal)
    success, steps = False, 0
    while steps < task.horizon:
        steps += 1
        action = policy.act(frames, state) if isinstance(policy, MPCPolicy) else policy(rng)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs)
        state = env_state(obs, info)
        path.append(state.reshape(-1)[list(task.goal_indices)].tolist())
        if float(task.distance(state.reshape(-1), goal)) <= task.success_distance:
            success = True
            break
        if terminated or truncated:
            break
    return {
        "success": success,
        "steps": steps,
        "final_distance": float(task.distance(state.reshape(-1), goal)),
        "goal": np.asarray(goal).tolist(),
        "path": path,
    }


def evaluate_planning(
    setup: Any,
    *,
    tasks: int = 50,
    seed: int = 0,
    replan_every: int = 1,
    policies: tuple[str, ...] = POLICIES,
    progress: Any = None,
) -> dict[str, Any]:
    """Every policy on the same ``tasks`` tasks -> ``plan.json``'s content."""
    env = gymnasium.make(setup.env_id, **setup.env_kwargs)
    h, samples = setup.plan_horizon, int(getattr(setup.planner.params, "samples", 1))
    oracle_env = None
    results: dict[str, Any] = {}
    for name in policies:
        if name == "latent":
            make = latent_problems(
                setup.model, setup.probe, setup.task, horizon=h, action_space=setup.action_space
            )
            policy: Any = MPCPolicy(setup.planner, make, replan_every=replan_every, seed=seed)
        elif name == "oracle":
            oracle_env = gymnasium.make_vec(setup.env_id, num_envs=samples, **setup.env_kwargs)

            def make(frames, state, goal, _env=oracle_env):
                return SimulatorProblem(
                    _env, setup.task, state, goal, horizon=h, action_space=setup.action_space
                )

            policy = MPCPolicy(setup.planner, make, replan_every=replan_every, seed=seed)
        elif name == "random":
            space = setup.action_space
            space.seed(seed)
            policy = lambda rng, space=space: space.sample()  # noqa: E731
        else:
            noop = _noop(env)
            policy = lambda rng, noop=noop: noop  # noqa: E731
        start = time.perf_counter()
        episodes = []
        for i in range(tasks):
            episodes.append(run_task(env, setup, policy, i, seed))
            if progress is not None:
                progress(name, i + 1, tasks)
        seconds = time.perf_counter() - start
        results[name] = summarize(episodes, policy, seconds)
    env.close()
    if oracle_env is not None:
        oracle_env.close()
    return results


def summarize(episodes: list[dict[str, Any]], policy: Any, seconds: float) -> dict[str, Any]:
    planned = isinstance(policy, MPCPolicy) and policy.actions > 0
    return {
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "final_distance": float(np.mean([e["final_distance"] for e in episodes])),
        "steps": float(np.mean([e["steps"] for e in episodes])),
        "seconds_per_action": policy.plan_seconds / policy.actions if planned else 0.0,
        "cpu_seconds_per_action": policy.plan_cpu_seconds / policy.actions if planned else 0.0,
        "wall_seconds": seconds,
        "episodes": episodes,
    }
