"""What planning with a run needs, loaded once: model, probe, task, action space, planner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from lejepa_core.control.tasks import ControlTask
from lejepa_core.errors import UserInputError


@attrs.define(kw_only=True)
class PlanningSetup:
    """model: ``WorldModel``; probe: target latents -> state; planner: a built ``Planner``;
    plan_horizon: min(the run's largest k, the task's horizon)."""

    model: Any
    probe: Any
    task: ControlTask
    action_space: Any
    planner: Any
    planner_name: str
    env_id: str
    env_kwargs: dict[str, Any]
    plan_horizon: int
    context_frames: int


def build_planner(name: str, params: dict[str, Any] | None, spec: Any) -> Any:
    """The registered planner ``name`` with ``params`` (a dict of its Params' fields)."""
    from lejepa_core.registry import get_registry
    from lejepa_core.structure import structure_attrs

    cls = get_registry().get("planner", name)
    errors: list[str] = []
    parsed = structure_attrs(dict(params or {}), cls.Params, f"planner {name}", errors)
    if errors:
        raise UserInputError("; ".join(errors))
    return cls(parsed, spec)


def planning_setup(
    run_dir: str | Path,
    planner: str,
    *,
    planner_params: dict[str, Any] | None = None,
    device: str = "cpu",
) -> PlanningSetup:
    from lejepa_core.data.schema import space_from_json
    from lejepa_core.eval.load import load_run
    from lejepa_core.interfaces import takes_actions
    from lejepa_core.model import WorldModel

    run = load_run(run_dir, device=device, data=True)
    spec = run.spec
    if not takes_actions(run.model.predictor):
        raise UserInputError(
            f"{run_dir}: the run's predictor ({run.recipe.predictor.name}) takes no actions; "
            "planning needs an action-conditioned predictor (e.g. action_residual)"
        )
    if spec.env.action_space is None:
        raise UserInputError(f"{run_dir}: the run's data names no action space")
    task = ControlTask.from_metadata(spec.env.control, run.model_input.env_id)
    probe = run.fit_probe()
    model = WorldModel(
        recipe=run.recipe,
        spec=spec,
        model_input=run.model_input,
        model=run.model,
        target_encoder=run.target_encoder,
        run_dir=run.path,
        checkpoint=run.checkpoint,
    )
    return PlanningSetup(
        model=model,
        probe=probe,
        task=task,
        action_space=space_from_json(spec.env.action_space),
        planner=build_planner(planner, planner_params, spec),
        planner_name=planner,
        env_id=run.model_input.env_id,
        env_kwargs=dict(run.model_input.env_kwargs),
        plan_horizon=min(spec.max_horizon, task.horizon),
        context_frames=spec.context_frames,
    )
