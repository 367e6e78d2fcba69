"""Grid latents: the recipe keys, the cells encoder, the transport predictor, quantizer
windows and the per-location grid probe (docs/grids.md)."""

from __future__ import annotations

import math

import pytest
import torch

from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.grid_probe import LocalGridProbe
from lejepa_core.eval.grid_rules import GridRules
from lejepa_core.interfaces import ModelSpec
from lejepa_core.recipe import ModelConfig
from lejepa_plugins.grid_latents import (
    CellsEncoder,
    TransportPredictor,
    from_windows,
    latent_windows,
)
from lejepa_plugins.quantizers import FiniteScalarQuantizer, VectorQuantizer

ENV = EnvInfo(cell_values=11, pad_value=10, background_value=0)


def grid_spec(rows=8, cols=8, channels=12, patch=1, frames=2, obs=(10, 10)) -> ModelSpec:
    return ModelSpec(
        obs_shape=obs,
        obs_dtype="int8",
        latent_dim=rows * cols * channels,
        context_frames=frames,
        horizons=(1, 2, 4),
        env=ENV,
        latent_grid=(rows, cols),
        latent_patch=patch,
    )


def random_grids(n: int, size=(10, 10), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    grids = torch.zeros(n, *size, dtype=torch.long)
    objects = torch.rand(n, *size, generator=g) < 0.1
    grids[objects] = torch.randint(1, 10, (int(objects.sum()),), generator=g)
    return grids


def test_model_config_checks_the_grid():
    with pytest.raises(ValueError, match="latent_dim: expected a multiple of latent_grid's 4 x 4"):
        ModelConfig(latent_dim=50, latent_grid=(4, 4))
    with pytest.raises(ValueError, match=r"latent_grid: expected \[rows, cols\]"):
        ModelConfig(latent_dim=64, latent_grid=(4, 4, 4))
    config = ModelConfig(latent_dim=64, latent_grid=(4, 4))
    assert config.latent_grid == (4, 4)


def test_windows_are_blocks_of_locations_and_invert():
    spec = grid_spec(rows=4, cols=6, channels=3)
    z = torch.arange(2 * spec.latent_dim, dtype=torch.float32).reshape(2, -1)
    blocks = latent_windows(z, spec, 2)  # [2, G = 2 * 3, 2 * 2 * 3]
    assert blocks.shape == (2, 6, 12)
    grid = z.reshape(2, 4, 6, 3)
    # block 1 is rows 0-1, cols 2-3; its locations row-major, channels last
    expected = torch.cat([grid[:, 0, 2], grid[:, 0, 3], grid[:, 1, 2], grid[:, 1, 3]], dim=-1)
    assert torch.equal(blocks[:, 1], expected)
    assert torch.equal(from_windows(blocks, spec, 2), z)


def test_cells_encoder_starts_as_an_invertible_code_of_each_cell():
    spec = grid_spec(channels=12)  # 12 >= 11 values: the initial linear code is invertible
    torch.manual_seed(0)
    encoder = CellsEncoder(CellsEncoder.Params(), spec)
    grids = random_grids(32)
    z = encoder(grids.to(torch.int8))
    assert z.shape == (32, spec.latent_dim)
    rules = GridRules(ENV, 11)
    probe = LocalGridProbe.fit(z, grids, rules, (8, 8, 12, 1))
    decoded = probe.decode(z)
    # the latent covers the top-left 8 x 8 cells exactly; the margin decodes as the fit's first grid
    assert torch.equal(decoded[:, :8, :8], grids[:, :8, :8])
    assert torch.equal(decoded[:, 8:], grids[:1, 8:].expand(32, -1, -1))


def test_cells_encoder_reads_patches_and_refuses_a_grid_larger_than_the_observation():
    spec = grid_spec(rows=5, cols=5, channels=44, patch=2)  # 2 x 2 cells x 11 values
    encoder = CellsEncoder(CellsEncoder.Params(), spec)
    grids = random_grids(64, seed=1)
    z = encoder(grids)
    probe = LocalGridProbe.fit(z, grids, GridRules(ENV, 11), (5, 5, 44, 2))
    assert torch.equal(probe.decode(z), grids)
    with pytest.raises(
        ValueError, match="covers 12 x 12 cells; expected at most the observation's 10 x 10"
    ):
        CellsEncoder(CellsEncoder.Params(), grid_spec(rows=6, cols=6, patch=2))
    with pytest.raises(ValueError, match=r"needs a grid latent: set model.latent_grid"):
        CellsEncoder(
            CellsEncoder.Params(),
            ModelSpec(obs_shape=(10, 10), obs_dtype="int8", latent_dim=8, env=ENV),
        )


@pytest.mark.parametrize("mode", ["gather", "splat"])
def test_transport_starts_as_copy_last_and_moves_features_by_its_offset(mode):
    spec = grid_spec(rows=6, cols=7, channels=3)
    torch.manual_seed(0)
    params = TransportPredictor.Params(radius=2, copy_bias=30.0, residual=False, mode=mode)
    predictor = TransportPredictor(params, spec)
    z = torch.randn(4, 2, spec.latent_dim)
    k = torch.tensor([1, 2, 4, 1])
    assert torch.allclose(predictor(z, k), z[:, -1], atol=1e-5)
    # all weight on the offset (+1 row, -2 cols)
    centre = 12  # of the 5 x 5 = 25 offsets
    with torch.no_grad():
        predictor.logits.bias.zero_()
        predictor.logits.bias[centre + 1 * 5 - 2] = 50.0
    out = predictor(z, k).reshape(4, 6, 7, 3)
    last = z[:, -1].reshape(4, 6, 7, 3)
    expected = torch.zeros_like(last)
    if mode == "gather":  # output (r, c) takes the last frame's (r+1, c-2); outside is zero
        expected[:, :5, 2:] = last[:, 1:, :5]
    else:  # the last frame's (r, c) lands on (r+1, c-2); where nothing lands: the fill (0)
        expected[:, 1:, :5] = last[:, :5, 2:]
    assert torch.allclose(out, expected, atol=1e-4)


def test_splat_fills_the_locations_nothing_reaches():
    spec = grid_spec(rows=6, cols=7, channels=3)
    params = TransportPredictor.Params(radius=2, residual=False, mode="splat")
    predictor = TransportPredictor(params, spec)
    with torch.no_grad():
        predictor.logits.bias.zero_()
        predictor.logits.bias[12 + 1 * 5 - 2] = 50.0  # everything moves (+1, -2)
        predictor.fill.bias.copy_(torch.tensor([7.0, 8.0, 9.0]))
    out = predictor(torch.randn(2, 2, spec.latent_dim), torch.tensor([1, 4])).reshape(2, 6, 7, 3)
    fill = torch.tensor([7.0, 8.0, 9.0])
    assert torch.allclose(out[:, 0], fill.expand(2, 7, 3))  # row 0: nothing comes from above
    assert torch.allclose(out[:, :, 5:], fill.expand(2, 6, 2, 3))  # the last two columns


def test_splat_importance_decides_which_arrival_a_location_shows():
    """Two sources land on one location: the one with importance +4 outweighs the other
    e^8 : 1, and the output is their weighted mean, not their sum."""
    spec = grid_spec(rows=1, cols=3, channels=1, frames=1)
    params = TransportPredictor.Params(radius=1, residual=False, mode="splat", depth=1, width=8)
    predictor = TransportPredictor(params, spec)
    last = torch.tensor([1.0, 0.0, 3.0]).reshape(1, 1, 1, 3)  # [B, C, R, Q]
    weights = torch.zeros(1, 9, 1, 3)
    weights[0, 5, 0, 0] = 1.0  # (0, +1): location 0 moves right
    weights[0, 3, 0, 2] = 1.0  # (0, -1): location 2 moves left
    weights[0, 4, 0, 1] = 1.0  # location 1 stays
    with torch.no_grad():
        predictor.importance.weight.zero_()
        predictor.importance.bias.zero_()
    x = torch.zeros(1, 8, 1, 3)
    out = predictor._splat(last, weights, x)
    assert torch.allclose(out[0, 0, 0, 1], torch.tensor(4.0 / 3.0))  # mean of 1, 0, 3
    x[0, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
    with torch.no_grad():
        predictor.importance.weight[0, 0] = 40.0  # 4 tanh(+-10): +4 at location 0, -4 elsewhere
    out = predictor._splat(last, weights, x)
    big, small = math.exp(4 * math.tanh(10)), math.exp(-4 * math.tanh(10))
    expected = (1.0 * big + 3.0 * small) / (big + 2 * small)
    assert out[0, 0, 0, 1].item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("mode", ["gather", "splat"])
def test_transport_learns_a_constant_shift_in_a_few_steps(mode):
    spec = grid_spec(rows=6, cols=6, channels=4, frames=2)
    torch.manual_seed(0)
    params = TransportPredictor.Params(width=16, depth=1, radius=1, mode=mode)
    predictor = TransportPredictor(params, spec)
    optimiser = torch.optim.Adam(predictor.parameters(), lr=3e-2)
    for _ in range(60):
        maps = torch.randn(16, 2, 6, 6, 4)
        target = torch.roll(maps[:, -1], shifts=1, dims=2)  # everything moves one column right
        target[:, :, 0] = 0
        loss = (
            (predictor(maps.flatten(2), torch.ones(16, dtype=torch.long)) - target.flatten(1))
            .square()
            .mean()
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.05 * target.square().mean().item()


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_quantizer_windows_code_each_block(quantizer):
    spec = grid_spec(rows=4, cols=4, channels=2)
    if quantizer == "vq":
        module = VectorQuantizer(VectorQuantizer.Params(codebook_size=8, window=2), spec)
        assert module.codebook.shape == (8, 2 * 2 * 2)
    else:
        module = FiniteScalarQuantizer(FiniteScalarQuantizer.Params(levels=(3, 3), window=2), spec)
    z = torch.randn(5, 3, spec.latent_dim)
    out = module.eval()(z)  # eval: no EMA step moves the codebook after coding
    assert out.z_q.shape == z.shape
    assert out.codes.shape == (5, 3, 4)  # 4 blocks of 2 x 2 locations
    if quantizer == "vq":  # z_q holds each block's code vector in the block's place
        blocks = latent_windows(out.z_q, spec, 2)
        assert torch.allclose(blocks, module.codebook[out.codes], atol=1e-6)
    with pytest.raises(ValueError, match="window: expected a divisor of latent_grid 4 x 4, got 3"):
        VectorQuantizer(VectorQuantizer.Params(window=3), spec)


def test_local_probe_is_prior_balanced_and_reads_only_each_location():
    grids = random_grids(200, seed=2)
    spec = grid_spec(rows=10, cols=10, channels=11)
    onehot = torch.nn.functional.one_hot(grids, 11).float()  # the latent is the one-hot itself
    noise = 0.15 * torch.randn(onehot.shape, generator=torch.Generator().manual_seed(3))
    z = (onehot + noise).flatten(1)
    rules = GridRules(ENV, 11)
    probe = LocalGridProbe.fit(z, grids, rules, (10, 10, 11, 1))
    assert probe.weight.shape == (11, 11)
    objects = grids > 0
    recall = (probe.decode(z) == grids)[objects].float().mean()
    plain = LocalGridProbe.fit(z, grids, rules, (10, 10, 11, 1), balance=0.0)
    plain_recall = (plain.decode(z) == grids)[objects].float().mean()
    assert recall > plain_recall  # the balance lets rare object values win
    assert recall > 0.9
    assert spec.latent_channels == 11


def test_factorised_vq_codes_in_a_low_dimensional_space():
    spec = grid_spec(rows=4, cols=4, channels=8)
    params = VectorQuantizer.Params(codebook_size=16, window=2, code_dim=3, l2_normalize=True)
    module = VectorQuantizer(params, spec).eval()
    assert module.codebook.shape == (16, 3)
    z = torch.randn(6, spec.latent_dim)
    out = module(z)
    assert out.z_q.shape == z.shape and out.codes.shape == (6, 4)
    # the lookup happens on the unit-normalised projection; z_q is the code projected back
    h = torch.nn.functional.normalize(module.project_in(latent_windows(z, spec, 2)), dim=-1)
    nearest = torch.cdist(h.reshape(-1, 3), module.codebook).argmin(-1).reshape(6, 4)
    assert torch.equal(out.codes, nearest)
    expected = module.project_out(module.codebook[out.codes])
    assert torch.allclose(latent_windows(out.z_q, spec, 2), expected, atol=1e-5)


def test_fsq_standardize_spreads_nearly_constant_vectors_over_the_levels():
    spec = grid_spec(rows=4, cols=4, channels=8)
    torch.manual_seed(0)
    # vectors that differ from their mean by a little: without standardising they share one code
    z = 5.0 + 1e-3 * torch.randn(512, spec.latent_dim)
    codes = {}
    for standardize in (False, True):
        params = FiniteScalarQuantizer.Params(levels=(4, 4), standardize=standardize)
        torch.manual_seed(1)
        codes[standardize] = FiniteScalarQuantizer(params, spec)(z).codes
    assert codes[False].unique().numel() == 1
    assert codes[True].unique().numel() >= 8  # of 16
