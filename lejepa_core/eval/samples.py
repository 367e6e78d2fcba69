"""The fixed evaluation samples of a run: latents, predictions and the states they should match.

Shape legend: ``N`` samples, ``D`` latent_dim, ``*state`` the probed state (``/states`` when
the file has them, else the raw observation).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch

from lejepa_core.eval.rollout import rollout

PROBE_FLOOR = "probe_floor"
ESTIMATORS = ("model", "rollout", "copy_last", "constant_velocity", PROBE_FLOOR)
"""eval.json's per-k columns in order: the decoded direct prediction and rollout, the
baselines, and the probe floor (the probe applied to the true target latents: its own error,
no prediction involved)."""


def estimators_in(rows: list[dict], figure: str) -> list[str]:
    """The names of ``ESTIMATORS`` with a ``<name>/<figure>`` value in any of ``rows``."""
    return [name for name in ESTIMATORS if any(f"{name}/{figure}" in row for row in rows)]


@attrs.frozen(kw_only=True)
class Samples:
    """z_target [N, D] (target encoder on the target frame), z_hat [N, D] or None (the model's
    direct prediction from the unmasked context), z_rollout [N, D] or None (the autoregressive
    rollout, ``eval.rollout``; None when not asked for or k is no multiple of its step),
    z_copy_last [N, D] or None (the target encoder on the last context frame: copy-last in the
    target's space), k [N], target_state [N, *state], last_state [N, *state] (the last context
    frame's state: what copy-last-state predicts)."""

    z_target: torch.Tensor
    z_hat: torch.Tensor | None
    k: torch.Tensor
    target_state: torch.Tensor
    last_state: torch.Tensor
    z_rollout: torch.Tensor | None = None
    z_copy_last: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.z_target.shape[0])


def _cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.cat(parts) if parts else None


@torch.no_grad()
def collect(
    model,
    target_encoder,
    batches: Iterable,
    *,
    with_prediction: bool,
    rollout_step: int | None = None,
) -> Samples:
    """Latents and states of fixed ``Batch``es. With ``with_prediction``: the direct prediction
    through ``model.predict`` (the one prediction path) and copy-last in the target's space;
    with ``rollout_step`` too: the rollout at that step, for batches whose every k is a multiple
    of it (all batches or none: a per-k sample has one k)."""
    z_target, z_hat, z_rollout, z_copy_last, k, target_state, last_state = ([] for _ in range(7))
    for b in batches:
        z_target.append(target_encoder(b.target_obs).float())
        k.append(b.k)
        if with_prediction:
            # the window's actions reach an action-conditioned predictor (passive ones ignore them)
            z_hat.append(model.predict(b.context_obs, b.k, b.actions, b.action_mask).float())
            z_copy_last.append(target_encoder(b.context_obs[:, -1]).float())
            if rollout_step is not None and bool((b.k % rollout_step == 0).all()):
                z_rollout.append(
                    rollout(
                        model,
                        b.context_obs,
                        b.k,
                        step=rollout_step,
                        actions=b.actions,
                        action_mask=b.action_mask,
                    ).float()
                )
        target_state.append(b.target_state if b.target_state is not None else b.target_obs)
        last_state.append(
            b.context_state[:, -1] if b.context_state is not None else b.context_obs[:, -1]
        )
    return Samples(
        z_target=torch.cat(z_target),
        z_hat=_cat(z_hat),
        k=torch.cat(k),
        target_state=torch.cat(target_state),
        last_state=torch.cat(last_state),
        z_rollout=_cat(z_rollout) if len(z_rollout) == len(z_target) else None,
        z_copy_last=_cat(z_copy_last),
    )
