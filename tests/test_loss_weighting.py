"""``train.loss_weighting``: the uncertainty total and its gradients against the formula,
GradNorm's multiplier gradient against a hand computation on a toy two-loss model, the
renormalisation, the recipe option, and the fixed default's unchanged model."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lejepa_core.errors import RecipeError
from lejepa_core.training.weighting import (
    GradNormWeighting,
    UncertaintyWeighting,
    build_weighting,
    loss_weight_metrics,
    training_parameters,
)
from lejepa_core.training.weighting_mode import parse_loss_weighting
from tests.conftest import tiny_data, tiny_recipe  # noqa: F401


# ----------------------------------------------------------------------------- the option
@pytest.mark.parametrize(
    "text, expected",
    [
        ("fixed", ("fixed", 1.5)),
        ("uncertainty", ("uncertainty", 1.5)),
        ("gradnorm", ("gradnorm", 1.5)),
        ("gradnorm:0.12", ("gradnorm", 0.12)),
        ("gradnorm:0", ("gradnorm", 0.0)),
    ],
)
def test_parse_loss_weighting(text, expected):
    assert parse_loss_weighting(text) == expected


@pytest.mark.parametrize("text", ["gradnrom", "uncertainty:1", "gradnorm:x", "gradnorm:-1", ""])
def test_a_bad_loss_weighting_is_one_recipe_line(tmp_path, text):
    with pytest.raises(RecipeError) as info:
        tiny_recipe(tmp_path, tmp_path / "x.h5", (f"train.loss_weighting={text!r}",))
    lines = [line for line in str(info.value).splitlines() if "loss_weighting" in line]
    assert len(lines) == 1 and "train.loss_weighting: expected" in lines[0]
    assert '"gradnorm:<alpha>"' in lines[0]


def test_fixed_builds_no_module_and_keeps_the_model_unchanged(tmp_path, tiny_data):
    from lejepa_core.build import build_model, model_spec

    assert build_weighting("fixed", [1.0, 2.0]) is None
    keys = {}
    for mode in ("fixed", "uncertainty", "gradnorm"):
        recipe = tiny_recipe(tmp_path, tiny_data, (f"train.loss_weighting={mode}",))
        model = build_model(recipe, model_spec(recipe))
        keys[mode] = set(model.state_dict())
        weights = model.current_weights()  # [l1 1.0, sigreg 0.01]: floats or 0-d tensors
        assert float(weights[0]) == 1.0 and float(weights[1]) == pytest.approx(0.01)
    assert keys["uncertainty"] - keys["fixed"] == {"loss_weighting.log_variance"}
    assert keys["gradnorm"] - keys["fixed"] == {
        "loss_weighting.multipliers",
        "loss_weighting.initial_losses",
        "loss_weighting.started",
    }
    assert keys["fixed"] < keys["uncertainty"]


# ----------------------------------------------------------------------------- uncertainty
def test_uncertainty_total_and_gradients_against_the_formula():
    weights, s0, losses = [1.0, 10.0, 0.0], [0.3, -0.5, 0.7], [2.0, 0.4, 5.0]
    module = UncertaintyWeighting(weights)
    with torch.no_grad():
        module.log_variance.copy_(torch.tensor(s0))
    values = [torch.tensor(v, requires_grad=True) for v in losses]
    total = module(values, [])
    # c_i exp(-s_i) L_i + s_i / 2 over the losses with c_i > 0 (the third has c = 0)
    expected = sum(
        c * math.exp(-s) * v + (s / 2 if c > 0 else 0.0)
        for c, s, v in zip(weights, s0, losses, strict=True)
    )
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad_s = [
        (-c * math.exp(-s) * v + 0.5) if c > 0 else 0.0
        for c, s, v in zip(weights, s0, losses, strict=True)
    ]
    assert module.log_variance.grad.tolist() == pytest.approx(grad_s, rel=1e-6)
    grad_l = [c * math.exp(-s) for c, s in zip(weights, s0, strict=True)]
    assert [v.grad.item() for v in values] == pytest.approx(grad_l, rel=1e-6)
    effective = module.effective_weights().tolist()
    assert effective == pytest.approx(grad_l, rel=1e-6)
    metrics = loss_weight_metrics(["a", "b", "c"], module)
    assert [metrics[f"loss_weight/{k}"].item() for k in "abc"] == pytest.approx(grad_l, rel=1e-6)


def test_uncertainty_starts_at_the_fixed_weights_and_settles_at_one_over_two_l():
    module = UncertaintyWeighting([1.0, 10.0])
    assert module.effective_weights().tolist() == [1.0, 10.0]
    losses = [torch.tensor(0.2), torch.tensor(4.0)]
    with torch.no_grad():  # the stationary point of s_i: log(2 c_i L_i)
        module.log_variance.copy_(torch.tensor([math.log(2 * 0.2), math.log(2 * 10.0 * 4.0)]))
    module(losses, []).backward()
    assert module.log_variance.grad.abs().max().item() < 1e-6
    assert module.effective_weights().tolist() == pytest.approx([1 / 0.4, 1 / 8.0], rel=1e-6)


# ----------------------------------------------------------------------------- gradnorm
class _TwoHeads(nn.Module):
    """shared: x [N, 3] -> h [N, 4]; two heads -> two mean-squared losses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(3, 4)
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 2)

    def losses(self, x, ya, yb):
        h = torch.tanh(self.shared(x))
        return [((self.head_a(h) - ya) ** 2).mean(), ((self.head_b(h) - yb) ** 2).mean()]


def _hand_gradient(model, data, c, m, initial, alpha):
    """dL_grad/dm by hand: each loss's gradient on the shared layer from its own graph."""
    g = []
    for i in range(2):
        model.zero_grad()
        model.losses(*data)[i].backward()
        g.append(math.sqrt(sum(float((p.grad**2).sum()) for p in model.shared.parameters())))
    values = [float(v.detach()) for v in model.losses(*data)]
    initial = values if initial is None else initial
    big_g = [c[i] * m[i] * g[i] for i in range(2)]
    ratio = [values[i] / initial[i] for i in range(2)]
    mean_ratio = sum(ratio) / 2
    target = [sum(big_g) / 2 * (r / mean_ratio) ** alpha for r in ratio]
    return [math.copysign(1.0, big_g[i] - target[i]) * c[i] * g[i] for i in range(2)], values


def test_gradnorm_step_against_a_hand_computation():
    model = _TwoHeads()
    gen = torch.Generator().manual_seed(1)
    data = (torch.randn(16, 3, generator=gen), torch.randn(16, 1, generator=gen))
    data = (*data, 3 * torch.randn(16, 2, generator=gen))
    c, alpha = [1.0, 2.0], 1.5
    weighting = GradNormWeighting(c, alpha).train()
    shared = list(model.shared.parameters())

    # step 0: m = 1, L(0) = the first values, every r_i = 1: the target is the mean norm
    expected, values = _hand_gradient(model, data, c, [1.0, 1.0], None, alpha)
    model.zero_grad()
    total = weighting(model.losses(*data), shared)
    assert total.item() == pytest.approx(c[0] * values[0] + c[1] * values[1], rel=1e-6)
    total.backward()
    assert weighting.initial_losses.tolist() == pytest.approx(values, rel=1e-6)
    assert weighting.multipliers.grad.tolist() == pytest.approx(expected_step0(expected), rel=1e-5)
    # the network sees the weights as constants: its gradient is that of sum c_i m_i L_i
    net_grad = model.head_b.weight.grad.clone()
    model.zero_grad()
    (c[0] * model.losses(*data)[0] + c[1] * model.losses(*data)[1]).backward()
    assert torch.allclose(net_grad, model.head_b.weight.grad, rtol=1e-6, atol=1e-7)

    # a later step: m moved (as by an optimizer step), other L(0): renormalised, r_i^alpha
    with torch.no_grad():
        weighting.multipliers.copy_(torch.tensor([1.5, 0.9]))
        weighting.initial_losses.copy_(torch.tensor([values[0] * 0.5, values[1] * 2.0]))
    m = [1.5 * 2 / 2.4, 0.9 * 2 / 2.4]  # sum m = T = 2
    initial = weighting.initial_losses.tolist()
    expected, values = _hand_gradient(model, data, c, m, initial, alpha)
    weighting.multipliers.grad = None
    model.zero_grad()
    total = weighting(model.losses(*data), shared)
    assert weighting.multipliers.tolist() == pytest.approx(m, rel=1e-6)
    assert weighting.initial_losses.tolist() == pytest.approx(initial)  # kept from step 0
    assert total.item() == pytest.approx(sum(c[i] * m[i] * values[i] for i in range(2)), rel=1e-6)
    total.backward()
    assert weighting.multipliers.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert expected[0] > 0 > expected[1] or expected[0] < 0 < expected[1]  # one up, one down
    metrics = loss_weight_metrics(["a", "b"], weighting)
    assert metrics["loss_weight/b"].item() == pytest.approx(c[1] * m[1], rel=1e-6)


def expected_step0(expected):
    """At step 0 both r_i = 1 and the two norms straddle their mean: opposite signs."""
    assert expected[0] * expected[1] < 0
    return expected


def test_gradnorm_renormalises_over_the_weighted_losses_and_leaves_a_zero_weight_at_zero():
    weighting = GradNormWeighting([1.0, 0.0, 4.0], alpha=1.0).train()
    with torch.no_grad():
        weighting.multipliers.copy_(torch.tensor([3.0, 7.0, -1.0]))
    weighting.renormalise()  # clamp to >= 1e-3, then the two weighted ones sum to 2
    m = weighting.multipliers.tolist()
    assert m[1] == 1.0 and m[0] + m[2] == pytest.approx(2.0)
    assert m[2] == pytest.approx(2 * 1e-3 / 3.001, rel=1e-5)
    w = torch.ones(3, requires_grad=True)
    values = [(w[0] * 2) ** 2, w[1] * 5, (w[2] - 3) ** 2]
    total = weighting(values, [w])
    total.backward()
    assert weighting.multipliers.grad[1].item() == 0.0
    assert weighting.effective_weights()[1].item() == 0.0


def test_gradnorm_in_validation_only_weighs():
    weighting = GradNormWeighting([1.0, 1.0], alpha=1.5).eval()
    w = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        total = weighting([w[0] * 2, w[1] * 3], [w])
    assert total.item() == 5.0 and not bool(weighting.started)


def test_the_loss_weighting_parameters_are_not_clipped():
    model = nn.Module()
    model.encoder = nn.Linear(2, 2)
    model.loss_weighting = UncertaintyWeighting([1.0, 1.0])
    params = training_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.encoder.parameters()}
