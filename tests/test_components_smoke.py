"""Every built-in component, straight from the registry: build with default parameters, one
forward and backward step on a tiny CPU batch, parameters round-trip through a recipe."""

import pytest
import torch

from lejepa_core import StepOutputs
from lejepa_core.envinfo import EnvInfo
from lejepa_core.interfaces import ModelSpec, QuantizerOutput
from lejepa_core.registry import get_registry
from lejepa_core.structure import structure_attrs, unstructure

B, W, D = 6, 3, 16
SPECS = {
    "balls": ModelSpec(
        obs_shape=(3, 4),
        latent_dim=D,
        feature_names=("x", "y", "vx", "vy"),
        context_frames=W,
        horizons=(1, 2, 4),
    ),
    "arc": ModelSpec(
        obs_shape=(30, 30),
        obs_dtype="int8",
        latent_dim=D,
        context_frames=W,
        horizons=(1,),
        env=EnvInfo(cell_values=11, pad_value=10),  # what ArcGrid publishes
    ),
    "pixels": ModelSpec(obs_shape=(16, 16), latent_dim=D, context_frames=W, horizons=(1, 2)),
}


def builtin(kind):
    registry = get_registry()
    return [r.name for r in registry.registrations(kind) if r.plugin.distribution == "lejepa-core"]


def observations(spec, generator):
    if spec.obs_dtype == "int8":
        grid = torch.randint(0, 10, (B, *spec.obs_shape), generator=generator, dtype=torch.int8)
        grid[:, 12:, :] = 10  # padding outside a 12 x 30 grid
        return grid
    return torch.randn(B, *spec.obs_shape, generator=generator)


def buildable(kind, name):
    """(spec name, module) for every spec the component accepts; at least one must work."""
    cls = get_registry().get(kind, name)
    built = []
    for spec_name, spec in SPECS.items():
        try:
            built.append((spec_name, cls(cls.Params(), spec)))
        except ValueError:
            continue
    assert built, f"{kind} {name} builds for none of {list(SPECS)}"
    return built


def test_there_are_builtins_of_every_kind():
    for kind in ("encoder", "predictor", "quantizer", "loss", "masker"):
        assert builtin(kind), f"no built-in {kind} registered"


@pytest.mark.parametrize("kind", ["encoder", "predictor", "quantizer", "loss", "masker"])
def test_params_round_trip_through_a_recipe(kind):
    registry = get_registry()
    for name in builtin(kind):
        cls = registry.get(kind, name)
        errors = []
        again = structure_attrs(unstructure(cls.Params()), cls.Params, kind, errors)
        assert not errors and again == cls.Params(), (name, errors)


@pytest.mark.parametrize("name", builtin("encoder"))
def test_encoder_forward_backward(name, generator):
    for spec_name, encoder in buildable("encoder", name):
        z = encoder(observations(SPECS[spec_name], generator))
        assert z.shape == (B, D), (spec_name, z.shape)
        z.square().mean().backward()
        grads = [p.grad for p in encoder.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", builtin("predictor"))
def test_predictor_forward_backward(name, generator):
    for _, predictor in buildable("predictor", name):
        z_context = torch.randn(B, W, D, generator=generator, requires_grad=True)
        k = torch.tensor([1, 2, 4, 1, 2, 4])
        out = predictor(z_context, k)
        assert out.shape == (B, D)
        out.square().mean().backward()
        assert z_context.grad is not None and torch.isfinite(z_context.grad).all()


@pytest.mark.parametrize("name", builtin("quantizer"))
def test_quantizer_forward_backward(name, generator):
    for _, quantizer in buildable("quantizer", name):
        z = torch.randn(B * 4, D, generator=generator, requires_grad=True)
        out = quantizer(z)
        assert isinstance(out, QuantizerOutput)
        assert out.z_q.shape == z.shape and out.codes.shape[0] == z.shape[0]
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        assert {"usage", "perplexity"} <= set(out.metrics)
        (out.z_q.square().mean() + out.loss).backward()
        assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", builtin("masker"))
def test_masker_preserves_shape_and_dtype(name, generator):
    for spec_name, masker in buildable("masker", name):
        obs = observations(SPECS[spec_name], generator)
        masked, mask = masker(obs, generator)
        assert masked.shape == obs.shape and masked.dtype == obs.dtype
        assert mask.dtype == torch.bool
        torch.broadcast_shapes(mask.shape, obs.shape)


@pytest.mark.parametrize("name", builtin("loss"))
def test_loss_value_and_gradient(name, generator):
    for _, loss in buildable("loss", name):
        prediction = torch.randn(B, D, generator=generator, requires_grad=True)
        context = torch.randn(B, W, D, generator=generator, requires_grad=True)
        outputs = StepOutputs(
            prediction=prediction,
            target=torch.randn(B, D, generator=generator),
            context=context,
            context_quantized=context,
            context_unmasked=torch.randn(B, W, D, generator=generator),
            k=torch.tensor([1, 2, 4, 1, 2, 4]),
            generator=generator,
            step=3,
        )
        result = loss(outputs)
        assert result.value.dim() == 0 and torch.isfinite(result.value)
        result.value.backward()
        grads = [t.grad for t in (prediction, context) if t.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
