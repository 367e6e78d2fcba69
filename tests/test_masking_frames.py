"""``train.mask_frames``: one mask shared by the W context frames of a window, or one per frame.

shared: every registered masker (a third party's included, through the unchanged Masker
interface) hides the same elements in all W frames of every window; the masker fills them.
per_frame: bit-identical to the masker called on the flattened [B*W, *obs] frames.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch

from lejepa_core import Masker, ModelSpec, hookimpl
from lejepa_core.errors import RecipeError
from lejepa_core.params import param
from lejepa_core.testing import STANDARD_SPECS, observations
from lejepa_core.training.step import forward_context, mask_context
from tests.conftest import tiny_recipe

REPO = Path(__file__).resolve().parents[1]
B, W = 16, 4


class NoisyElementMasker(Masker):
    """Third-party style: hide each element with probability ``p`` and fill it with noise
    (a fill that is the masker's business and differs per frame)."""

    @attrs.frozen(kw_only=True)
    class Params:
        p: float = param(0.3, "probability of hiding an element")

    def forward(self, obs, generator):
        u = torch.rand(obs.shape, generator=generator, device=obs.device)
        mask = u < self.params.p
        noise = torch.randn(obs.shape, device=obs.device)  # global RNG: not shared
        return torch.where(mask, noise.to(obs.dtype), obs), mask


class _Plugin:
    @hookimpl
    def register_maskers(self, register):
        register("test_noisy_element", NoisyElementMasker)


@pytest.fixture
def third_party():
    from lejepa_core.registry import get_plugin_manager

    pm = get_plugin_manager()
    plugin = _Plugin()
    pm.register_plugin(plugin, name="test-masking-frames")
    yield
    pm.unregister(plugin)


def _maskers() -> list[tuple[str, Masker, ModelSpec]]:
    """(name, built masker, spec) of every registered masker, with parameters that hide often."""
    from lejepa_core.registry import get_registry

    registry = get_registry()
    params = {"feature": {"p_coordinates": 0.3, "p_velocities": 0.3, "p_pair": 0.2}}
    built = []
    for reg in registry.registrations("masker"):
        for spec in STANDARD_SPECS.values():
            try:
                masker = reg.obj(reg.obj.Params(**params.get(reg.name, {})), spec)
            except ValueError:
                continue
            built.append((reg.name, masker, spec))
            break
    return built


def _windows(spec: ModelSpec, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = observations(spec, g, B * W).reshape(B, W, *spec.obs_shape)
    return obs if obs.is_floating_point() else obs % 5 + 1  # no cell equals a fill of 0


def test_shared_masks_are_identical_across_the_frames_of_every_window(third_party):
    names = set()
    for name, masker, spec in _maskers():
        names.add(name)
        frames = _windows(spec)
        masked, mask = mask_context(masker, frames, torch.Generator().manual_seed(3), shared=True)
        assert masked.shape == (B * W, *spec.obs_shape) and masked.dtype == frames.dtype
        full = mask.expand(B * W, *spec.obs_shape).reshape(B, W, *spec.obs_shape)
        assert torch.equal(full, full[:, :1].expand_as(full)), name
        if name != "none":
            assert full.any() and not full.all(), name  # something hidden, not everything
        # only hidden elements change; the masker filled them (the noise differs per frame)
        windows = masked.reshape(B, W, *spec.obs_shape)
        assert torch.equal(torch.where(full, frames, windows), frames), name
    assert {"feature", "block", "none", "test_noisy_element"} <= names


def test_per_frame_masks_differ_across_frames():
    _, masker, spec = next(m for m in _maskers() if m[0] == "feature")
    _, mask = mask_context(masker, _windows(spec), torch.Generator().manual_seed(3), shared=False)
    full = mask.expand(B * W, *spec.obs_shape).reshape(B, W, *spec.obs_shape)
    assert not torch.equal(full, full[:, :1].expand_as(full))


@pytest.mark.parametrize("name", ["feature", "block"])
def test_per_frame_is_the_masker_on_the_flattened_frames(name):
    """Today's behaviour, bit for bit: one call on [B*W, *obs], the generator advanced alike."""
    _, masker, spec = next(m for m in _maskers() if m[0] == name)
    frames = _windows(spec)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    masked, mask = mask_context(masker, frames, g1, shared=False)
    expected, expected_mask = masker(frames.reshape(B * W, *spec.obs_shape), g2)
    assert torch.equal(masked, expected) and torch.equal(mask, expected_mask)
    assert torch.equal(g1.get_state(), g2.get_state())
    encoder = torch.nn.Flatten()
    ctx = forward_context(encoder, masker, None, frames, torch.Generator().manual_seed(7))
    assert torch.equal(ctx.context, expected.reshape(B, W, -1).to(ctx.context.dtype))


def test_shared_draws_one_frame_of_random_numbers_and_is_deterministic():
    _, masker, spec = next(m for m in _maskers() if m[0] == "feature")
    frames = _windows(spec)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = mask_context(masker, frames, g1, shared=True)
    first, first_mask = masker(frames[:, 0], g2)  # one [B, *obs] call
    assert torch.equal(g1.get_state(), g2.get_state())
    assert torch.equal(a[1].reshape(B, W, *a[1].shape[1:])[:, 0], first_mask.expand(B, 1, 4))
    assert torch.equal(a[0].reshape(B, W, *spec.obs_shape)[:, 0], first)
    b = mask_context(masker, frames, torch.Generator().manual_seed(5), shared=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_shared_without_a_generator_uses_the_global_rng():
    _, masker, spec = next(m for m in _maskers() if m[0] == "feature")
    frames = _windows(spec)
    torch.manual_seed(0)
    _, mask = mask_context(masker, frames, None, shared=True)
    full = mask.expand(B * W, *spec.obs_shape).reshape(B, W, *spec.obs_shape)
    assert torch.equal(full, full[:, :1].expand_as(full))
    torch.manual_seed(0)
    assert torch.equal(mask_context(masker, frames, None, shared=True)[1], mask)


# ----------------------------------------------------------------------------- the recipe
def test_recipe_option_default_values_and_errors(tmp_path, tiny_data):
    assert tiny_recipe(tmp_path, tiny_data).train.mask_frames == "per_frame"
    shared = tiny_recipe(tmp_path, tiny_data, ("train.mask_frames=shared",))
    assert shared.train.mask_frames == "shared"
    with pytest.raises(RecipeError, match="train.mask_frames"):
        tiny_recipe(tmp_path, tiny_data, ("train.mask_frames=per_window",))
    from lejepa_core.build import build_model, model_spec

    assert build_model(shared, model_spec(shared)).mask_frames == "shared"


def test_physics_recipes_share_masks_across_frames():
    from lejepa_core.recipe import load_recipe

    for name in ("multi_k_physics", "lejepa_physics"):
        assert load_recipe(REPO / "recipes" / f"{name}.toml").train.mask_frames == "shared", name


def test_training_step_shares_the_mask(tmp_path, tiny_data, monkeypatch):
    """A training run with mask_frames = shared feeds the encoder frames masked alike."""
    from lejepa_core.training import step as step_module
    from lejepa_core.training.loop import train

    seen = []
    real = step_module.mask_context

    def spy(masker, context_obs, generator, *, shared):
        out = real(masker, context_obs, generator, shared=shared)
        seen.append((shared, context_obs.shape[:2], out[1]))
        return out

    monkeypatch.setattr(step_module, "mask_context", spy)
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.mask_frames=shared", "train.epochs=1", "log.every=5")
    )
    train(recipe, out=tmp_path / "run")
    steps = [s for s in seen if s[1][0] == recipe.train.batch_size]  # not the start-up check
    assert len(steps) == 5  # one per step; validation is unmasked
    for shared, (batch, window), mask in steps:
        assert shared and window == 2
        per_window = mask.reshape(batch, window, *mask.shape[1:])
        assert torch.equal(per_window, per_window[:, :1].expand_as(per_window))
