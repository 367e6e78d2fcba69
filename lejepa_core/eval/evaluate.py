"""``lejepa eval RUN_DIR``: probe and baseline figures of a trained run -> ``eval.json``.

1. The run's probe (``LoadedRun.fit_probe``: ridge regression from target-encoder latents of
   *training* episodes to the state, or to one-hot cells for integer grids) is scored on
   *validation* episodes.
2. The model's predicted latents ``z_hat_{t+k}`` (``JEPAModel.predict``) of validation windows
   with exactly that k are decoded with the same probe and compared with baselines on the same
   samples.

What the figures are grouped by, and which baselines exist, comes from the env's metadata
(``spec.env``): :mod:`lejepa_core.eval.state` and :mod:`lejepa_core.eval.grid`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lejepa_core.eval.grid import evaluate_grid
from lejepa_core.eval.load import PROBE_SEED, load_run
from lejepa_core.eval.samples import collect
from lejepa_core.eval.state import evaluate_state

EVAL_JSON = "eval.json"


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
    validation windows score it, half as many per k score the decoded predictions."""
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    probe = run.fit_probe(alpha=alpha, batches=batches, seed=seed)
    val_sampler = run.sampler("val")
    val = collect(
        run.model,
        run.target_encoder,
        val_sampler.fixed_batches(run.batch_size, batches, seed + 1),
        with_prediction=False,
    )
    per_k = {
        k: collect(
            run.model,
            run.target_encoder,
            val_sampler.fixed_batches(run.batch_size, max(1, batches // 2), seed + 2 + k, k=k),
            with_prediction=True,
        )
        for k in run.recipe.data.horizons
    }
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "env_id": run.data.env_id,
        "probe": {
            "kind": "ridge",
            "alpha": alpha,
            "fit_samples": probe.samples,
            "eval_samples": val.size,
        },
    }
    if probe.cell_values is not None:
        result.update(evaluate_grid(probe, val, per_k))
    else:
        result.update(evaluate_state(run.spec.env, probe, val, per_k))
    path = Path(run_dir) / EVAL_JSON
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    result["path"] = str(path)
    return result


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_eval(result: dict[str, Any], console: Any = None) -> None:
    """The tables of ``evaluate_run``'s result (rich): for states, R^2 and decoded MAE per
    feature group of the env (the groups in the result, in its order)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if result["kind"] == "state":
        groups: dict[str, list[str]] = result["groups"]
        group_names = " / ".join(groups)
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
        console.print(
            "feature groups: "
            + "; ".join(f"{group} ({', '.join(names)})" for group, names in groups.items())
        )
        dt = f" (dt={result['dt']:g})" if result.get("dt") is not None else ""
        table = Table(title=f"decoded predictions: MAE in state units, {group_names}{dt}")
        estimators = result["estimators"]
        table.add_column("k", justify="right")
        for estimator in estimators:
            table.add_column(estimator.replace("_", " "), justify="right")
        for row in result["per_k"]:
            cells = [
                " / ".join(_number(row.get(f"{estimator}/mae_{group}")) for group in groups)
                for estimator in estimators
            ]
            table.add_row(str(row["k"]), *cells)
    else:
        console.print(
            "probe cell accuracy (target latents -> grid): "
            f"{_number(result['probe_cell_accuracy'])}"
        )
        table = Table(title="decoded predicted grids: cell accuracy")
        for column in ("k", "model", "copy last grid"):
            table.add_column(column, justify="right")
        for row in result["per_k"]:
            table.add_row(
                str(row["k"]),
                _number(row["model/cell_accuracy"]),
                _number(row["copy_last/cell_accuracy"]),
            )
    console.print(table)
    console.print(f"written: {result.get('path', '')}")
    if not all(math.isfinite(value) for value in result.get("r2", {}).values()):
        console.print("warning: a probe R^2 is not finite (a constant feature group?)")
