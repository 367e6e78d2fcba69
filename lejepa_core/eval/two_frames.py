"""The two-frame probe: what two consecutive target latents know about the state.

One frame shows where things are, not how fast they move; two consecutive frames show both.
The probe is the same ridge regression as the one-frame probe (``Probe``), from the
concatenated target latents of the last two context frames ``[z_{t-1}, z_t]`` to the state
at ``t``, fitted on the fixed training windows and scored (R^2, overall and per feature group
of the env) on the fixed validation windows of ``eval.json``.

Shape legend: ``N`` samples, ``D`` latent_dim, ``*state`` the probed state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lejepa_core.eval.probe import Probe, r2_score
from lejepa_core.eval.state import state_feature_names

PROBE_INPUT = (
    "target encoder on the last two context frames t-1, t, concatenated [2D] -> state at t"
)


@torch.no_grad()
def two_frame_latents(target_encoder, batches: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [N, 2D]: the target latents of context frames W-2 and W-1 side by side, state
    [N, *state]: the state of frame W-1) of fixed ``Batch``es with a true state."""
    z, y = [], []
    for b in batches:
        previous = target_encoder(b.context_obs[:, -2]).float()  # [B, D]
        current = target_encoder(b.context_obs[:, -1]).float()  # [B, D]
        z.append(torch.cat([previous, current], dim=-1))
        y.append(b.context_state[:, -1] if b.context_state is not None else b.context_obs[:, -1])
    return torch.cat(z), torch.cat(y)


def evaluate_two_frames(
    run, *, alpha: float, batches: int, seed: int, val_seed: int
) -> dict[str, Any] | None:
    """eval.json's ``two_frame_probe``: ``input`` (what the probe reads), ``fit_samples``,
    ``eval_samples`` and ``r2`` (overall and per feature group); None for runs with one
    context frame or integer grids (cells have no velocity)."""
    if run.recipe.data.context_frames < 2 or run.cell_values() is not None:
        return None
    fit = run.sampler("train").fixed_batches(run.batch_size, batches, seed)
    z_fit, y_fit = two_frame_latents(run.target_encoder, fit)
    probe = Probe.fit(z_fit, y_fit, alpha=alpha)
    val = run.sampler("val").fixed_batches(run.batch_size, batches, val_seed)
    z_val, truth = two_frame_latents(run.target_encoder, val)
    decoded, truth = probe.decode(z_val), truth.float()
    names = state_feature_names(run.spec.env, int(truth.shape[-1]))
    r2 = {"overall": r2_score(decoded.flatten(1), truth.flatten(1))}
    for group, idx in run.spec.env.group_indices(names).items():
        r2[group] = r2_score(decoded[..., idx].flatten(1), truth[..., idx].flatten(1))
    return {
        "input": PROBE_INPUT,
        "fit_samples": int(z_fit.shape[0]),
        "eval_samples": int(z_val.shape[0]),
        "r2": r2,
    }
