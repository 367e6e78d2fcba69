"""Losses that train nothing are reported (``lejepa check``, the start of ``lejepa run``), and
each loss's share of the gradient norm on the context encoder is logged at log steps."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import json
import math

import attrs
import pytest
import torch
from click.testing import CliRunner

from lejepa_core import Loss, LossOutput, hookimpl
from lejepa_core.params import param
from lejepa_core.recipe import recipe_from_dict
from lejepa_core.testing import STANDARD_SPECS, observations
from lejepa_core.training import grad_paths
from lejepa_core.training.grad_paths import gradient_path_warnings, gradient_shares
from lejepa_core.training.target import make_ema_copy
from tests.conftest import tiny_recipe, write_tiny_recipe

SPEC = STANDARD_SPECS["state"]  # obs [3, 4], features x, y, vx, vy


def recipe(*losses: dict, mode: str = "ema", masker: str = "feature"):
    return recipe_from_dict(
        {
            "model": {"latent_dim": SPEC.latent_dim},
            "encoder": {"name": "mlp", "hidden_dim": 16, "depth": 1},
            "predictor": {"name": "residual", "hidden_dim": 16, "depth": 1},
            "masker": {"name": masker},
            "losses": list(losses),
            "target": {"mode": mode},
        }
    )


L1 = {"name": "l1"}
SIGREG_TARGET = {"name": "sigreg", "weight": 0.02, "on": "target", "num_directions": 8}
SIGREG_CONTEXT = {**SIGREG_TARGET, "on": "context"}


# ----------------------------------------------------------------------------- the check
def test_sigreg_on_an_ema_target_warns_naming_the_loss():
    """The ARC recipes' configuration: EMA target encoder, SIGReg on the target latents."""
    warnings = gradient_path_warnings(recipe(L1, SIGREG_TARGET), SPEC)
    assert warnings == [
        'losses[1] (sigreg, weight 0.02): no gradient reaches any trainable parameter (on = "target" '
        "with an EMA target encoder); it is logged but shapes nothing"
    ]


@pytest.mark.parametrize(
    "losses, mode",
    [
        ((L1, SIGREG_CONTEXT), "ema"),  # multi_k_physics
        ((L1, {**SIGREG_TARGET, "on": "both"}), "ema"),  # the context half trains
        (({**L1, "stop_gradient_target": False}, SIGREG_TARGET), "shared"),  # lejepa_physics
    ],
)
def test_losses_that_reach_the_model_do_not_warn(losses, mode):
    assert gradient_path_warnings(recipe(*losses, mode=mode), SPEC) == []


def test_weight_zero_is_a_figure_not_a_warning():
    assert gradient_path_warnings(recipe(L1, {**SIGREG_TARGET, "weight": 0.0}), SPEC) == []


class TargetScaleLoss(Loss):
    """Test loss with a parameter of its own, reading only the target latents."""

    @attrs.frozen(kw_only=True)
    class Params:
        start: float = param(1.0, "initial scale")

    def __init__(self, params, spec):
        super().__init__(params, spec)
        self.scale = torch.nn.Parameter(torch.tensor(params.start))

    def forward(self, outputs):
        return LossOutput(value=(self.scale * outputs.target).square().mean())


class _Plugin:
    @hookimpl
    def register_losses(self, register):
        register("test_target_scale", TargetScaleLoss)


@pytest.fixture
def target_scale_loss():
    from lejepa_core.registry import get_plugin_manager

    pm = get_plugin_manager()
    plugin = _Plugin()
    pm.register_plugin(plugin, name="test-grad-paths")
    yield
    pm.unregister(plugin)


def test_a_loss_that_trains_only_itself_is_named(target_scale_loss):
    warnings = gradient_path_warnings(recipe(L1, {"name": "test_target_scale"}), SPEC)
    assert len(warnings) == 1
    assert warnings[0].startswith("losses[1] (test_target_scale, weight 1): its gradient reaches")
    assert "only the loss's own parameters" in warnings[0] and "EMA target encoder" in warnings[0]


def test_the_check_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    gradient_path_warnings(recipe(L1, SIGREG_TARGET), SPEC)
    assert torch.equal(torch.rand(3), expected)


def test_lejepa_check_prints_the_warning(tmp_path, tiny_data):
    from lejepa_core.cli import main

    path = write_tiny_recipe(tmp_path, tiny_data)
    args = ["check", str(path), "--set", "losses.1.on=target"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: losses[1] (sigreg, weight 0.01): no gradient reaches" in result.output
    clean = CliRunner().invoke(main, ["check", str(path)], catch_exceptions=False)
    assert clean.exit_code == 0 and "warning" not in clean.output


def test_lejepa_run_warns_at_the_start(tmp_path, tiny_data, capsys):
    from lejepa_core.training.loop import train

    config = tiny_recipe(
        tmp_path, tiny_data, ("losses.1.on=target", "train.epochs=1", "train.steps_per_epoch=2")
    )
    result = train(config, out=tmp_path / "run")
    err = capsys.readouterr().err
    assert "warning: losses[1] (sigreg, weight 0.01): no gradient reaches" in err
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert train_records[-1]["grad_share/sigreg"] == 0.0
    assert train_records[-1]["grad_share/l1"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the shares
def _step(config, seed: int = 0):
    """A built model and one forward (loss + outputs) on a synthetic batch of 8 windows."""
    from lejepa_core.build import build_model

    torch.manual_seed(seed)
    model = build_model(config, SPEC)
    target = make_ema_copy(model.context_encoder) if config.target.mode == "ema" else None
    g = torch.Generator().manual_seed(seed)
    context = observations(SPEC, g, 8 * SPEC.context_frames).reshape(8, SPEC.context_frames, 3, 4)
    step_loss, _ = model(
        context,
        observations(SPEC, g, 8),
        torch.tensor([SPEC.horizons[i % 3] for i in range(8)]),
        target_encoder=target,
        mask_generator=torch.Generator().manual_seed(1),
        loss_generator=torch.Generator().manual_seed(2),
        step=0,
    )
    return model, step_loss


def _hand_norms(model, step_loss) -> dict[str, float]:
    """Each weighted loss backpropagated alone; the L2 norm of the encoder's .grad (float64)."""
    params = list(model.context_encoder.parameters())
    weights = dict(zip(model.labels, model.weights, strict=True))
    norms = {}
    for label, value in step_loss.parts.items():
        for p in params:
            p.grad = None
        (weights.get(label, 1.0) * value).backward(retain_graph=True)
        norms[label] = math.sqrt(
            sum(float(p.grad.double().square().sum()) for p in params if p.grad is not None)
        )
    return norms


@pytest.mark.parametrize("mode", ["ema", "shared"])
def test_shares_sum_to_one_and_match_a_hand_computation(mode):
    config = recipe(L1, {**SIGREG_CONTEXT, "weight": 0.5}, mode=mode)
    model, step_loss = _step(config)
    shares = gradient_shares(step_loss, model)
    assert set(shares) == {"grad_share/l1", "grad_share/sigreg"}
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, nothing accumulated
    norms = _hand_norms(model, step_loss)
    total = sum(norms.values())
    for label, norm in norms.items():
        assert float(shares[f"grad_share/{label}"]) == pytest.approx(norm / total, rel=1e-5)
    assert float(sum(shares.values())) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < float(shares["grad_share/sigreg"]) < 1.0


def test_a_loss_without_a_path_has_share_zero_and_the_graph_survives():
    model, step_loss = _step(recipe(L1, SIGREG_TARGET))
    shares = gradient_shares(step_loss, model)
    assert float(shares["grad_share/sigreg"]) == 0.0
    assert float(shares["grad_share/l1"]) == pytest.approx(1.0)
    step_loss.total.backward()  # the step's own backward still runs on the kept graph
    assert all(p.grad is not None for p in model.context_encoder.parameters())


def test_shares_are_logged_at_log_steps_only(tmp_path, tiny_data, monkeypatch):
    from lejepa_core.training import loop

    calls = []
    real = grad_paths.gradient_shares

    def spy(step_loss, model):
        calls.append(1)
        return real(step_loss, model)

    monkeypatch.setattr(loop, "gradient_shares", spy)
    config = tiny_recipe(tmp_path, tiny_data, ("train.epochs=1", "train.steps_per_epoch=7"))
    result = loop.train(config, out=tmp_path / "run")
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [2, 4, 6, 7]  # log.every = 2, and the last
    assert len(calls) == 4
    for r in train_records:
        shares = {k: v for k, v in r.items() if k.startswith("grad_share/")}
        assert set(shares) == {"grad_share/l1", "grad_share/sigreg"}
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
