"""A trained world model for use in your own code: ``lejepa_core.load(run_dir)``.

    model = lejepa_core.load("runs/multi_k_physics-20260101-120000", device="cpu")
    z_hat = model.predict(context_obs, k=4)  # raw [W, *obs] frames of the run's env -> [D]
    z = model.encode(obs)                    # raw [*obs] -> [D], what z_hat predicts

Everything takes *raw* observations, as the env returns them (numpy arrays or tensors, on
any device): the normalisation the run trained with is applied here, from what the run
stored (``lejepa_core.model_input``), so no data file is needed. Outputs are float32 tensors
on ``model.device``, computed without gradients, in eval mode.

Shape legend: ``B`` batch, ``W`` context frames (``spec.context_frames``), ``D`` latent_dim,
``*obs`` one observation (``spec.obs_shape``). docs/api.md is the guide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lejepa_core.eval.load import load_run
from lejepa_core.interfaces import ModelSpec, takes_actions
from lejepa_core.model_input import ModelInput
from lejepa_core.recipe import Recipe
from lejepa_core.training.step import JEPAModel


def load(
    run_dir: str | Path, checkpoint: str = "best", device: str | torch.device | None = None
) -> WorldModel:
    """The trained model of ``run_dir`` (``checkpoints/best.pt``, else ``last.pt``; or
    ``checkpoint="last"``) on ``device`` (default: cuda when available, else cpu). Needs the
    run directory only; never opens or generates the data file (runs trained before lejepa
    stored its input excepted: they read it once to describe their input)."""
    run = load_run(
        run_dir, checkpoint=checkpoint, device=None if device is None else str(device), data=False
    )
    return WorldModel(
        recipe=run.recipe,
        spec=run.spec,
        model_input=run.model_input,
        model=run.model,
        target_encoder=run.target_encoder,
        run_dir=run.path,
        checkpoint=run.checkpoint,
    )


class WorldModel:
    """A run's context encoder, target encoder, quantizer and predictor, on raw observations.

    encode(obs [B, *obs] | [*obs], *, context=False) -> [B, D] | [D]
    predict(context_obs [B, W, *obs] | [W, *obs], k: int | [B], actions=None) -> [B, D] | [D]
    predict_latent(z_context [B, W, D] | [W, D], k: int | [B], actions=None) -> [B, D] | [D]

    actions: [B, K, *act] (or [K, *act]) raw env actions taken after the last context frame,
    K >= k (the first k are used); for an action-conditioned predictor (``takes_actions``), a
    passive one ignores them; without them an action-conditioned predictor gives its
    action-marginal prediction.
    """

    def __init__(
        self,
        *,
        recipe: Recipe,
        spec: ModelSpec,
        model_input: ModelInput,
        model: JEPAModel,
        target_encoder: nn.Module,
        run_dir: Path,
        checkpoint: Path,
    ):
        self.recipe, self.spec, self.model_input = recipe, spec, model_input
        self.run_dir, self.checkpoint = run_dir, checkpoint
        self.context_encoder = model.context_encoder.eval()
        self.target_encoder = target_encoder.eval()
        self.quantizer = None if model.quantizer is None else model.quantizer.eval()
        self.predictor = model.predictor.eval()
        self.takes_actions = takes_actions(self.predictor)
        self._obs_dtype = getattr(torch, spec.obs_dtype)
        norm = model_input.normalization
        self._mean = None if norm is None else torch.tensor(norm["mean"], dtype=torch.float32)
        std = None if norm is None else torch.tensor(norm["std"], dtype=torch.float32)
        self._std = None if std is None else torch.where(std > 0, std, torch.ones_like(std))
        self.to(next(self.context_encoder.parameters()).device)

    # -- device ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: str | torch.device) -> WorldModel:
        """Move every module (and the normalisation statistics) to ``device``; returns self."""
        self._device = torch.device(device)
        for module in (self.context_encoder, self.target_encoder, self.quantizer, self.predictor):
            if module is not None:
                module.to(self._device)
        if self._mean is not None:
            self._mean, self._std = self._mean.to(self._device), self._std.to(self._device)
        return self

    # -- input -----------------------------------------------------------------------------
    def prepare(self, obs: Any, *, batch_dims: int) -> torch.Tensor:
        """Raw observations [*lead, *obs] (``batch_dims`` leading axes) -> what the encoders
        were trained on: on ``device``, in the stored dtype, standardised like training."""
        x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        shape = tuple(self.spec.obs_shape)
        if x.ndim != batch_dims + len(shape) or tuple(x.shape[batch_dims:]) != shape:
            raise ValueError(
                f"expected observations of shape {list(shape)} after {batch_dims} leading "
                f"axes, got shape {list(x.shape)}"
            )
        x = x.to(self._device).to(self._obs_dtype)
        if self._mean is None:
            return x
        return (x.to(torch.float32) - self._mean) / self._std

    def _k(self, k: Any, batch: int) -> torch.Tensor:
        k = torch.as_tensor(k, dtype=torch.int64, device=self._device)
        k = k.expand(batch) if k.ndim == 0 else k
        if k.shape != (batch,):
            raise ValueError(f"k: expected an int or [{batch}] ints, got shape {list(k.shape)}")
        if bool((k < 1).any()):
            raise ValueError(f"k: horizons are >= 1, got {k.tolist()}")
        return k

    def _window(self, x: torch.Tensor, what: str, frame_dims: int) -> tuple[torch.Tensor, bool]:
        """[W, ...] or [B, W, ...] -> ([B, W, ...], whether a batch axis was given)."""
        batched = x.ndim == 2 + frame_dims
        if not batched and x.ndim != 1 + frame_dims:
            raise ValueError(f"{what}: expected [B, W, ...] or [W, ...], got {list(x.shape)}")
        x = x if batched else x.unsqueeze(0)
        if x.shape[1] != self.spec.context_frames:
            raise ValueError(
                f"{what}: W = {x.shape[1]} context frames, the run was trained on "
                f"W = {self.spec.context_frames}"
            )
        return x, batched

    # -- the three operations --------------------------------------------------------------
    @torch.no_grad()
    def encode(self, obs: Any, *, context: bool = False) -> torch.Tensor:
        """Latents of raw observations: [B, *obs] -> [B, D], [*obs] -> [D]. The target encoder
        (what predictions are compared with); ``context=True``: the context encoder, before
        the quantizer (``predict_latent`` applies it)."""
        batched = np.ndim(obs) == len(self.spec.obs_shape) + 1
        x = self.prepare(obs, batch_dims=1 if batched else 0)
        x = x if batched else x.unsqueeze(0)
        encoder = self.context_encoder if context else self.target_encoder
        z = encoder(x).float()
        return z if batched else z[0]

    @torch.no_grad()
    def predict(self, context_obs: Any, k: Any, actions: Any = None) -> torch.Tensor:
        """The predicted target latent k steps after the last context frame: raw context
        frames [B, W, *obs] (or [W, *obs]) and k (an int, or [B] ints) -> [B, D] (or [D])."""
        frames = len(self.spec.obs_shape)
        batched = np.ndim(context_obs) == frames + 2
        x = self.prepare(context_obs, batch_dims=2 if batched else 1)
        x, _ = self._window(x, "context_obs", frames)
        batch, window = x.shape[:2]
        z = self.context_encoder(x.reshape(batch * window, *x.shape[2:])).float()
        if actions is not None and not batched:
            actions = torch.as_tensor(
                np.asarray(actions) if not torch.is_tensor(actions) else actions
            )[None]
        prediction = self.predict_latent(z.reshape(batch, window, -1), k, actions)
        return prediction if batched else prediction[0]

    @torch.no_grad()
    def predict_latent(self, z_context: Any, k: Any, actions: Any = None) -> torch.Tensor:
        """Context-encoder latents [B, W, D] (or [W, D]) and k -> predicted latent [B, D] (or
        [D]); the quantizer is applied first, as in training (unless it is a side branch)."""
        z = torch.as_tensor(z_context, dtype=torch.float32, device=self._device)
        z, batched = self._window(z, "z_context", 1)
        batch, window, dim = z.shape
        if dim != self.spec.latent_dim:
            raise ValueError(
                f"z_context: D = {dim}, the run's latent_dim is {self.spec.latent_dim}"
            )
        if self.quantizer is not None and getattr(self.quantizer, "feeds_predictor", True):
            z = self.quantizer(z.reshape(batch * window, dim)).z_q.reshape(batch, window, dim)
        k = self._k(k, batch)
        if not self.takes_actions:
            return self.predictor(z, k).float() if batched else self.predictor(z, k).float()[0]
        if actions is not None:
            actions = torch.as_tensor(
                np.asarray(actions) if not torch.is_tensor(actions) else actions
            )
            actions = (actions if batched else actions[None]).to(self._device)
            if actions.shape[0] != batch or actions.shape[1] < int(k.max()):
                raise ValueError(
                    f"actions: expected [{batch}, K >= {int(k.max())}, *act], got {list(actions.shape)}"
                )
            actions = actions.float() if actions.is_floating_point() else actions.long()
        prediction = self.predictor(z, k, actions=actions, action_mask=None).float()
        return prediction if batched else prediction[0]

    def __repr__(self) -> str:
        return (
            f"WorldModel({str(self.run_dir)!r}, checkpoint={self.checkpoint.name!r}, "
            f"obs={list(self.spec.obs_shape)} {self.spec.obs_dtype}, W={self.spec.context_frames}, "
            f"D={self.spec.latent_dim}, device={str(self._device)!r})"
        )
