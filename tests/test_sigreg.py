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
from tests.conftest import finish_rank

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


# ----------------------------------------------------------------------------- null level of W frames
def _sigreg(**params) -> SIGRegLoss:
    return SIGRegLoss(SIGRegLoss.Params(num_directions=64, **params), SPEC)


def test_flattened_frames_of_one_window_read_w_times_the_null_and_per_frame_fixes_it():
    """W = 4 context frames that are the same Gaussian sample (consecutive frames nearly are):
    flattened to [B*W, D] they read W x null_level although every frame is N(0, I);
    ``per_frame`` reads null_level, and ``null_level_effective`` says which applies."""
    flat, per_frame = _sigreg(), _sigreg(per_frame=True)
    values = {"flat": [], "per_frame": []}
    for seed in range(20):
        frame = gaussian(256, 8, 100 + seed)
        context = frame[:, None, :].expand(256, 4, 8)  # [B, W, D]
        for name, loss in (("flat", flat), ("per_frame", per_frame)):
            out = loss(step_outputs(context, generator=torch.Generator().manual_seed(seed)))
            values[name].append(float(out.value))
    assert np.mean(values["flat"]) == pytest.approx(4 * null_level(), rel=0.1)
    assert np.mean(values["per_frame"]) == pytest.approx(null_level(), rel=0.1)
    context = gaussian(64, 8, 1).reshape(16, 4, 8)
    flat_out = flat(step_outputs(context, generator=torch.Generator().manual_seed(0)))
    frame_out = per_frame(step_outputs(context, generator=torch.Generator().manual_seed(0)))
    assert flat_out.metrics["null_level_effective"] == pytest.approx(4 * null_level())
    assert frame_out.metrics["null_level_effective"] == pytest.approx(null_level())
    assert float(frame_out.metrics["num_samples"]) == 16  # N = B per frame
    assert float(frame_out.metrics["weight_scale"]) == 16


def test_per_frame_is_the_mean_of_the_frames_statistics():
    context = gaussian(48, 8, 2).reshape(16, 3, 8) * torch.tensor([1.0, 2.0, 0.5])[None, :, None]
    directions = random_directions(8, 64, torch.Generator().manual_seed(3), CPU)
    expected = np.mean([float(sigreg_statistic(context[:, w], directions)[0]) for w in range(3)])
    out = _sigreg(per_frame=True)(step_outputs(context, generator=torch.Generator().manual_seed(3)))
    assert float(out.value) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- normalised form
def _value_and_gradient(loss: SIGRegLoss, x: torch.Tensor, weight: torch.Tensor, seed: int):
    """Loss of the latents ``x @ weight`` ([B, W, D]) and its gradient w.r.t. the shared
    ``weight``: what an encoder's parameters receive."""
    weight = weight.clone().requires_grad_(True)
    out = loss(step_outputs(x @ weight, generator=torch.Generator().manual_seed(seed)))
    (gradient,) = torch.autograd.grad(out.value, weight)
    return float(out.value.detach()), gradient, out


def test_normalised_value_and_gradient_do_not_depend_on_the_batch_size():
    """The normalised form is a divergence: the same batch repeated 8 times (an 8x larger
    batch with the same distribution) gives the same value and the same gradient on a shared
    parameter; the unnormalised form is N x that divergence, value and gradient 8x larger."""
    x = gaussian(64 * 2, 8, 4).reshape(64, 2, 8) * 0.5  # N(0, I/4): shrunk latents
    weight = torch.eye(8) + 0.1 * gaussian(8, 8, 5)
    big = x.repeat(8, 1, 1)
    normalised, plain = _sigreg(normalize=True), _sigreg()
    v_small, g_small, out_small = _value_and_gradient(normalised, x, weight, 6)
    v_big, g_big, out_big = _value_and_gradient(normalised, big, weight, 6)
    assert v_big == pytest.approx(v_small, rel=1e-4)
    torch.testing.assert_close(g_big, g_small, rtol=1e-3, atol=1e-6)
    p_small, pg_small, _ = _value_and_gradient(plain, x, weight, 6)
    p_big, pg_big, _ = _value_and_gradient(plain, big, weight, 6)
    assert p_big == pytest.approx(8 * p_small, rel=1e-4)
    torch.testing.assert_close(pg_big, 8 * pg_small, rtol=1e-3, atol=1e-5)
    assert v_small == pytest.approx(p_small / 128, rel=1e-6)  # N = B x W = 128
    assert (
        float(out_small.metrics["weight_scale"]) == 1.0
        and float(out_big.metrics["weight_scale"]) == 1.0
    )
    assert float(out_small.metrics["null_level_effective"]) == pytest.approx(2 * null_level() / 128)


def test_normalised_gradient_is_batch_size_independent_on_fresh_samples():
    """Independent N(0, I/4) latents, B = 256 and 2048 (the issue's measurement): the gradient
    reaching a shared parameter keeps its size when normalised (like a mean-reduced L1's) and
    grows about 8x when not."""
    weight = torch.eye(8)
    norms = {}
    for normalize in (True, False):
        for batch in (256, 2048):
            x = gaussian(batch * 2, 8, batch).reshape(batch, 2, 8) * 0.5
            _, gradient, _ = _value_and_gradient(_sigreg(normalize=normalize), x, weight, 7)
            norms[normalize, batch] = float(gradient.norm())
    assert norms[True, 2048] / norms[True, 256] == pytest.approx(1.0, abs=0.15)
    assert norms[False, 2048] / norms[False, 256] == pytest.approx(8.0, rel=0.15)


def test_rescaled_normalised_weight_reproduces_the_unnormalised_recipe():
    """multi_k_physics: weight 0.001 on the unnormalised statistic with N = 512 x 4 = 2048 is
    weight 2.048 on the normalised one, bit for bit (N is a power of two)."""
    context = gaussian(512 * 4, 32, 8).reshape(512, 4, 32) * 0.7
    spec = ModelSpec(obs_shape=(4,), latent_dim=32, context_frames=4)
    old = SIGRegLoss(SIGRegLoss.Params(num_directions=32), spec)
    new = SIGRegLoss(SIGRegLoss.Params(num_directions=32, normalize=True), spec)
    a = old(step_outputs(context, generator=torch.Generator().manual_seed(9)))
    b = new(step_outputs(context, generator=torch.Generator().manual_seed(9)))
    assert torch.equal(0.001 * a.value, 2.048 * b.value)
    assert float(a.metrics["weight_scale"]) * 0.001 == pytest.approx(2.048)


def test_both_uses_the_mean_sample_count():
    """``on = "both"``: weight_scale is the mean N of the context (B x W) and the target (B)."""
    context, target = gaussian(48, 8, 10).reshape(16, 3, 8), gaussian(16, 8, 11)
    plain = _sigreg(on="both")(step_outputs(context, target, generator=torch.Generator()))
    normalised = _sigreg(on="both", normalize=True)(
        step_outputs(context, target, generator=torch.Generator())
    )
    assert float(plain.metrics["weight_scale"]) == (48 + 16) / 2
    assert float(normalised.value) == pytest.approx(float(plain.value) / 32, rel=1e-6)
    assert plain.metrics["null_level_effective"] == pytest.approx((3 + 1) / 2 * null_level())


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
    finish_rank()


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
