"""fp16 autocast with a GradScaler (``train.precision = "fp16"``, and ``"auto"`` on a CUDA
device without bf16), forced on CPU: loss scaling changes no update, an fp16 run follows an
fp32 one closely, an overflowing step is skipped and counted like any non-finite step, and the
scaler's state round-trips a checkpoint so that a resumed run continues bit for bit."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import pytest
import torch

from lejepa_core.data.reader import TrajectoryData
from lejepa_core.training import distributed
from lejepa_core.training.guard import settle
from lejepa_core.training.loop import train_step
from lejepa_core.training.run import build_run, build_samplers
from lejepa_core.training.runtime import StopFlag, grad_scaler
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")


def _run(tmp_path, tiny_data, precision: str, *overrides):
    recipe = tiny_recipe(
        tmp_path, tiny_data, (f"train.precision={precision!r}", "log.every=100", *overrides)
    )
    data = TrajectoryData.open(tiny_data, device="cpu", normalize=recipe.data.normalize)
    sampler, _ = build_samplers(recipe, data, CPU)
    run = build_run(recipe, data, CPU, distributed.DistInfo())
    run.model.train()
    return run, sampler


def _batches(sampler, count: int):
    generator = torch.Generator().manual_seed(11)
    return [sampler.sample(16, generator) for _ in range(count)]


def _train(run, batches) -> list[float]:
    params = [p for p in run.model.parameters() if p.requires_grad]
    losses = []
    for batch in batches:
        result = train_step(run, run.model, batch, params, torch.Generator(), StopFlag())
        losses.append(float(result.metrics["loss/total"].detach()))
    return losses


def _weights(run) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def test_fp16_precision_builds_a_grad_scaler_only_for_fp16():
    assert isinstance(grad_scaler(CPU, "fp16"), torch.amp.GradScaler)
    assert grad_scaler(CPU, "fp32") is None and grad_scaler(CPU, "auto") is None
    assert grad_scaler(CPU, "bf16") is None


def test_loss_scaling_changes_no_update(tmp_path, tiny_data):
    """A GradScaler around an fp32 step scales and unscales by powers of two: the same update."""
    plain, sampler = _run(tmp_path, tiny_data, "fp32")
    scaled, _ = _run(tmp_path, tiny_data, "fp32")
    scaled.scaler = torch.amp.GradScaler("cpu")
    batches = _batches(sampler, 3)
    assert _train(plain, batches) == _train(scaled, batches)
    for key, value in _weights(plain).items():
        torch.testing.assert_close(_weights(scaled)[key], value, rtol=0, atol=0)


def test_an_fp16_run_follows_the_fp32_run(tmp_path, tiny_data):
    fp32, sampler = _run(tmp_path, tiny_data, "fp32")
    fp16, _ = _run(tmp_path, tiny_data, "fp16")
    assert fp16.scaler is not None and fp32.scaler is None
    batches = _batches(sampler, 4)
    losses32, losses16 = _train(fp32, batches), _train(fp16, batches)
    assert losses16 == pytest.approx(losses32, rel=2e-2)
    assert losses16 != losses32  # fp16 autocast really ran
    settle(fp16)
    assert fp16.state.nonfinite_total == 0 and fp16.scaler.get_scale() == 65536.0
    # the gradients of the last step (unscaled in place by the scaler) against fp32's: Adam's
    # early steps move a weight by about lr whatever its gradient's size, so weights would
    # amplify rounding in near-zero gradients
    g32 = torch.cat([p.grad.flatten() for p in fp32.model.parameters() if p.grad is not None])
    g16 = torch.cat([p.grad.flatten() for p in fp16.model.parameters() if p.grad is not None])
    assert 0 < (g16 - g32).norm() < 2e-2 * g32.norm()


def test_an_overflowing_fp16_step_is_skipped_counted_and_backs_the_scale_off(tmp_path, tiny_data):
    run, sampler = _run(tmp_path, tiny_data, "fp16")
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # fp16 gradients overflow
    before = _weights(run)
    params = [p for p in run.model.parameters() if p.requires_grad]
    (batch,) = _batches(sampler, 1)
    train_step(run, run.model, batch, params, torch.Generator(), StopFlag())
    assert all(torch.equal(before[k], v) for k, v in _weights(run).items())
    settle(run)
    assert run.state.nonfinite_total == 1 and run.scaler.get_scale() == 2.0**59


def test_the_scaler_state_round_trips_a_checkpoint_and_resume_is_exact(tmp_path, tiny_data):
    run, sampler = _run(tmp_path, tiny_data, "fp16")
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=2)
    batches = _batches(sampler, 5)
    _train_through(run, batches[:3])  # overflows back off the scale, good steps grow it
    saved = run.checkpoint_state()
    assert saved["scaler"] == run.scaler.state_dict()
    assert saved["scaler"]["scale"] < 2.0**40
    resumed, _ = _run(tmp_path, tiny_data, "fp16")
    resumed.load(saved, path=tmp_path / "last.pt")
    assert resumed.scaler.state_dict() == run.scaler.state_dict()
    _train_through(run, batches[3:])
    _train_through(resumed, batches[3:])
    for key, value in _weights(run).items():
        assert torch.equal(_weights(resumed)[key], value), key
    assert resumed.scaler.state_dict() == run.scaler.state_dict()


def _train_through(run, batches) -> None:
    """Steps that may be skipped (no loss figures read)."""
    params = [p for p in run.model.parameters() if p.requires_grad]
    for batch in batches:
        train_step(run, run.model, batch, params, torch.Generator(), StopFlag())
