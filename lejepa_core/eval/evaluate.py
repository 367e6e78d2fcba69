"""``lejepa eval RUN_DIR``: probe and baseline figures of a trained run -> ``eval.json``.

1. The run's probe (``LoadedRun.fit_probe``: ridge regression from target-encoder latents of
   *training* episodes to the state, or to one-hot cells for integer grids) is scored on
   *validation* episodes.
2. The model's predicted latents ``z_hat_{t+k}`` (``JEPAModel.predict``) of validation windows
   with exactly that k, and the autoregressive rollout to the same k (``eval.rollout``), are
   decoded with the same probe and compared with baselines on the same samples and with the
   probe floor (the probe applied to the true target latents).
3. In latent space (``latent``): err/σ per k of the direct prediction, the rollout and copy-last
   through the target encoder (``eval.rollout.latent_figures``): the drift.

What the figures are grouped by, and which baselines exist, comes from the env's metadata
(``spec.env``): :mod:`lejepa_core.eval.state` and :mod:`lejepa_core.eval.grid`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lejepa_core.eval.grid import evaluate_grid
from lejepa_core.eval.grid_table import print_grid
from lejepa_core.eval.load import PROBE_SEED, LoadedRun, load_run
from lejepa_core.eval.rollout import latent_figures, rollout_horizon
from lejepa_core.eval.samples import Samples, collect
from lejepa_core.eval.state import evaluate_state
from lejepa_core.eval.two_frames import evaluate_two_frames

EVAL_JSON = "eval.json"


def eval_samples(
    run: LoadedRun, *, batches: int = 16, seed: int = PROBE_SEED
) -> tuple[Samples, dict[int, Samples]]:
    """(val, per_k): ``batches`` fixed batches of validation windows (the probe's score) and,
    per trained horizon k, half as many of windows with exactly that k, collected with the
    direct prediction, the rollout (``eval.rollout``) and copy-last in the target's space."""
    val_sampler = run.sampler("val")
    val = collect(
        run.model,
        run.target_encoder,
        val_sampler.fixed_batches(run.batch_size, batches, seed + 1),
        with_prediction=False,
    )
    step = rollout_horizon(run.recipe.data.horizons)
    per_k = {
        k: collect(
            run.model,
            run.target_encoder,
            val_sampler.fixed_batches(run.batch_size, max(1, batches // 2), seed + 2 + k, k=k),
            with_prediction=True,
            rollout_step=step,
        )
        for k in run.recipe.data.horizons
    }
    return val, per_k


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    device: str | None = None,
    batches: int = 16,
    alpha: float = 1e-3,
    seed: int = PROBE_SEED,
) -> dict[str, Any]:
    """Probe and baseline figures of a run; written to ``RUN_DIR/eval.json`` and returned
    (with ``path`` added). ``batches`` batches of training windows fit the probe, as many of
    validation windows score it, half as many per k score the decoded predictions. The probe's
    ``alpha``, ``batches`` and ``seed`` are recorded, so the report fits the same probe."""
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    probe = run.fit_probe(alpha=alpha, batches=batches, seed=seed)
    val, per_k = eval_samples(run, batches=batches, seed=seed)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "env_id": run.data.env_id,
        "probe": {
            "kind": "ridge",
            "input": "target encoder on one frame (the target frame t+k) [D] -> its state",
            "alpha": alpha,
            "batches": batches,
            "seed": seed,
            "fit_samples": probe.samples,
            "eval_samples": val.size,
        },
    }
    if probe.cell_values is not None:
        result.update(evaluate_grid(run, probe, val, per_k, batches=batches, seed=seed))
    else:
        result.update(evaluate_state(run.spec.env, probe, val, per_k))
        two = evaluate_two_frames(run, alpha=alpha, batches=batches, seed=seed, val_seed=seed + 1)
        if two is not None:  # velocities need two frames: eval/two_frames.py
            result["two_frame_probe"] = two
    result["latent"] = latent_figures(per_k, run.recipe.data.horizons)
    path = Path(run_dir) / EVAL_JSON
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    result["path"] = str(path)
    return result


def recorded_probe_fit(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """``LoadedRun.fit_probe``'s arguments as an eval.json records them (its ``probe``), so that
    the report decodes with the probe eval.json used; ``{}`` (the defaults) without one."""
    probe = (evaluation or {}).get("probe") or {}
    return {key: probe[key] for key in ("alpha", "batches", "seed") if key in probe}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _column(estimator: str, kind: str) -> str:
    """The table heading of an estimator."""
    if estimator == "copy_last":
        return "copy last" if kind == "state" else "copy last grid"
    return estimator.replace("_", " ")


def _caption(result: dict[str, Any], *, decoded: bool) -> str:
    """What the columns are (the probe floor only in the ``decoded`` table), and the note of a
    rollout that cannot use k = 1."""
    latent = result.get("latent", {})
    line = f"rollout: k={latent.get('rollout_horizon', 1)} applied repeatedly"
    if decoded:
        line = (
            f"model: direct prediction; {line}; probe floor: the probe on the true target "
            "latents (its own error)"
        )
    note = latent.get("rollout_note")
    return line + (f"\nnote: {note}" if note else "")


def _latent_table(result: dict[str, Any], table_class: Any) -> Any:
    """err/σ per k in latent space: direct, rollout, copy-last in the target's space."""
    latent = result["latent"]
    table = table_class(
        title=f"latent err/σ (σ = {latent['target_std']:.4g}, std of all target latents): "
        "direct prediction against the rollout (drift)",
        caption=_caption(result, decoded=False),
    )
    names = ("model", "rollout", "copy_last")
    for heading in ("k", "model", "rollout", "copy last (target encoder)"):
        table.add_column(heading, justify="right")
    for row in result["per_k"]:
        k = row["k"]
        table.add_row(str(k), *(_number(latent.get(f"{name}/err_signal/k{k}")) for name in names))
    return table


def print_eval(result: dict[str, Any], console: Any = None) -> None:
    """The tables of ``evaluate_run``'s result (rich): for states, R^2 and the decoded MAE per k
    and estimator, a column per feature group of the env (in its order); for grids the decoded
    cell accuracy; then err/σ in latent space, direct against the rollout."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    estimators = result["estimators"]
    if result["kind"] == "state":
        groups: dict[str, list[str]] = result["groups"]
        # a group of every feature repeats "overall"
        r2 = {
            group: value
            for group, value in result["r2"].items()
            if group == "overall" or len(groups.get(group, ())) < len(result["feature_names"])
        }
        console.print(
            "probe R^2 on validation episodes (target latents -> state): "
            + ", ".join(f"{group} {_number(value)}" for group, value in r2.items())
        )
        two = result.get("two_frame_probe")
        if two:
            console.print(
                "two-frame probe R^2 (latents of frames t-1, t -> state at t): "
                + ", ".join(f"{group} {_number(value)}" for group, value in two["r2"].items())
            )
        console.print(
            "feature groups: "
            + "; ".join(f"{group} ({', '.join(names)})" for group, names in groups.items())
        )
        dt = f" (dt={result['dt']:g})" if result.get("dt") is not None else ""
        table = Table(
            title=f"decoded predictions: MAE in state units per feature group{dt}",
            caption=_caption(result, decoded=True),
        )
        columns = {group: f"mae_{group}" for group in groups}
        for heading in ("k", "estimator", *columns):
            table.add_column(heading, justify="left" if heading == "estimator" else "right")
        for row in result["per_k"]:
            for i, estimator in enumerate(estimators):
                table.add_row(
                    str(row["k"]) if i == 0 else "",
                    _column(estimator, result["kind"]),
                    *(_number(row.get(f"{estimator}/{figure}")) for figure in columns.values()),
                    end_section=i == len(estimators) - 1,
                )
        console.print(table)
    else:
        print_grid(result, console, Table, caption=_caption(result, decoded=True))
    if "latent" in result:
        console.print(_latent_table(result, Table))
    console.print(f"written: {result.get('path', '')}")
    if not all(math.isfinite(value) for value in result.get("r2", {}).values()):
        console.print("warning: a probe R^2 is not finite (a constant feature group?)")
