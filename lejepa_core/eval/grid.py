"""Integer-grid evaluation (ARC and any env whose observations are grids of cell values).

Shape legend: ``N`` samples, ``H x W`` one grid, ``D`` latent_dim, ``T`` frames of an episode.

What an object is, the blank grid and the constant-velocity rule come from the env's
``GridRules`` (:func:`rules_for`: the rules its metadata names in ``grid_rules``, registered
through ``register_grid_rules``, else the generic rules driven by ``pad_value`` and
``background_value``). Figures (docs/metrics.md#grid-figures):

1. per k, for the decoded direct prediction (and rollout), the baselines *blank*, *copy-last*
   and *constant velocity*, and the probe floor (the true target latents decoded): cell
   accuracy, active-cell accuracy, object recall, exact-grid match (``grid_metrics``);
2. per k, decoder-free frame retrieval of the prediction, the rollout and copy-last in the
   target's space among the frames of the sample's own validation episode, beside chance;
3. the within-episode share of the target latents' variance (validation episodes);
4. the probe sanity line: each probe (the plain ridge, the grid probe) on the true target
   latents of validation windows; the grid probe (``grid_probe``: prior-balanced ridge)
   decodes every figure of 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lejepa_core.eval.grid_metrics import (
    grid_figures,
    retrieval,
    retrieval_chance,
    within_episode_share,
)
from lejepa_core.eval.grid_probe import GridProbe, LocalGridProbe
from lejepa_core.eval.grid_rules import GridRules
from lejepa_core.eval.probe import Probe
from lejepa_core.eval.samples import PROBE_FLOOR, Samples

GRID_ESTIMATORS = ("model", "rollout", "blank", "copy_last", "constant_velocity", PROBE_FLOOR)
"""The per-k columns of a grid eval.json, in order."""
GRID_FIGURES = ("cell_accuracy", "active_accuracy", "object_recall", "exact_match")
SANITY_RECALL = 0.8
"""The probe on true target latents must recover this share of object cells, or the decoded
figures say nothing about the prediction (the issue's bar)."""
MAX_EPISODES = 64
"""Validation episodes encoded whole for retrieval and the variance share."""


def cell_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of equal cells of two ``[N, *grid]`` integer tensors."""
    return float((predicted.long() == truth.long()).float().mean())


def rules_for(env: Any, cell_values: int) -> GridRules:
    """The env's grid rules: ``env.grid_rules`` looked up in the registry (kind
    ``grid_rules``), else the generic ``GridRules``; built as ``cls(env, cell_values)``."""
    if not env.grid_rules:
        return GridRules(env, cell_values)
    from lejepa_core.registry import get_registry

    return get_registry().get("grid_rules", env.grid_rules)(env, cell_values)


@torch.no_grad()
def fit_grid_probe(
    run: Any, rules: GridRules, *, batches: int, seed: int
) -> GridProbe | LocalGridProbe:
    """The grid probe (prior-balanced ridge, ``grid_probe``; per location for a grid latent)
    on the target latents of the run's fixed training windows (the ridge probe's samples:
    ``batches`` x ``batch_size``, seed ``seed``)."""
    z, grids = [], []
    for b in run.sampler("train").fixed_batches(run.batch_size, batches, seed):
        z.append(run.target_encoder(b.target_obs).float())
        grids.append(b.target_obs.long())
    spec = run.spec
    if spec.latent_grid:
        layout = (*spec.latent_grid, spec.latent_channels, spec.latent_patch)
        return LocalGridProbe.fit(torch.cat(z), torch.cat(grids), rules, layout)
    return GridProbe.fit(torch.cat(z), torch.cat(grids), rules)


@torch.no_grad()
def episode_latents(run: Any, *, limit: int = MAX_EPISODES) -> dict[int, torch.Tensor]:
    """Target latents of every frame of the first ``limit`` validation episodes: {e: [T, D]}."""
    d = run.recipe.data
    _, val_eps = run.data.episode_split(d.val_fraction, d.split_seed)
    out = {}
    for e in val_eps.tolist()[:limit]:
        start, end = int(run.data.episode_offsets[e]), int(run.data.episode_offsets[e + 1])
        obs, _ = run.data.rows(np.arange(start, end))
        out[e] = run.target_encoder(obs.to(run.device)).float().cpu()
    return out


def _sanity(probes: dict[str, Any], rules: GridRules, val: Samples) -> dict[str, Any]:
    """Each probe on the true target latents of validation windows."""
    truth = val.target_state.long().cpu()
    out = {}
    for name, probe in probes.items():
        figures = grid_figures(rules, probe.decode(val.z_target).cpu(), truth, truth)
        out[name] = {
            key: figures[key] for key in ("object_recall", "active_accuracy", "cell_accuracy")
        }
    recall = out["grid"]["object_recall"]
    ok = math.isfinite(recall) and recall >= SANITY_RECALL
    out["ok"] = ok
    out["note"] = (
        f"the grid probe recovers {recall:.3f} of the object cells from the true target latents"
        + (
            ""
            if ok
            else f" (< {SANITY_RECALL}): the latents do not hold the objects, or the probe cannot "
            "read them, so no decoded figure says anything about the prediction"
        )
    )
    return out


def _retrieval_figures(
    row: dict, samples: Samples, batches: list, latents: dict[int, torch.Tensor]
) -> None:
    """Add ``<estimator>/retrieval`` and ``chance/retrieval`` to ``row`` (samples of
    episodes that ``latents`` holds)."""
    episode = torch.cat([b.episode for b in batches]).cpu()
    true = (torch.cat([b.t for b in batches]) + torch.cat([b.k for b in batches])).cpu()
    keep = torch.tensor([int(e) in latents for e in episode.tolist()], dtype=torch.bool)
    if not bool(keep.any()):
        return
    order = sorted(latents)
    position = {e: i for i, e in enumerate(order)}
    listed = [latents[e] for e in order]
    of = torch.tensor([position[int(e)] for e in episode[keep].tolist()], dtype=torch.long)
    for name, z in (
        ("model", samples.z_hat),
        ("rollout", samples.z_rollout),
        ("copy_last", samples.z_copy_last),
    ):
        if z is not None:
            row[f"{name}/retrieval"] = retrieval(z.cpu()[keep], listed, of, true[keep])
    row["chance/retrieval"] = retrieval_chance(listed, of)
    row["retrieval_samples"] = int(keep.sum())


@torch.no_grad()
def evaluate_grid(
    run: Any,
    probe: Probe,
    val: Samples,
    per_k: dict[int, Samples],
    *,
    batches: int = 16,
    seed: int = 1234,
) -> dict[str, Any]:
    """eval.json's grid figures (module docstring) of a ``LoadedRun``: ``per_k`` must be
    ``evaluate.eval_samples(run, batches=batches, seed=seed)``'s (the same fixed windows are
    drawn again here for their episodes, times and context grids)."""
    if probe.cell_values is None:
        raise ValueError("evaluate_grid: the probe was fitted without cell_values")
    rules = rules_for(run.spec.env, probe.cell_values)
    grid_probe = fit_grid_probe(run, rules, batches=batches, seed=seed)
    latents = episode_latents(run)
    sampler = run.sampler("val")
    rows = []
    for k, samples in per_k.items():
        drawn = sampler.fixed_batches(run.batch_size, max(1, batches // 2), seed + 2 + k, k=k)
        context = torch.cat([b.context_obs for b in drawn]).long().cpu()  # [N, F, H, W]
        truth = samples.target_state.long().cpu()
        if not torch.equal(torch.cat([b.target_obs for b in drawn]).long().cpu(), truth):
            raise RuntimeError("evaluate_grid: per_k does not hold eval_samples' windows")
        last = context[:, -1]
        ks = torch.full((len(truth),), k, dtype=torch.long)
        grids = {
            "model": grid_probe.decode(samples.z_hat).cpu(),
            "rollout": None
            if samples.z_rollout is None
            else grid_probe.decode(samples.z_rollout).cpu(),
            "blank": rules.blank(truth),
            "copy_last": last,
            "constant_velocity": rules.constant_velocity(context, ks),
            PROBE_FLOOR: grid_probe.decode(samples.z_target).cpu(),
        }
        row: dict[str, Any] = {"k": k, "samples": samples.size}
        for name, predicted in grids.items():
            if predicted is not None:
                for figure, value in grid_figures(rules, predicted, truth, last).items():
                    row[f"{name}/{figure}"] = value
        _retrieval_figures(row, samples, drawn, latents)
        rows.append(row)
    estimators = [n for n in GRID_ESTIMATORS if any(f"{n}/cell_accuracy" in r for r in rows)]
    return {
        "kind": "grid",
        "cell_values": probe.cell_values,
        "grid_rules": run.spec.env.grid_rules or "generic",
        "estimators": estimators,
        "probe_cell_accuracy": cell_accuracy(probe.decode(val.z_target), val.target_state),
        "grid_probe": {
            "kind": "balanced_ridge_per_location"
            if isinstance(grid_probe, LocalGridProbe)
            else "balanced_ridge",
            "alpha": grid_probe.alpha,
            "balance": grid_probe.balance,
            "fit_samples": grid_probe.samples,
        },
        "probe_sanity": _sanity({"grid": grid_probe, "ridge": probe}, rules, val),
        "within_episode_share": within_episode_share(list(latents.values())) if latents else None,
        "per_k": rows,
    }
