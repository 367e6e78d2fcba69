"""SIGReg: null level, sensitivity to collapse and anisotropy, scaling with N, gradient
descent toward isotropy, an independent numpy implementation, DDP equivalence."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lejepa_core import ModelSpec, StepOutputs
from lejepa_plugins.sigreg import (
    FALLBACK_SEED,
    SIGRegLoss,
    null_level,
    random_directions,
    sigreg_statistic,
)

SPEC = ModelSpec(obs_shape=(4,), latent_dim=8, context_frames=2)
CPU = torch.device("cpu")


def statistic(z: torch.Tensor, seed: int = 0, num_directions: int = 128) -> float:
    g = torch.Generator().manual_seed(seed)
    directions = random_directions(z.shape[1], num_directions, g, CPU)
    return float(sigreg_statistic(z, directions)[0])


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def step_outputs(context, target=None, prediction=None, generator=None, step=0):
    b, _, d = context.shape
    zeros = torch.zeros(b, d)
    return StepOutputs(
        prediction=zeros if prediction is None else prediction,
        target=zeros if target is None else target,
        context=context,
        k=torch.ones(b, dtype=torch.long),
        generator=generator,
        step=step,
    )


# ----------------------------------------------------------------------------- independent check


def numpy_epps_pulley(x: np.ndarray, num_points: int = 17, t_max: float = 3.0) -> float:
    """Loop-based Epps-Pulley statistic of 1-D samples ``x`` against N(0, 1): trapezoid rule
    on the *symmetric* grid ``[-t_max, t_max]`` with complex exponentials."""
    n = len(x)
    grid = np.linspace(-t_max, t_max, 2 * num_points - 1)
    dt = grid[1] - grid[0]
    total = 0.0
    for k, t in enumerate(grid):
        ecf = sum(np.exp(1j * t * xi) for xi in x) / n
        integrand = abs(ecf - np.exp(-t * t / 2)) ** 2 * np.exp(-t * t / 2)
        weight = dt / 2 if k in (0, len(grid) - 1) else dt
        total += weight * integrand
    return n * total


def test_statistic_matches_numpy_loop_for_one_direction():
    z = gaussian(50, 5, seed=1) * 1.3 + 0.2
    direction = torch.nn.functional.normalize(gaussian(5, 1, seed=2), dim=0)
    ours = float(sigreg_statistic(z, direction)[0])
    projection = (z.double() @ direction.double()).numpy()[:, 0]
    assert ours == pytest.approx(numpy_epps_pulley(projection), rel=1e-4)


def test_null_level_formula_against_monte_carlo():
    """E[statistic] for N(0, 1) samples = integral of (1 - exp(-t^2)) on the grid: check the
    closed form against the numpy implementation on independent samples."""
    rng = np.random.default_rng(0)
    values = [numpy_epps_pulley(rng.standard_normal(32)) for _ in range(300)]
    monte_carlo, error = np.mean(values), np.std(values) / np.sqrt(len(values))
    assert null_level() == pytest.approx(1.0525, abs=1e-4)
    assert abs(monte_carlo - null_level()) < 4 * error + 0.01


# ----------------------------------------------------------------------------- behaviour


def test_isotropic_gaussian_sits_at_the_null_level():
    values = [statistic(gaussian(256, 64, seed), seed=seed) for seed in range(40)]
    assert np.mean(values) == pytest.approx(null_level(), rel=0.1)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: torch.zeros(n, 16), id="all-zero"),
        pytest.param(lambda n: gaussian(1, 16, 3).expand(n, 16), id="all-equal"),
        pytest.param(lambda n: gaussian(n, 1, 4) @ gaussian(1, 16, 5), id="rank-1"),
        pytest.param(lambda n: gaussian(n, 16, 6) * torch.tensor([10.0] + [1.0] * 15), id="x10"),
    ],
)
def test_degenerate_batches_are_many_times_the_null_and_grow_with_n(make):
    small, large = statistic(make(256)), statistic(make(1024))
    assert small > 20 * null_level()
    assert large / small == pytest.approx(4.0, rel=0.25)


def test_gaussian_does_not_grow_with_n():
    small = np.mean([statistic(gaussian(128, 16, s), seed=s) for s in range(15)])
    large = np.mean([statistic(gaussian(2048, 16, s), seed=s) for s in range(15)])
    assert large / small == pytest.approx(1.0, abs=0.3)


def eigenvalue_spread(z: torch.Tensor) -> float:
    eigenvalues = torch.linalg.eigvalsh(torch.cov(z.detach().T))
    return float(eigenvalues.max() / eigenvalues.min())


def test_gradient_descent_on_sigreg_alone_moves_toward_isotropy():
    torch.manual_seed(0)
    z = gaussian(256, 1, 7) @ gaussian(1, 8, 8) + 0.05 * gaussian(256, 8, 9)
    z = z.requires_grad_()
    optimizer = torch.optim.Adam([z], lr=0.05)
    loss = SIGRegLoss(SIGRegLoss.Params(on="prediction", num_directions=64), SPEC)
    generator = torch.Generator().manual_seed(10)
    spread_before = eigenvalue_spread(z)
    before = statistic(z.detach(), seed=11)
    for _ in range(200):
        outputs = step_outputs(torch.zeros(256, 1, 8), prediction=z, generator=generator)
        value = loss(outputs).value
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    after = statistic(z.detach(), seed=11)
    assert spread_before > 500 and eigenvalue_spread(z) < 10
    assert before > 30 * null_level() and after < 2 * null_level()


def test_gradient_reaches_inputs_and_is_finite_for_collapsed_batches():
    for context in (gaussian(16, 8, 12).reshape(8, 2, 8), torch.zeros(8, 2, 8)):
        context = context.clone().requires_grad_()
        value = SIGRegLoss(SIGRegLoss.Params(), SPEC)(step_outputs(context)).value
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(context.grad).all()
        # A batch collapsed exactly onto 0 is a stationary point (d cos/dx = 0 at 0 and the
        # mean of sin is 0): its gradient is exactly zero. Identical samples always get
        # identical gradients, so SIGReg alone cannot split an exact point mass.
        if context.detach().abs().sum() > 0:
            assert context.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- wiring


def test_directions_are_fresh_each_step_and_reproducible():
    loss = SIGRegLoss(SIGRegLoss.Params(num_directions=4), SPEC)
    context = gaussian(32, 8, 13).reshape(16, 2, 8) * 2.0
    generator = torch.Generator().manual_seed(14)
    first = loss(step_outputs(context, generator=generator)).value
    second = loss(step_outputs(context, generator=generator)).value
    assert first != second
    again = loss(step_outputs(context, generator=torch.Generator().manual_seed(14))).value
    assert again == first
    # without a generator: seeded from the step, identical on every rank
    step5 = loss(step_outputs(context, step=5)).value
    assert loss(step_outputs(context, step=5)).value == step5
    assert loss(step_outputs(context, step=6)).value != step5
    fallback = torch.Generator().manual_seed(FALLBACK_SEED + 5)
    assert loss(step_outputs(context, generator=fallback)).value == step5


@pytest.mark.parametrize("on", ["context", "target", "prediction", "both"])
def test_on_selects_and_flattens_the_latents(on):
    context = gaussian(24, 8, 15).reshape(12, 2, 8)
    target, prediction = gaussian(12, 8, 16) * 3.0, gaussian(12, 8, 17) * 0.1
    loss = SIGRegLoss(SIGRegLoss.Params(on=on, num_directions=32), SPEC)
    result = loss(step_outputs(context, target, prediction, torch.Generator().manual_seed(18)))
    directions = random_directions(8, 32, torch.Generator().manual_seed(18), CPU)
    expected = {
        name: float(sigreg_statistic(z, directions)[0])
        for name, z in [("context", context.reshape(24, 8)), ("target", target)]
        + [("prediction", prediction)]
    }
    if on == "both":
        wanted = (expected["context"] + expected["target"]) / 2
        assert float(result.metrics["context"]) == pytest.approx(expected["context"], rel=1e-5)
    else:
        wanted = expected[on]
    assert result.value.item() == pytest.approx(wanted, rel=1e-5)
    assert result.metrics["null_level"] == pytest.approx(null_level())
    assert result.metrics["num_samples"] == (12 if on in ("target", "prediction") else 24)


def test_params_validation():
    with pytest.raises(ValueError, match="num_points"):
        SIGRegLoss.Params(num_points=1)
    with pytest.raises(ValueError, match="num_directions"):
        SIGRegLoss.Params(num_directions=0)


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        full = gaussian(24, 8, 19).reshape(12, 2, 8) * 0.7
        local = full.chunk(world_size)[rank].clone().requires_grad_()
        loss = SIGRegLoss(SIGRegLoss.Params(num_directions=16), SPEC)
        result = loss(step_outputs(local, generator=torch.Generator().manual_seed(20)))
        result.value.backward()
        torch.save(
            {
                "value": result.value.detach(),
                "grad": local.grad,
                "n": result.metrics["num_samples"],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_statistic_and_gradients_equal_the_global_batch(tmp_path):
    """Two gloo ranks holding halves of the batch compute the global batch's statistic, and
    after DDP's gradient averaging each sample gets the global batch's gradient."""
    world_size = 2
    torch.multiprocessing.spawn(
        _ddp_worker,
        args=(world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    full = (gaussian(24, 8, 19).reshape(12, 2, 8) * 0.7).requires_grad_()
    loss = SIGRegLoss(SIGRegLoss.Params(num_directions=16), SPEC)
    reference = loss(step_outputs(full, generator=torch.Generator().manual_seed(20))).value
    reference.backward()
    for rank, expected_grad in enumerate(full.grad.chunk(world_size)):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["n"] == 24
        assert result["value"].item() == pytest.approx(reference.item(), rel=1e-5)
        averaged = result["grad"] / world_size  # what DDP's all-reduce-mean hands the optimiser
        torch.testing.assert_close(averaged, expected_grad, rtol=1e-4, atol=1e-6)
