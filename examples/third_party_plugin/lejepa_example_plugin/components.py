"""The example's components. Shape legend: ``B`` batch, ``D`` latent_dim, ``*obs`` one
observation."""

import attrs
import torch
from torch import nn

from lejepa_core import Encoder, Loss, LossOutput, Masker
from lejepa_core.metrics import cosine_similarity, error_to_signal_ratio
from lejepa_core.params import in_range, param, positive


class LinearEncoder(Encoder):
    """One linear map of the flattened observation. obs [B, *obs] -> [B, D]."""

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


class DropoutMasker(Masker):
    """Hide each observation element with probability ``p`` (set to ``fill``).

    obs [B, *obs] -> (masked [B, *obs], mask [B, *obs] bool, True = hidden).
    """

    @attrs.frozen(kw_only=True)
    class Params:
        p: float = param(0.1, "probability of hiding an element", in_range(0.0, 1.0))
        fill: float = param(0.0, "value written into hidden elements")

    def forward(self, obs, generator):
        draw = torch.rand(obs.shape, generator=generator, device=obs.device)
        mask = draw < self.params.p
        fill = torch.full((), self.params.fill, dtype=obs.dtype, device=obs.device)
        return torch.where(mask, fill, obs), mask
