"""``lejepa plan RUN_DIR``: goal-reaching tasks with a trained action-conditioned run.

Writes ``RUN_DIR/plan.json`` (every policy's success rate, final distance, planning time per
action, episodes) and ``RUN_DIR/plan.png`` (trajectories against goals), prints a table.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

PLAN_PNG = "plan.png"


def _params(values: tuple[str, ...]) -> dict:
    """``--param samples=256`` -> {"samples": 256} (values read as JSON, else strings)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@click.command("plan")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--planner", default="cem", show_default=True, help="A registered planner.")
@click.option("--param", "params", multiple=True, help="Planner parameter KEY=VALUE (repeatable).")
@click.option(
    "--tasks", default=50, show_default=True, type=click.IntRange(1), help="Held-out tasks."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Task seed offset.")
@click.option(
    "--replan-every",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Plan every N steps and play the plan's first N actions.",
)
@click.option(
    "--policies",
    default="latent,oracle,random,noop",
    show_default=True,
    help="Comma-separated subset.",
)
@click.option("--device", default="cpu", show_default=True, help="Where the model runs.")
def plan_command(run_dir, planner, params, tasks, seed, replan_every, policies, device):
    """Plan in RUN_DIR's latent space toward goals its env defines; compare with the oracle
    (same planner on the true simulator), random actions and no-op (docs/control.md)."""
    from lejepa_core.control.evaluate import POLICIES, evaluate_planning
    from lejepa_core.control.setup import planning_setup
    from lejepa_core.errors import UserInputError
    from lejepa_core.report.canvas import figure_png
    from lejepa_core.report.plan import PLAN_JSON, plan_figure

    chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
    unknown = [p for p in chosen if p not in POLICIES]
    if unknown or not chosen:
        raise UserInputError(f"--policies: unknown {unknown}; choose from {', '.join(POLICIES)}")
    setup = planning_setup(run_dir, planner, planner_params=_params(params), device=device)
    results = evaluate_planning(
        setup, tasks=tasks, seed=seed, replan_every=replan_every, policies=chosen
    )
    report = {
        "run": str(run_dir),
        "planner": planner,
        "planner_params": _plain(setup.planner.params),
        "tasks": tasks,
        "seed": seed,
        "replan_every": replan_every,
        "plan_horizon": setup.plan_horizon,
        "task": _plain(setup.task),
        "policies": results,
    }
    if "latent" in results and "oracle" in results and results["oracle"]["success_rate"] > 0:
        report["latent_over_oracle"] = (
            results["latent"]["success_rate"] / results["oracle"]["success_rate"]
        )
    if "latent" in results and "random" in results and results["random"]["success_rate"] > 0:
        report["latent_over_random"] = (
            results["latent"]["success_rate"] / results["random"]["success_rate"]
        )
    _write(Path(run_dir) / PLAN_JSON, json.dumps(report, indent=1).encode())
    _write(Path(run_dir) / PLAN_PNG, figure_png(plan_figure(report)))
    click.echo(
        f"{'policy':<8} {'success':>8} {'final dist':>11} {'s/action':>9} {'cpu s/action':>13}"
    )
    for name, r in results.items():
        click.echo(
            f"{name:<8} {r['success_rate']:>8.0%} {r['final_distance']:>11.3f} {r['seconds_per_action']:>9.3f} {r['cpu_seconds_per_action']:>13.3f}"
        )
    click.echo(f"wrote {Path(run_dir) / PLAN_JSON} and {PLAN_PNG}")


def _write(path: Path, data: bytes) -> None:
    """Atomic: a temporary file beside ``path`` (``files.temp_prefix``), then a rename."""
    import os

    from lejepa_core.files import temp_prefix

    tmp = path.with_name(f"{temp_prefix(path.name)}{os.urandom(4).hex()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _plain(obj) -> dict:
    import attrs

    return json.loads(json.dumps(attrs.asdict(obj)))
