"""The conformance kit (lejepa_core.testing): every built-in passes it, and each breach of a
contract is caught with a message that names the component and what broke."""

import attrs
import pytest
import torch
from torch import nn

from lejepa_core import Encoder, Loss, LossOutput, Masker, Predictor
from lejepa_core.params import param
from lejepa_core.testing import (
    ConformanceError,
    HostSyncCounter,
    check_component,
    component_cases,
)

# Host syncs per forward that built-ins still make (the GPU-readiness issue removes them);
# a component not listed must make none.
KNOWN_HOST_SYNCS: dict[str, int] = {}  # built-in -> host syncs one forward may make: none


@pytest.mark.parametrize("case", component_cases("lejepa-core"), ids=str)
def test_every_builtin_conforms(case):
    specs = check_component(
        case.kind, case.cls, name=case.name, max_host_syncs=KNOWN_HOST_SYNCS.get(case.name, 0)
    )
    assert specs


def test_builtins_are_all_covered():
    kinds = {case.kind for case in component_cases("lejepa-core")}
    assert kinds == {"encoder", "predictor", "quantizer", "loss", "masker"}


class GoodEncoder(Encoder):
    def __init__(self, params, spec):
        super().__init__(params, spec)
        self.linear = nn.Linear(int(torch.tensor(spec.obs_shape).prod()), spec.latent_dim)

    def forward(self, obs):
        return self.linear(obs.flatten(1).float())


def test_a_correct_encoder_passes():
    assert check_component("encoder", GoodEncoder) == [
        "state",
        "grid",
        "grid_latent",
        "image",
        "embedding",
    ]


class WrongShapeEncoder(GoodEncoder):
    def forward(self, obs):
        return self.linear(obs.flatten(1).float())[:, :3]


class BareTensorLoss(Loss):
    def forward(self, outputs):
        return (outputs.prediction - outputs.target).abs().mean()


class BadParamsEncoder(GoodEncoder):
    @attrs.frozen(kw_only=True)
    class Params:
        num_frequencies: str = param(64, "annotation contradicts the default")


class NoisyEncoder(GoodEncoder):
    def forward(self, obs):
        return self.linear(obs.flatten(1).float()) + torch.randn(obs.shape[0], 1)


class SyncingEncoder(GoodEncoder):
    def forward(self, obs):
        z = self.linear(obs.flatten(1).float())
        return z * float(z.detach().abs().max())


class FloatMaskMasker(Masker):
    def forward(self, obs, generator):
        return obs, torch.zeros_like(obs)


class DetachedPredictor(Predictor):
    def __init__(self, params, spec):
        super().__init__(params, spec)
        self.bias = nn.Parameter(torch.zeros(spec.latent_dim))

    def forward(self, z_context, k):
        return z_context[:, -1].detach() + self.bias


class NotAnEncoder(nn.Module):
    pass


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [
        ("encoder", WrongShapeEncoder, "has shape (6, 3), expected (6, 16)"),
        ("loss", BareTensorLoss, "must return LossOutput, got Tensor"),
        ("encoder", BadParamsEncoder, "Params defaults do not match their annotations"),
        ("encoder", NoisyEncoder, "not deterministic"),
        ("encoder", SyncingEncoder, "host syncs in one forward (__float__)"),
        ("masker", FloatMaskMasker, "mask must be a bool tensor"),
        ("predictor", DetachedPredictor, "no gradient flows back to its input"),
        ("encoder", NotAnEncoder, "must subclass lejepa_core.Encoder"),
    ],
)
def test_each_breach_is_named(kind, cls, message):
    with pytest.raises(ConformanceError) as info:
        check_component(kind, cls, name="mine")
    assert str(info.value).startswith(f"{kind} mine")
    assert message in str(info.value)


def test_a_loss_output_with_metrics_passes():
    class MetricLoss(Loss):
        def forward(self, outputs):
            error = (outputs.prediction - outputs.target).abs().mean()
            return LossOutput(value=error, metrics={"abs": error.detach()})

    assert check_component("loss", MetricLoss)


def test_host_sync_counter_counts_value_reads():
    x = torch.randn(8)
    with HostSyncCounter() as syncs:
        y = x * 2 + 1  # no sync
        y.sum().item()
        bool(y[0] > 0)
        y.nonzero()
    assert syncs.calls == ["item", "__bool__", "nonzero"]
