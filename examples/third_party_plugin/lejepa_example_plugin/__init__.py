"""An example third-party lejepa plugin: a linear encoder and a log-cosh loss."""

import attrs
import torch
from torch import nn

from lejepa_core import Encoder, Loss, LossOutput, hookimpl
from lejepa_core.metrics import cosine_similarity, error_to_signal_ratio
from lejepa_core.params import param, positive


class LinearEncoder(Encoder):
    """One linear map of the flattened observation. obs [B, *obs_shape] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        scale: float = param(1.0, "multiplies the observation before the map", positive)

    def __init__(self, params, spec):
        super().__init__(params, spec)
        in_features = int(torch.tensor(spec.obs_shape).prod())
        self.linear = nn.Linear(in_features, spec.latent_dim)

    def forward(self, obs):
        return self.linear(obs.flatten(1).float() * self.params.scale)  # [B, D]


class LogCoshLoss(Loss):
    """Mean over the batch of the per-sample mean over D of log(cosh(prediction - target))."""

    def forward(self, outputs):
        error = outputs.prediction - outputs.target.detach()  # [B, D]
        value = torch.log(torch.cosh(error)).mean(dim=1).mean()
        return LossOutput(
            value=value,
            metrics={
                "error_to_signal": error_to_signal_ratio(outputs.prediction, outputs.target),
                "cosine": cosine_similarity(outputs.prediction, outputs.target),
            },
        )


@hookimpl
def register_encoders(register):
    register("example_linear", LinearEncoder)


@hookimpl
def register_losses(register):
    register("example_logcosh", LogCoshLoss)
