"""train.precision: the autocast dtype chosen per device, and TF32 on CUDA (CPU tests with
``torch.cuda`` monkeypatched)."""

from __future__ import annotations

import pytest
import torch

from lejepa_core.errors import UserInputError
from lejepa_core.training import runtime

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("device", "precision", "bf16_supported", "expected"),
    [
        (CPU, "auto", True, None),
        (CPU, "fp32", True, None),
        (CPU, "bf16", False, torch.bfloat16),  # CPU autocast always has bf16
        (CUDA, "auto", True, torch.bfloat16),
        (CUDA, "auto", False, torch.float16),  # fp16 with a GradScaler
        (CUDA, "fp16", True, torch.float16),
        (CPU, "fp16", True, torch.float16),
        (CUDA, "bf16", True, torch.bfloat16),
        (CUDA, "fp32", True, None),
    ],
)
def test_autocast_dtype_follows_device_and_bf16_support(
    monkeypatch, device, precision, bf16_supported, expected
):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert runtime.autocast_dtype(device, precision) == expected


def test_explicit_bf16_on_a_cuda_device_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UserInputError, match="does not support bf16"):
        runtime.autocast_dtype(CUDA, "bf16")


def test_cpu_autocast_enters_bf16_and_fp32_enters_nothing():
    with runtime.autocast(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with runtime.autocast(CPU, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_tf32_is_switched_on_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    runtime.enable_tf32(CPU)
    assert calls == []
    runtime.enable_tf32(CUDA)
    assert calls == ["high"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("cuda") == torch.device("cuda")
    assert calls == ["high", "high"]


# ----------------------------------------------------------------------------- accumulation
def _one_step(tmp_path, tiny_data, accumulate: int) -> dict[str, torch.Tensor]:
    from lejepa_core.data.reader import TrajectoryData
    from lejepa_core.training import distributed
    from lejepa_core.training.loop import train_step
    from lejepa_core.training.run import build_run, build_samplers
    from lejepa_core.training.runtime import StopFlag
    from tests.conftest import tiny_recipe

    overrides = (
        'losses=[{name = "l1"}]',  # per-sample loss: no batch-coupled term
        "masker.p_coordinates=0.0",
        "masker.p_velocities=0.0",
        "masker.p_pair=0.0",
        "masker.p_single=0.0",
        "train.batch_size=16",
        f"train.accumulate={accumulate}",
    )
    recipe = tiny_recipe(tmp_path, tiny_data, overrides)
    data = TrajectoryData.open(tiny_data, device="cpu", normalize=recipe.data.normalize)
    sampler, _ = build_samplers(recipe, data, CPU)
    run = build_run(recipe, data, CPU, distributed.DistInfo())
    run.model.train()
    batch = sampler.sample(16, torch.Generator().manual_seed(3))
    params = [p for p in run.model.parameters() if p.requires_grad]
    train_step(run, run.model, batch, params, torch.Generator(), StopFlag())
    # the gradients the optimizer used (Adam's first step, ~lr * sign(g), would amplify
    # rounding in near-zero gradients into whole-lr differences of the weights)
    return {name: p.grad.clone() for name, p in run.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("accumulate", [2, 3])
def test_accumulated_micro_batches_give_the_whole_batch_update(tmp_path, tiny_data, accumulate):
    """train.accumulate = N splits the step's batch in N micro-batches (16 = 8 + 8, or
    6 + 5 + 5: each loss weighted by its windows): the same gradients as one pass."""
    whole = _one_step(tmp_path, tiny_data, 1)
    accumulated = _one_step(tmp_path, tiny_data, accumulate)
    for key, value in whole.items():
        torch.testing.assert_close(accumulated[key], value, rtol=1e-5, atol=1e-6)
