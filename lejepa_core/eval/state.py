"""State evaluation: what the latents know about the state, and how well decoded predictions
track it against baselines, per feature group the env publishes.

Shape legend: ``N`` samples, ``*state`` the probed state, ``F`` its last axis (the features).

- Probe R^2 on validation episodes: ``overall`` and one per group of
  ``spec.env.group_indices(names)`` (the env's ``state_feature_groups`` / ``feature_groups``;
  one group ``all`` when it publishes none).
- Decoded predictions per k: mean absolute error (state units) of the probe applied to the
  predicted latents (``model``: direct; ``rollout``: the autoregressive rollout,
  ``eval.rollout``), per group, against baselines on the same samples: ``copy_last`` (the last
  context state) and, when the env publishes ``dt`` and ``derivatives``, ``constant_velocity``
  (each feature moved by ``k dt`` times its derivative feature); and the probe floor
  (``probe_floor``: the probe applied to the *true* target latents of the same samples, the
  part of every decoded error that is the probe's own).
"""

from __future__ import annotations

from typing import Any

import torch

from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.probe import Probe, r2_score
from lejepa_core.eval.samples import PROBE_FLOOR, Samples, estimators_in


def state_feature_names(env: EnvInfo, width: int) -> tuple[str, ...]:
    """Names of the probed state's ``width`` features: the env's (``state_feature_names``, else
    ``feature_names``) when they fit, else ``f0 .. f{width-1}``."""
    names = env.state_names()
    if len(names) == width:
        return tuple(names)
    return tuple(f"f{i}" for i in range(width))


def constant_velocity(
    state: torch.Tensor, k: torch.Tensor, dt: float, pairs: list[tuple[int, int]]
) -> torch.Tensor:
    """Extrapolate ``state [N, ..., F]`` by ``k [N]`` steps of ``dt``: for each (feature,
    derivative) index pair, ``feature += k * dt * derivative``; every other feature is kept."""
    out = state.clone()
    if not pairs:
        return out
    feature_idx = [f for f, _ in pairs]
    derivative_idx = [d for _, d in pairs]
    steps = (k.to(state.dtype) * dt).reshape(-1, *([1] * (state.ndim - 1)))  # [N, 1, ..., 1]
    out[..., feature_idx] = state[..., feature_idx] + steps * state[..., derivative_idx]
    return out


def constant_velocity_pairs(env: EnvInfo, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(feature, derivative) index pairs of the constant-velocity baseline; empty (no such
    baseline) unless the env publishes both ``dt`` and ``derivatives`` of these features."""
    return env.derivative_pairs(names) if env.dt is not None else []


@torch.no_grad()
def evaluate_state(
    env: EnvInfo, probe: Probe, val: Samples, per_k: dict[int, Samples]
) -> dict[str, Any]:
    """eval.json's state figures: ``feature_names``, ``groups`` (group -> feature names),
    ``dt``, ``estimators`` (those of ``samples.ESTIMATORS`` the rows hold), ``r2`` (overall and per
    group) and ``per_k`` rows (``<estimator>/mae`` and ``<estimator>/mae_<group>``)."""
    names = state_feature_names(env, int(val.target_state.shape[-1]))
    groups = env.group_indices(names)
    truth = val.target_state.float()
    decoded = probe.decode(val.z_target)
    r2 = {"overall": r2_score(decoded.flatten(1), truth.flatten(1))}
    for group, idx in groups.items():
        r2[group] = r2_score(decoded[..., idx].flatten(1), truth[..., idx].flatten(1))
    pairs = constant_velocity_pairs(env, names)
    rows = []
    for k, samples in per_k.items():
        truth_k = samples.target_state.float()
        last = samples.last_state.float()
        estimates = {"model": probe.decode(samples.z_hat)}
        if samples.z_rollout is not None:
            estimates["rollout"] = probe.decode(samples.z_rollout)
        estimates["copy_last"] = last
        if pairs:
            estimates["constant_velocity"] = constant_velocity(last, samples.k, env.dt, pairs)
        estimates[PROBE_FLOOR] = probe.decode(samples.z_target)
        row: dict[str, Any] = {"k": k, "samples": samples.size}
        for name, estimate in estimates.items():
            error = (estimate - truth_k).abs()
            row[f"{name}/mae"] = float(error.mean())
            for group, idx in groups.items():
                row[f"{name}/mae_{group}"] = float(error[..., idx].mean())
        rows.append(row)
    return {
        "kind": "state",
        "feature_names": list(names),
        "groups": {group: [names[i] for i in idx] for group, idx in groups.items()},
        "dt": env.dt,
        "estimators": estimators_in(rows, "mae"),
        "r2": r2,
        "per_k": rows,
    }
