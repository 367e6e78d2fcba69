"""The gumbel quantizer's options (issue 11): distance logits, temperature annealing,
reconstruction; against independent formulas, with windows and the side path, no host sync."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lejepa_core import ModelSpec
from lejepa_core.testing import HostSyncCounter, ScalarReadCounter, check_component
from lejepa_plugins.grid_latents import latent_windows
from lejepa_plugins.quantizers import GumbelQuantizer, annealed_temperature

D = 6


def gumbel(spec: ModelSpec | None = None, **kw) -> GumbelQuantizer:
    kw.setdefault("codebook_size", 8)
    return GumbelQuantizer(
        GumbelQuantizer.Params(**kw), spec or ModelSpec(obs_shape=(4,), latent_dim=D)
    )


def grid_spec(rows=4, cols=4, channels=2) -> ModelSpec:
    return ModelSpec(obs_shape=(4,), latent_dim=rows * cols * channels, latent_grid=(rows, cols))


def test_defaults_are_todays_linear_gumbel_at_a_fixed_temperature():
    torch.manual_seed(0)
    model = gumbel(temperature=0.7)
    assert "forward_calls" not in model.state_dict()  # old checkpoints still load
    z = torch.randn(12, D)
    torch.manual_seed(1)
    out = model(z)
    torch.manual_seed(1)
    reference = F.gumbel_softmax(model.to_logits(z), tau=0.7, hard=True)
    assert torch.equal(out.codes, reference.argmax(-1))
    torch.testing.assert_close(out.z_q, reference @ model.codebook.weight)
    assert float(out.metrics["temperature"]) == pytest.approx(0.7)
    assert float(model(z).metrics["temperature"]) == pytest.approx(0.7)  # constant


@pytest.mark.parametrize("scale", ["sqrt_dimension", "dimension"])
def test_distance_logits_are_negative_squared_distances_over_the_scale(scale):
    torch.manual_seed(2)
    model = gumbel(logits="distance", distance_scale=scale)
    divisor = math.sqrt(D) if scale == "sqrt_dimension" else D
    assert not hasattr(model, "to_logits")
    z = torch.randn(10, D)
    codebook = model.codebook.weight.detach()
    expected = torch.tensor(
        [
            [
                -sum((a - b) ** 2 for a, b in zip(x, e, strict=True)) / divisor
                for e in codebook.tolist()
            ]
            for x in z.tolist()
        ]
    )
    torch.testing.assert_close(model.compute_logits(z).detach(), expected, rtol=1e-5, atol=1e-5)
    model.eval()  # eval: the nearest code, as vq's assignment
    assert torch.equal(model(z).codes, torch.cdist(z, codebook).argmin(-1))


def test_sqrt_scale_keeps_the_spread_over_codes_order_one_whatever_the_dimension():
    """z and codes ~ N(0, I): over codes, ||z - e||² has std sqrt(Σ(2 + 4 z_i²)) ≈ sqrt(6 D),
    so / sqrt(D) spreads the logits by ≈ sqrt(6) for every D, while / D (values ≈ -2) spreads
    them by sqrt(6 / D): near-uniform, noise-driven Gumbel samples for large blocks."""
    for dim in (4, 1024):
        spreads = {}
        for scale in ("sqrt_dimension", "dimension"):
            torch.manual_seed(3)
            spec = ModelSpec(obs_shape=(4,), latent_dim=dim)
            model = gumbel(spec, logits="distance", distance_scale=scale, codebook_size=64)
            logits = model.compute_logits(torch.randn(256, dim)).detach()
            spreads[scale] = logits.std(dim=1).mean().item()
            if scale == "dimension":
                assert logits.mean().item() == pytest.approx(-2.0, abs=0.3), dim
        assert spreads["sqrt_dimension"] == pytest.approx(math.sqrt(6), rel=0.25), dim
        assert spreads["dimension"] == pytest.approx(math.sqrt(6 / dim), rel=0.25), dim


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_annealed_temperature_matches_the_formula(schedule):
    start, final, steps = 2.0, 0.5, 10
    for t in (0, 1, 5, 9, 10, 25):
        u = min(t, steps) / steps
        if schedule == "exponential":
            expected = start * (final / start) ** u
        else:
            expected = final + (start - final) * (1 + math.cos(math.pi * u)) / 2
        got = annealed_temperature(start, final, steps, torch.tensor(t), schedule)
        assert got.dtype == torch.float32 and got.dim() == 0
        assert float(got) == pytest.approx(expected, rel=1e-6), (schedule, t)


def test_annealing_counts_training_forwards_only_and_resumes_from_a_state_dict():
    torch.manual_seed(4)
    params = dict(temperature=2.0, temperature_final=0.5, anneal_steps=4, logits="distance")
    model = gumbel(**params)
    z = torch.randn(16, D)
    seen = [float(model(z).metrics["temperature"]) for _ in range(3)]
    assert seen == pytest.approx([2.0 * 0.25 ** (t / 4) for t in range(3)])
    model.eval()
    model(z)  # eval forwards do not advance the schedule
    assert int(model.forward_calls) == 3
    resumed = gumbel(**params)
    resumed.load_state_dict(model.state_dict())
    resumed.train()
    assert float(resumed(z).metrics["temperature"]) == pytest.approx(2.0 * 0.25 ** (3 / 4))
    for _ in range(5):
        out = resumed(z)
    assert float(out.metrics["temperature"]) == pytest.approx(0.5)  # held at the final value


def test_a_lower_temperature_gives_sharper_soft_weights():
    torch.manual_seed(5)
    model = gumbel(logits="distance", hard=False)
    z = torch.randn(64, D)

    def confidence(tau: float) -> float:
        torch.manual_seed(6)
        weights, _ = model.assignments(z, tau)
        return weights.max(-1).values.mean().item()

    assert confidence(0.1) > confidence(1.0) > confidence(10.0)


def test_reconstruction_is_mse_with_gradients_to_encoder_and_codebook():
    torch.manual_seed(7)
    model = gumbel(logits="distance", reconstruction_weight=0.5, diversity_weight=0.2)
    z = torch.randn(20, D, requires_grad=True)
    out = model(z)
    reconstruction = ((out.z_q - z) ** 2).mean()
    mean_probs = model.compute_logits(z).softmax(-1).mean(0)
    kl = (mean_probs * (mean_probs * 8).log()).sum()
    torch.testing.assert_close(out.loss, 0.5 * reconstruction + 0.2 * kl)
    torch.testing.assert_close(out.metrics["reconstruction"], reconstruction.detach())
    out.loss.backward()
    assert z.grad.abs().sum() > 0 and model.codebook.weight.grad.abs().sum() > 0


def test_side_path_with_windows_codes_each_block_by_distance():
    spec = grid_spec()
    torch.manual_seed(8)
    model = gumbel(spec, logits="distance", window=2, path="side", anneal_steps=3)
    assert not model.feeds_predictor and model.codebook.weight.shape == (8, 2 * 2 * 2)
    z = torch.randn(5, 3, spec.latent_dim)
    out = model(z)  # training: one counted forward whatever the number of blocks
    assert out.z_q.shape == z.shape and out.codes.shape == (5, 3, 4)
    assert int(model.forward_calls) == 1
    model.eval()
    out = model(z)
    blocks = latent_windows(z, spec, 2)  # [5, 3, 4, 8]
    nearest = torch.cdist(blocks.reshape(-1, 8), model.codebook.weight.detach()).argmin(-1)
    assert torch.equal(out.codes.reshape(-1), nearest)
    torch.testing.assert_close(latent_windows(out.z_q, spec, 2), model.codebook.weight[out.codes])


def test_annealed_distance_forward_makes_no_host_sync_and_passes_the_conformance_kit():
    params = GumbelQuantizer.Params(
        codebook_size=8,
        logits="distance",
        anneal_steps=5,
        anneal="cosine",
        reconstruction_weight=0.1,
        diversity_weight=0.1,
    )
    spec = ModelSpec(obs_shape=(4,), latent_dim=D)
    assert check_component("quantizer", GumbelQuantizer, spec, params=params) == ["given"]
    model = GumbelQuantizer(params, spec).train()
    z = torch.randn(16, D)
    model(z)  # warm-up
    with HostSyncCounter() as syncs, ScalarReadCounter() as reads:
        for _ in range(3):
            model(z)
    assert syncs.calls == [] and reads.calls == []


def test_bad_values_name_the_parameter():
    with pytest.raises(ValueError, match="logits"):
        GumbelQuantizer.Params(logits="cosine")
    with pytest.raises(ValueError, match="anneal"):
        GumbelQuantizer.Params(anneal="linear")
    with pytest.raises(ValueError, match="temperature_final"):
        GumbelQuantizer.Params(temperature_final=0.0)
    with pytest.raises(ValueError, match="distance_scale"):
        GumbelQuantizer.Params(distance_scale="norm")
    with pytest.raises(ValueError, match="anneal_steps"):
        GumbelQuantizer.Params(anneal_steps=-1)


@pytest.mark.slow
def test_arc_training_steps_with_annealed_distance_codes_make_no_host_read(tmp_path):
    """arc_vq with its quantizer swapped for gumbel (distance logits, annealing, windows of
    8 x 8 locations, side path): training steps make no host sync (the ARC model's own
    below-Python scalar reads, 4 a step with vq too, are not the quantizer's: the module test
    above counts those for the quantizer alone)."""
    from lejepa_core.data.prepare import open_data
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training import distributed
    from lejepa_core.training.run import build_run, build_samplers
    from tests.test_host_syncs import RECIPES, TINY, _steps

    text = (RECIPES / "arc_vq.toml").read_text()
    start, end = text.index("[quantizer]"), text.index("[masker]")
    quantizer = (
        '[quantizer]\nname = "gumbel"\ncodebook_size = 16\nwindow = 8\npath = "side"\n'
        'logits = "distance"\nanneal_steps = 4\nreconstruction_weight = 0.1\n\n'
    )
    recipe_path = tmp_path / "arc_gumbel.toml"
    recipe_path.write_text(text[:start] + quantizer + text[end:])
    overrides = [*TINY, f"data.path={(tmp_path / 'arc').as_posix()}.h5"]
    recipe = load_recipe(recipe_path, overrides)
    device = torch.device("cpu")
    data = open_data(recipe, device, progress=False)
    sampler, _ = build_samplers(recipe, data, device)
    run = build_run(recipe, data, device, distributed.DistInfo())
    run.model.train()
    _steps(run, sampler, 2)
    with HostSyncCounter() as syncs:
        _steps(run, sampler, 3)
    assert syncs.calls == []
    assert int(run.model.quantizer.forward_calls) == 5
