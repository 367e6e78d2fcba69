"""Drift: the autoregressive rollout beside the direct multi-k prediction.

Shape legend: ``B`` batch, ``W`` context frames, ``D`` latent_dim, ``*obs`` one observation,
``n`` rollout steps.

The predictor is trained to predict ``z_{t+k}`` directly for every k of ``data.horizons``. A
rollout asks instead what the one-step model does when it is applied to its own output: predict
``z_{t+s}`` from the W context latents, drop the oldest latent of the window, append the
prediction, predict again, ... until ``t+k`` (``k / s`` steps). ``s`` is 1 when the predictor was
trained with k = 1, else its smallest trained horizon (``rollout_horizon``; k that are not a
multiple of ``s`` have no rollout). How far the rollout falls behind the direct prediction as k
grows is the drift ``lejepa-latent-dynamics.md`` warns about.

The rollout uses the model's own components only, on the path ``JEPAModel.predict`` takes: the
unmasked context through ``forward_context`` (the quantizer included), then the predictor. With
a quantizer each appended prediction is quantized too, as the context path quantizes every
context latent, so the predictor never sees a latent the context path could not produce.

``latent_figures`` turns the per-k samples into eval.json's ``latent`` section: err/σ of the
direct prediction, the rollout and copy-last (the target encoder on the last context frame,
the target's own space), σ being the std over all elements of all target latents of the
samples (every k pooled: one denominator, as docs/metrics.md defines it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lejepa_core.training.step import JEPAModel, forward_context, predictor_input


def rollout_horizon(horizons: Sequence[int]) -> int:
    """The horizon a rollout applies repeatedly: 1 when trained, else the smallest trained one."""
    if not horizons:
        raise ValueError("rollout_horizon: no horizons")
    return 1 if 1 in horizons else min(int(k) for k in horizons)


def rollout_note(horizons: Sequence[int]) -> str | None:
    """What a reader must know about the rollout of a predictor trained on ``horizons``."""
    step = rollout_horizon(horizons)
    if step == 1:
        return None
    return (
        f"the predictor was trained without k = 1 (horizons {list(horizons)}): the rollout "
        f"applies k = {step} repeatedly; horizons that are not a multiple of {step} have none"
    )


@torch.no_grad()
def rollout(
    model: JEPAModel,
    context_obs: torch.Tensor,
    k: torch.Tensor,
    *,
    step: int = 1,
    actions: torch.Tensor | None = None,
    action_mask: torch.Tensor | None = None,
):
    """The autoregressive prediction of ``z_{t+k}``: ``k / step`` applications of the predictor
    at horizon ``step``, each appended (quantized when the model has a quantizer) to the window.

    context_obs: [B, W, *obs] unmasked; k: [B] int, each a positive multiple of ``step`` ->
    [B, D], the last prediction of each sample's rollout (not quantized, like
    ``JEPAModel.predict``). With ``k == step`` it is ``model.predict(context_obs, k)``. The
    model should be in eval mode, as for ``predict``: a quantizer in training mode would update
    its codebook from the appended predictions.

    actions [B, K, *act] / action_mask [B, K] (K >= max k): the actions taken after the last
    context frame; application ``i`` of an action-conditioned predictor gets actions
    ``i*step .. (i+1)*step - 1``, those that lead from its window's last frame to its target
    (a passive predictor ignores them).
    """
    k = k.long()
    if bool((k < step).any()) or bool((k % step != 0).any()):
        raise ValueError(f"rollout: every k must be a positive multiple of step={step}, got {k}")
    steps = k // step  # [B]
    ctx = forward_context(model.context_encoder, None, model.quantizer, context_obs, None)
    window = predictor_input(model.quantizer, ctx)  # [B, W, D]
    quantize = model.quantizer is not None and getattr(model.quantizer, "feeds_predictor", True)
    horizon = torch.full_like(k, step)
    predictions = []
    for i in range(int(steps.max())):
        taken = slice(i * step, (i + 1) * step)
        prediction = model.run_predictor(  # [B, D]
            window,
            horizon,
            None if actions is None else actions[:, taken],
            None if action_mask is None else action_mask[:, taken],
        )
        predictions.append(prediction)
        appended = model.quantizer(prediction).z_q if quantize else prediction
        window = torch.cat([window[:, 1:], appended.unsqueeze(1).to(window.dtype)], dim=1)
    path = torch.stack(predictions, dim=1)  # [B, n, D]
    pick = (steps - 1).to(path.device).view(-1, 1, 1).expand(-1, 1, path.shape[-1])
    return path.gather(1, pick).squeeze(1)  # [B, D]


def _ratio(estimate: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> float:
    """mean |estimate - target| / sigma; estimate, target: [N, D]."""
    return float((estimate.float() - target.float()).abs().mean() / sigma)


def latent_figures(per_k: dict[int, Any], horizons: Sequence[int]) -> dict[str, Any]:
    """eval.json's ``latent`` section from ``per_k``: k -> ``eval.samples.Samples`` (collected
    with predictions and rollout). ``target_std`` (σ over all elements of every k's target
    latents), ``rollout_horizon``, ``rollout_note`` and per k ``model/err_signal/k{k}``
    (direct), ``rollout/err_signal/k{k}`` (when k is a multiple of the rollout horizon) and
    ``copy_last/err_signal/k{k}`` (target encoder on the last context frame)."""
    sigma = torch.cat([s.z_target.float() for s in per_k.values()]).std().clamp_min(1e-12)
    out: dict[str, Any] = {
        "target_std": float(sigma),
        "rollout_horizon": rollout_horizon(horizons),
        "rollout_note": rollout_note(horizons),
    }
    for k, samples in per_k.items():
        estimates = {"model": samples.z_hat, "rollout": samples.z_rollout}
        estimates["copy_last"] = samples.z_copy_last
        for name, estimate in estimates.items():
            if estimate is not None:
                out[f"{name}/err_signal/k{k}"] = _ratio(estimate, samples.z_target, sigma)
    return out
