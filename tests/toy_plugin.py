"""A throwaway plugin registered straight on the plugin manager by tests (nothing installed)."""

import attrs
import torch
from torch import nn

from lejepa_core import Encoder, Loss, LossOutput, Masker, Predictor, hookimpl
from lejepa_core.params import in_range, param, positive


class ToyEncoder(Encoder):
    """Linear toy encoder. obs [B, *obs] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        hidden_dim: int = param(8, "hidden width", positive)
        dropout: float = param(0.0, "dropout", in_range(0.0, 1.0))
        tags: tuple[str, ...] = param((), "free tags")

    def __init__(self, params, spec):
        super().__init__(params, spec)
        n = int(torch.tensor(spec.obs_shape).prod())
        self.net = nn.Sequential(
            nn.Linear(n, params.hidden_dim), nn.Linear(params.hidden_dim, spec.latent_dim)
        )

    def forward(self, obs):
        return self.net(obs.flatten(1).float())


class ToyPredictor(Predictor):
    """Copies the last context latent plus a linear correction."""

    def __init__(self, params, spec):
        super().__init__(params, spec)
        self.linear = nn.Linear(spec.latent_dim, spec.latent_dim)

    def forward(self, z_context, k):
        return z_context[:, -1] + self.linear(z_context[:, -1])


class ToyLoss(Loss):
    """Mean over the batch of the per-sample mean squared error."""

    @attrs.frozen(kw_only=True)
    class Params:
        scale: float = param(1.0, "scale", positive)

    def forward(self, outputs):
        value = ((outputs.prediction - outputs.target) ** 2).mean(dim=1).mean() * self.params.scale
        return LossOutput(value=value, metrics={})


class ToyMasker(Masker):
    """Hides nothing."""

    def forward(self, obs, generator):
        return obs, torch.zeros_like(obs, dtype=torch.bool)


class ToyPlugin:
    @hookimpl
    def register_encoders(self, register):
        register("toy", ToyEncoder)

    @hookimpl
    def register_predictors(self, register):
        register("toy", ToyPredictor)

    @hookimpl
    def register_losses(self, register):
        register("toy_mse", ToyLoss)

    @hookimpl
    def register_maskers(self, register):
        register("toy_none", ToyMasker)


TOY_RECIPE = """
[model]
latent_dim = 4

[encoder]
name = "toy"
hidden_dim = 16

[predictor]
name = "toy"

[masker]
name = "toy_none"

[[losses]]
name = "toy_mse"
weight = 0.5

[data]
path = "{path}"
env_id = "CartPole-v1"
context_frames = 2
horizons = [1, 2]
"""
