"""The fixed evaluation samples of a run: latents, predictions and the states they should match.

Shape legend: ``N`` samples, ``D`` latent_dim, ``*state`` the probed state (``/states`` when
the file has them, else the raw observation).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch


@attrs.frozen(kw_only=True)
class Samples:
    """z_target [N, D] (target encoder on the target frame), z_hat [N, D] or None (the model's
    prediction from the unmasked context), k [N], target_state [N, *state], last_state
    [N, *state] (the last context frame's state: what copy-last-state predicts)."""

    z_target: torch.Tensor
    z_hat: torch.Tensor | None
    k: torch.Tensor
    target_state: torch.Tensor
    last_state: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.z_target.shape[0])


@torch.no_grad()
def collect(model, target_encoder, batches: Iterable, *, with_prediction: bool) -> Samples:
    """Latents and states of fixed ``Batch``es; predictions through ``model.predict`` (the one
    prediction path) when ``with_prediction``."""
    z_target, z_hat, k, target_state, last_state = [], [], [], [], []
    for b in batches:
        z_target.append(target_encoder(b.target_obs).float())
        k.append(b.k)
        if with_prediction:
            z_hat.append(model.predict(b.context_obs, b.k).float())
        target_state.append(b.target_state if b.target_state is not None else b.target_obs)
        last_state.append(
            b.context_state[:, -1] if b.context_state is not None else b.context_obs[:, -1]
        )
    return Samples(
        z_target=torch.cat(z_target),
        z_hat=torch.cat(z_hat) if z_hat else None,
        k=torch.cat(k),
        target_state=torch.cat(target_state),
        last_state=torch.cat(last_state),
    )
