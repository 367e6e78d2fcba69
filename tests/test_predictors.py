"""Built-in predictors: registration, shapes, horizon conditioning, copy-last initialisation,
gradients, determinism, and fitting a known linear dynamics z_{t+k} = A^k z_t."""

from __future__ import annotations

import attrs
import pytest
import torch

from lejepa_core import ModelSpec, Predictor
from lejepa_core.params import help_of
from lejepa_core.structure import structure_attrs, unstructure
from lejepa_plugins import predictors
from lejepa_plugins.layers import TimeEmbedding, sinusoidal_features

SMALL = {
    "residual": {"hidden_dim": 32, "prior_hidden": 16},
    "mlp": {"hidden_dim": 32},
    "attention": {
        "hidden_dim": 32,
        "prior_hidden": 16,
        "dim": 16,
        "attention_depth": 1,
        "num_heads": 2,
    },
}
NAMES = list(SMALL)


def registered() -> dict[str, type]:
    found: dict[str, type] = {}
    predictors.register_predictors(lambda name, cls: found.__setitem__(name, cls))
    return found


def build(name: str, spec: ModelSpec, **overrides) -> Predictor:
    cls = registered()[name]
    return cls(cls.Params(**{**SMALL[name], **overrides}), spec)


def spec_for(frames: int, latent_dim: int = 6) -> ModelSpec:
    return ModelSpec(
        obs_shape=(3, 4), latent_dim=latent_dim, context_frames=frames, horizons=(1, 2, 4, 8)
    )


def test_registered_names_and_params():
    found = registered()
    assert set(found) == {"residual", "mlp", "attention", "action_residual"}
    for name, cls in found.items():
        assert issubclass(cls, Predictor)
        assert cls.__doc__.splitlines()[0].strip(), name
        for field in attrs.fields(cls.Params):
            assert field.default is not attrs.NOTHING, (name, field.name)
            assert help_of(field), (name, field.name)
        cls.Params()


@pytest.mark.parametrize("name", sorted(registered()))
def test_params_round_trip_through_recipe_data(name):
    params_cls = registered()[name].Params
    errors: list[str] = []
    data = unstructure(params_cls())
    assert structure_attrs(data, params_cls, "predictor", errors) == params_cls()
    assert errors == []
    structure_attrs({**data, "hidden_dimm": 3}, params_cls, "predictor", errors)
    assert errors and errors[0].startswith("predictor.hidden_dimm: unknown key")


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_gradients_determinism(name, frames, generator):
    spec = spec_for(frames)
    torch.manual_seed(0)
    predictor = build(name, spec)
    z_context = torch.randn(5, frames, 6, generator=generator)
    k = torch.tensor([1, 2, 4, 8, 3])
    out = predictor(z_context, k)
    assert out.shape == (5, 6)
    (out * torch.randn(out.shape, generator=generator)).sum().backward()
    for param_name, p in predictor.named_parameters():
        assert p.grad is not None, param_name
        assert torch.isfinite(p.grad).all(), param_name
        assert p.grad.abs().sum() > 0, param_name
    torch.manual_seed(0)
    assert torch.equal(build(name, spec)(z_context, k), out.detach())


@pytest.mark.parametrize("time_embedding", ["linear", "sinusoidal"])
@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_k(name, time_embedding, generator):
    predictor = build(name, spec_for(2), time_embedding=time_embedding)
    z_context = torch.randn(1, 2, 6, generator=generator).expand(4, 2, 6)
    out = predictor(z_context, torch.tensor([1, 2, 4, 8]))
    for i in range(1, 4):
        assert (out[i] - out[0]).abs().max() > 1e-7


@pytest.mark.parametrize("name", ["residual", "attention"])
def test_residual_predictors_start_as_copy_last(name, generator):
    predictor = build(name, spec_for(3))
    z_context = torch.randn(16, 3, 6, generator=generator)
    out = predictor(z_context, torch.randint(1, 9, (16,), generator=generator))
    change = (out - z_context[:, -1]).abs().max()
    assert change < 0.02 * z_context[:, -1].abs().mean()
    exact = build(name, spec_for(3), output_init_scale=0.0)
    torch.testing.assert_close(exact(z_context, torch.ones(16, dtype=torch.long)), z_context[:, -1])


def test_mlp_predictor_has_no_skip_connection(generator):
    predictor = build("mlp", spec_for(1))
    z_context = torch.randn(16, 1, 6, generator=generator)
    out = predictor(z_context, torch.ones(16, dtype=torch.long))
    assert (out - z_context[:, -1]).abs().mean() > 0.1


def test_prior_times_k_scales_the_prior(generator):
    predictor = build("residual", spec_for(1), prior_times_k=True, output_init_scale=0.5)
    z_t = torch.randn(1, 6, generator=generator)
    head = predictor.head
    features = torch.zeros(1, 6)
    k1, k3 = torch.tensor([1]), torch.tensor([3])
    torch.testing.assert_close(
        head(z_t, features, k3) - head.residual(torch.cat([features, head.embed_k(k3)], -1)) - z_t,
        3 * head.prior(z_t),
    )
    assert not torch.allclose(head(z_t, features, k1), head(z_t, features, k3))


def test_context_deltas_and_validation():
    z = torch.arange(12.0).view(1, 3, 4)  # frames 0..3, 4..7, 8..11
    assert predictors.context_features(z, "deltas").tolist() == [[8, 9, 10, 11] + [4] * 8]
    assert predictors.context_features(z, "flatten").tolist() == [list(range(12))]
    predictor = build("residual", spec_for(3, latent_dim=4))
    with pytest.raises(ValueError, match=r"z_context: expected \[B, 3, 4\], got \[1, 2, 4\]"):
        predictor(z[:, :2], torch.ones(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"k: expected \[1\].*got \[1, 1\]"):
        predictor(z, torch.ones(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"time_embedding: expected one of"):
        registered()["residual"].Params(time_embedding="fourier")


def test_time_embeddings():
    linear = TimeEmbedding("linear", 4, max_horizon=8)
    k = torch.tensor([0, 4, 8])
    expected = (
        linear.linear.weight[:, 0] * torch.tensor([0.0, 0.5, 1.0])[:, None] + linear.linear.bias
    )
    torch.testing.assert_close(linear(k), expected)
    sinusoidal = TimeEmbedding("sinusoidal", 4, max_horizon=8)
    assert not list(sinusoidal.parameters())
    # dim 4: frequencies 1 and 1/100
    angles = torch.tensor([2.0, 0.02])  # k = 2
    expected = torch.stack(
        [torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.cat([angles.sin(), angles.cos()])]
    )
    torch.testing.assert_close(sinusoidal(torch.tensor([0, 2])), expected)
    assert sinusoidal_features(torch.tensor([1]), 5).shape == (1, 5)


@pytest.mark.parametrize("name", ["residual", "attention"])
def test_fits_linear_dynamics(name):
    """z_{t+k} = A^k z_t with A a slow rotation-plus-decay; k in {1, 2, 4}; 300 Adam steps."""
    torch.manual_seed(0)
    dim, frames, horizons = 4, 2, (1, 2, 4)
    angle = torch.tensor(0.3)
    rotation = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    )
    a = torch.block_diag(rotation, 0.9 * torch.eye(2))  # [D, D]
    # [len(horizons), D, D]
    powers = torch.stack([torch.linalg.matrix_power(a, k) for k in horizons])
    inverse = torch.linalg.inv(a)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_t = torch.randn(size, dim)  # [B, D]
        z_previous = z_t @ inverse.T  # z_{t-1} = A^-1 z_t
        which = torch.randint(0, len(horizons), (size,))  # [B]
        target = torch.einsum("bij,bj->bi", powers[which], z_t)  # A^k z_t
        return torch.stack([z_previous, z_t], dim=1), torch.tensor(horizons)[which], target

    spec = ModelSpec(obs_shape=(1,), latent_dim=dim, context_frames=frames, horizons=horizons)
    predictor = build(name, spec, hidden_dim=64)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=3e-3)
    test_context, test_k, test_target = batch(256)

    def test_loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(predictor(test_context, test_k), test_target).item()

    initial = test_loss()
    for _ in range(300):
        context, k, target = batch(64)
        loss = torch.nn.functional.mse_loss(predictor(context, k), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = test_loss()
    assert final < initial / 10, (initial, final)
