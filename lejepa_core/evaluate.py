"""Evaluation of a trained run: what the latents know about the physical state, and how well
decoded predictions track it against physics baselines (``lejepa eval RUN_DIR`` -> eval.json).

Shape legend: ``N`` samples, ``D`` latent_dim, ``S`` flattened state features, ``B`` batch.

1. A ridge probe ``state ~ z W + b`` is fitted on target-encoder latents of *training*
   episodes (``Batch.target_state``, the raw physical state) and scored on *validation*
   episodes: R^2 per feature group (positions x/y, velocities vx/vy, overall).
2. The predicted latents ``z_hat_{t+k}`` of validation windows are decoded with the same
   probe; the decoded state's mean absolute error (state units) per k is compared with two
   physics baselines on the same samples: copy the last state, and constant velocity
   ``x + k dt v`` (``v`` kept), with ``dt`` from the file's env_kwargs or the env's default.
3. Integer grids (ARC): the probe is ridge regression onto one-hot cell colours, decoded by
   argmax; reports cell accuracy of decoded predictions against copying the last grid.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from lejepa_core.errors import CheckpointError

POSITION_NAMES = ("x", "y")
VELOCITY_NAMES = ("vx", "vy")
NUM_CELL_VALUES = 11


# ----------------------------------------------------------------------------- probe maths
def ridge_fit(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression ``y ~ x @ weight + bias`` in float64 on centred data.

    x: [N, D], y: [N, S] -> weight [D, S], bias [S]. ``alpha`` is relative to the mean
    eigenvalue of ``x^T x`` (scale-free).
    """
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    ridge = alpha * gram.diagonal().mean().clamp_min(1e-12)
    weight = torch.linalg.solve(
        gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), xc.T @ yc
    )
    return weight, y_mean - x_mean @ weight


def ridge_predict(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x: [N, D] -> [N, S] (float32)."""
    return (x.double() @ weight + bias).float()


def r2_score(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """1 - SS_res / SS_tot summed over all columns of ``[N, S]`` (each column centred on its
    own mean): the fraction of the group's variance explained."""
    prediction, target = prediction.double(), target.double()
    ss_res = (prediction - target).square().sum()
    ss_tot = (target - target.mean(0)).square().sum()
    return float(1.0 - ss_res / ss_tot.clamp_min(1e-300))


def constant_velocity(
    state: torch.Tensor,
    k: torch.Tensor,
    dt: float,
    position_idx: list[int],
    velocity_idx: list[int],
) -> torch.Tensor:
    """Extrapolate ``[B, ..., F]`` states ``k`` steps: positions += k * dt * velocities.

    position_idx / velocity_idx: indices of the last axis, paired in order (x with vx, y with vy).
    """
    out = state.clone()
    steps = (k.to(state.dtype) * dt).reshape(-1, *([1] * (state.ndim - 1)))  # [B, 1, ..., 1]
    out[..., position_idx] = state[..., position_idx] + steps * state[..., velocity_idx]
    return out


def feature_groups(names: tuple[str, ...]) -> dict[str, list[int]]:
    """Indices of the last state axis per group: positions, velocities (when named)."""
    groups = {
        "positions": [i for i, n in enumerate(names) if n in POSITION_NAMES],
        "velocities": [i for i, n in enumerate(names) if n in VELOCITY_NAMES],
    }
    return {g: idx for g, idx in groups.items() if idx}


def env_dt(data: Any) -> float:
    """The step length of the file's environment: env_kwargs['dt'], else the env's default."""
    kwargs = dict(getattr(data, "env_kwargs", {}) or {})
    if "dt" in kwargs:
        return float(kwargs["dt"])
    try:
        import gymnasium

        from lejepa_core.registry import ensure_envs_registered

        ensure_envs_registered()
        env = gymnasium.make(data.env_id, **kwargs)
        try:
            config = getattr(env.unwrapped, "config", None)
            return float(getattr(config, "dt", getattr(env.unwrapped, "dt", 0.1)))
        finally:
            env.close()
    except Exception:  # noqa: BLE001 - the baseline falls back to the documented default
        return 0.1


# ----------------------------------------------------------------------------- the run
def load_run(run_dir: str | Path, *, checkpoint: str = "best", device: str | None = None):
    """(recipe, data, model, target_encoder, device) of a run directory, weights loaded."""
    from lejepa_core.data.prepare import open_data
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.checkpoint import load_checkpoint
    from lejepa_core.training.loop import build_model, resolve_device, spec_for_data
    from lejepa_core.training.target import make_ema_copy

    run_dir = Path(run_dir)
    resolved = run_dir / "resolved_recipe.toml"
    if not resolved.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no resolved_recipe.toml)")
    recipe = load_recipe(resolved)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file() and checkpoint == "best":
        path = run_dir / "checkpoints" / "last.pt"
    torch_device = resolve_device(device or "auto")
    state = load_checkpoint(path, map_location=torch_device)
    data = open_data(recipe, torch_device, progress=False)
    model = build_model(recipe, spec_for_data(recipe, data)).to(torch_device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: does not match the run's recipe ({str(exc).splitlines()[0]})"
        ) from None
    target = model.context_encoder
    if state.get("target_encoder") is not None:
        target = make_ema_copy(model.context_encoder)
        target.load_state_dict(state["target_encoder"])
    model.eval()
    target.eval()
    return recipe, data, model, target, torch_device


@torch.no_grad()
def _collect(model, target_encoder, batches, *, with_prediction: bool) -> dict[str, torch.Tensor]:
    """Latents and states of fixed batches: z_target [N, D], z_hat [N, D], state fields."""
    out: dict[str, list[torch.Tensor]] = {
        "z_target": [],
        "z_hat": [],
        "k": [],
        "target_state": [],
        "last_state": [],
    }
    for b in batches:
        out["z_target"].append(target_encoder(b.target_obs).float())
        out["k"].append(b.k)
        if with_prediction:
            z_context = model.context_encoder(b.context_obs.flatten(0, 1)).reshape(
                *b.context_obs.shape[:2], -1
            )
            if model.quantizer is not None:
                z_context = model.quantizer(z_context.flatten(0, 1)).z_q.reshape(z_context.shape)
            out["z_hat"].append(model.predictor(z_context, b.k).float())
        target_state = b.target_state if b.target_state is not None else b.target_obs
        last_state = b.context_state[:, -1] if b.context_state is not None else b.context_obs[:, -1]
        out["target_state"].append(target_state)
        out["last_state"].append(last_state)
    return {key: torch.cat(v) for key, v in out.items() if v}


def _one_hot_cells(grids: torch.Tensor) -> torch.Tensor:
    """[N, *grid] ints -> [N, cells * 11] float one-hot."""
    flat = grids.reshape(grids.shape[0], -1).long().clamp(0, NUM_CELL_VALUES - 1)
    return torch.nn.functional.one_hot(flat, NUM_CELL_VALUES).reshape(flat.shape[0], -1).float()


def _decode_cells(scores: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """[N, cells * 11] -> [N, *grid] argmax colour."""
    return (
        scores.reshape(scores.shape[0], -1, NUM_CELL_VALUES)
        .argmax(-1)
        .reshape(scores.shape[0], *shape)
    )


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    device: str | None = None,
    batches: int = 16,
    alpha: float = 1e-3,
    seed: int = 1234,
) -> dict[str, Any]:
    """Probe and baseline figures of a run; written to ``RUN_DIR/eval.json`` and returned."""
    from lejepa_core.data.sampler import WindowSampler

    recipe, data, model, target_encoder, torch_device = load_run(
        run_dir, checkpoint=checkpoint, device=device
    )
    horizons = tuple(recipe.data.horizons)
    train_eps, val_eps = data.episode_split(recipe.data.val_fraction, recipe.data.split_seed)
    kwargs = dict(context_frames=recipe.data.context_frames, horizons=horizons, device=torch_device)
    train_sampler, val_sampler = (
        WindowSampler(data, train_eps, **kwargs),
        WindowSampler(data, val_eps, **kwargs),
    )
    batch_size = min(recipe.train.batch_size, 512)
    fit = _collect(
        model,
        target_encoder,
        train_sampler.fixed_batches(batch_size, batches, seed),
        with_prediction=False,
    )
    val = _collect(
        model,
        target_encoder,
        val_sampler.fixed_batches(batch_size, batches, seed + 1),
        with_prediction=False,
    )
    per_k = {
        h: _collect(
            model,
            target_encoder,
            val_sampler.fixed_batches(batch_size, max(1, batches // 2), seed + 2 + h, k=h),
            with_prediction=True,
        )
        for h in horizons
    }
    is_grid = data.states is None and not torch.is_floating_point(fit["target_state"])
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "env_id": data.env_id,
        "probe": {
            "kind": "ridge",
            "alpha": alpha,
            "fit_samples": int(fit["z_target"].shape[0]),
            "eval_samples": int(val["z_target"].shape[0]),
        },
    }
    if is_grid:
        result.update(_evaluate_grid(fit, val, per_k, alpha))
    else:
        result.update(_evaluate_state(data, fit, val, per_k, alpha))
    path = Path(run_dir) / "eval.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    result["path"] = str(path)
    return result


def _evaluate_state(data, fit, val, per_k, alpha) -> dict[str, Any]:
    names = tuple(data.state_feature_names or data.feature_names or ())
    groups = feature_groups(names)
    weight, bias = ridge_fit(fit["z_target"], fit["target_state"].flatten(1).float(), alpha)
    decoded = ridge_predict(val["z_target"], weight, bias).reshape(val["target_state"].shape)
    truth = val["target_state"].float()
    r2 = {"overall": r2_score(decoded.flatten(1), truth.flatten(1))}
    for group, idx in groups.items():
        r2[group] = r2_score(decoded[..., idx].flatten(1), truth[..., idx].flatten(1))
    dt = env_dt(data)
    rows = []
    for h, d in per_k.items():
        truth_k = d["target_state"].float()
        last = d["last_state"].float()
        state_hat = ridge_predict(d["z_hat"], weight, bias).reshape(truth_k.shape)
        estimates = {"model": state_hat, "copy_last": last}
        if "positions" in groups and "velocities" in groups:
            estimates["constant_velocity"] = constant_velocity(
                last, d["k"], dt, groups["positions"], groups["velocities"]
            )
        row: dict[str, Any] = {"k": h, "samples": int(truth_k.shape[0])}
        for name, est in estimates.items():
            err = (est - truth_k).abs()
            row[f"{name}/mae"] = float(err.mean())
            for group, idx in groups.items():
                row[f"{name}/mae_{group}"] = float(err[..., idx].mean())
        rows.append(row)
    return {"kind": "state", "feature_names": list(names), "dt": dt, "r2": r2, "per_k": rows}


def _evaluate_grid(fit, val, per_k, alpha) -> dict[str, Any]:
    shape = tuple(fit["target_state"].shape[1:])
    weight, bias = ridge_fit(fit["z_target"], _one_hot_cells(fit["target_state"]), alpha)
    decoded = _decode_cells(ridge_predict(val["z_target"], weight, bias), shape)
    accuracy = float((decoded == val["target_state"].long()).float().mean())
    rows = []
    for h, d in per_k.items():
        truth = d["target_state"].long()
        predicted = _decode_cells(ridge_predict(d["z_hat"], weight, bias), shape)
        rows.append(
            {
                "k": h,
                "samples": int(truth.shape[0]),
                "model/cell_accuracy": float((predicted == truth).float().mean()),
                "copy_last/cell_accuracy": float((d["last_state"].long() == truth).float().mean()),
            }
        )
    return {"kind": "grid", "probe_cell_accuracy": accuracy, "per_k": rows}


def print_eval(result: dict[str, Any]) -> None:
    """The per-k table of ``evaluate_run``'s result (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result["kind"] == "state":
        r2 = ", ".join(f"{g} {v:.4f}" for g, v in result["r2"].items())
        console.print(f"probe R^2 on validation episodes (target latents -> state): {r2}")
        table = Table(
            title=f"decoded predictions: MAE in state units, positions / velocities (dt={result['dt']:g})"
        )
        estimators = [
            e
            for e in ("model", "copy_last", "constant_velocity")
            if f"{e}/mae" in result["per_k"][0]
        ]
        table.add_column("k", justify="right")
        for e in estimators:
            table.add_column(e.replace("_", " "), justify="right")
        for row in result["per_k"]:
            cells = [
                f"{row.get(f'{e}/mae_positions', math.nan):.4f} / {row.get(f'{e}/mae_velocities', math.nan):.4f}"
                for e in estimators
            ]
            table.add_row(str(row["k"]), *cells)
    else:
        console.print(
            f"probe cell accuracy (target latents -> grid): {result['probe_cell_accuracy']:.4f}"
        )
        table = Table(title="decoded predicted grids: cell accuracy")
        for c in ("k", "model", "copy last grid"):
            table.add_column(c, justify="right")
        for row in result["per_k"]:
            table.add_row(
                str(row["k"]),
                f"{row['model/cell_accuracy']:.4f}",
                f"{row['copy_last/cell_accuracy']:.4f}",
            )
    console.print(table)
    console.print(f"written: {result.get('path', '')}")
    if math.isnan(result.get("r2", {}).get("overall", 0.0)):
        console.print("warning: the probe's R^2 is NaN (constant state?)")
