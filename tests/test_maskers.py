"""Maskers: mode frequencies, hidden columns, learned token, determinism, block geometry, dtypes."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

from lejepa_core import Masker, ModelSpec
from lejepa_plugins import maskers as m

PHYSICS = ModelSpec(obs_shape=(3, 4), latent_dim=8, feature_names=("x", "y", "vx", "vy"))


def feature(spec: ModelSpec = PHYSICS, **kw) -> m.FeatureMasker:
    return m.FeatureMasker(m.FeatureMasker.Params(**kw), spec)


def block(shape=(16, 16), dtype="float32", **kw) -> m.BlockMasker:
    return m.BlockMasker(
        m.BlockMasker.Params(**kw), ModelSpec(obs_shape=shape, latent_dim=8, obs_dtype=dtype)
    )


def test_registration_and_params_have_help():
    registered = {}
    m.register_maskers(lambda name, cls: registered.setdefault(name, cls))
    assert registered == {"feature": m.FeatureMasker, "block": m.BlockMasker, "none": m.NoMasker}
    for cls in registered.values():
        assert issubclass(cls, Masker)
        for field in attrs.fields(cls.Params):
            assert field.default is not attrs.NOTHING and field.metadata["help"], field.name


@pytest.mark.parametrize("name", ["feature", "block", "none"])
def test_smoke_shapes_and_dtype(name, generator):
    spec = PHYSICS if name == "feature" else ModelSpec(obs_shape=(8, 8), latent_dim=8)
    registered = {}
    m.register_maskers(lambda n, cls: registered.setdefault(n, cls))
    masker = registered[name](registered[name].Params(), spec)
    obs = torch.randn(5, *spec.obs_shape)
    masked, mask = masker(obs, generator)
    assert masked.shape == obs.shape and masked.dtype == obs.dtype
    assert mask.dtype == torch.bool and mask.dim() == obs.dim()
    torch.broadcast_shapes(mask.shape, obs.shape)
    assert torch.equal(masked, torch.where(mask, masked, obs))  # only hidden entries change


# -- feature -------------------------------------------------------------------------------


def test_feature_mode_frequencies_match_probabilities():
    probs = {
        "p_coordinates": 0.15,
        "p_velocities": 0.2,
        "p_pair": 0.1,
        "p_single": 0.25,
        "p_all": 0.05,
    }
    masker = feature(**probs)
    n = 20_000
    g = torch.Generator().manual_seed(1)
    modes, mask = masker.sample_modes((n,), g, torch.device("cpu"))
    expected = list(probs.values()) + [1 - sum(probs.values())]
    for index, p in enumerate(expected):
        observed = (modes == index).float().mean().item()
        tolerance = 5 * math.sqrt(p * (1 - p) / n)
        assert abs(observed - p) < tolerance, (m.MODES[index], observed, p)
    hidden = mask.sum(-1)
    # the masks agree with the modes
    assert (hidden[modes == 2] == 2).all() and (hidden[modes == 3] == 1).all()
    assert (hidden[modes == 4] == 4).all() and (hidden[modes == 5] == 0).all()
    # a random pair is uniform over the 6 pairs
    pairs = mask[modes == 2]
    counts = torch.stack(
        [(pairs[:, i] & pairs[:, j]).sum() for i in range(4) for j in range(i + 1, 4)]
    )
    share = counts.float() / counts.sum()
    assert (share - 1 / 6).abs().max() < 5 * math.sqrt((1 / 6) * (5 / 6) / len(pairs))


@pytest.mark.parametrize(
    ("mode", "columns"),
    [("p_coordinates", [0, 1]), ("p_velocities", [2, 3]), ("p_all", [0, 1, 2, 3])],
)
def test_feature_named_modes_hide_the_right_columns_for_all_objects(mode, columns, generator):
    probabilities = dict.fromkeys(
        ("p_coordinates", "p_velocities", "p_pair", "p_single", "p_all"), 0.0
    )
    masker = feature(**{**probabilities, mode: 1.0}, fill_value=-7.0)
    obs = torch.randn(6, 3, 4)  # [B, N objects, F]
    masked, mask = masker(obs, generator)
    assert mask.shape == (6, 1, 4)
    hidden = torch.zeros(4, dtype=torch.bool)
    hidden[columns] = True
    assert torch.equal(mask, hidden.expand(6, 1, 4))
    assert (masked[..., columns] == -7.0).all()
    kept = [c for c in range(4) if c not in columns]
    assert torch.equal(masked[..., kept], obs[..., kept])


def test_feature_mode_is_per_sample_unless_per_object(generator):
    zeros = dict(p_coordinates=0.0, p_velocities=0.0, p_all=0.0)
    masker = feature(**zeros, p_pair=0.5, p_single=0.5)
    obs = torch.randn(200, 3, 4)
    _, mask = masker(obs, generator)
    assert mask.shape == (200, 1, 4)  # one draw shared by the 3 objects
    per_object = feature(**zeros, p_pair=0.5, p_single=0.5, per_object=True)
    _, mask = per_object(obs, generator)
    assert mask.shape == (200, 3, 4)
    assert not (mask == mask[:, :1]).all()  # objects differ somewhere


def test_feature_flat_obs_and_constant_fill(generator):
    spec = ModelSpec(obs_shape=(4,), latent_dim=8, feature_names=("x", "y", "vx", "vy"))
    masker = feature(spec, p_coordinates=1.0, p_velocities=0.0, p_pair=0.0, p_single=0.0)
    masked, mask = masker(torch.ones(3, 4), generator)
    assert mask.shape == (3, 4)
    assert torch.equal(masked, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3))


def test_feature_learned_token_receives_gradients(generator):
    masker = feature(
        p_coordinates=0.5,
        p_velocities=0.5,
        p_pair=0.0,
        p_single=0.0,
        mask_token="learned",
        fill_value=0.5,
    )
    assert torch.equal(masker.token.detach(), torch.full((4,), 0.5))
    obs = torch.randn(8, 3, 4)
    masked, mask = masker(obs, generator)
    (masked * torch.arange(1.0, 5.0)).sum().backward()
    # d/d token_f = sum over hidden entries of column f of the weight (f + 1)
    expected = mask.expand_as(obs).sum(dim=(0, 1)).float() * torch.arange(1.0, 5.0)
    torch.testing.assert_close(masker.token.grad, expected)
    assert (masker.token.grad != 0).all()
    assert "token" in dict(masker.named_parameters())


def test_feature_determinism_with_same_generator():
    masker = feature(p_pair=0.3, p_single=0.3)
    obs = torch.randn(64, 3, 4)
    a = masker(obs, torch.Generator().manual_seed(5))
    b = masker(obs, torch.Generator().manual_seed(5))
    c = masker(obs, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_feature_validation_names_the_features():
    no_names = ModelSpec(obs_shape=(3,), latent_dim=8, feature_names=("a", "b", "c"))
    with pytest.raises(
        ValueError,
        match=r"p_coordinates = 0.2 needs features \('x', 'y'\).*available feature_names: \('a', 'b', 'c'\)",
    ):
        feature(no_names)
    with pytest.raises(ValueError, match=r"p_velocities = 0.2 .*\('vx', 'vy'\)"):
        feature(no_names, p_coordinates=0.0)
    ok = feature(no_names, p_coordinates=0.0, p_velocities=0.0)  # generic modes need no names
    assert ok(torch.randn(4, 3), None)[0].shape == (4, 3)
    with pytest.raises(ValueError, match=r"must be <= 1, got 1.4 \(0.6, 0.6, 0.1, 0.1, 0.0\)"):
        m.FeatureMasker.Params(p_coordinates=0.6, p_velocities=0.6)
    with pytest.raises(ValueError, match="mask_token"):
        m.FeatureMasker.Params(mask_token="random")
    int_spec = ModelSpec(
        obs_shape=(4,), latent_dim=8, obs_dtype="int8", feature_names=("x", "y", "vx", "vy")
    )
    with pytest.raises(ValueError, match="learned.*int8"):
        feature(int_spec, mask_token="learned")
    with pytest.raises(ValueError, match="fill_value.*int8.*0.5"):
        feature(int_spec, fill_value=0.5)


def test_feature_preserves_dtype(generator):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        masked, _ = feature(p_all=0.3)(torch.randn(8, 3, 4).to(dtype), generator)
        assert masked.dtype == dtype


# -- block ---------------------------------------------------------------------------------


def test_block_single_block_is_a_rectangle_with_area_in_scale_range():
    H, W = 32, 32
    lo, hi = 0.1, 0.2
    masker = block((H, W), num_blocks=1, block_scale=(lo, hi), aspect_ratio=(0.5, 2.0))
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(500, H, W)
    masked, mask = masker(obs, g)
    assert mask.shape == (500, H, W)
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # [B, H], [B, W]
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])  # exactly one rectangle
    h, w = rows.sum(1).float(), cols.sum(1).float()
    # h = round(sqrt(a r)), w = round(sqrt(a / r)): area a within half a cell per side
    for low, high in ((lo, hi),):
        assert (h * w >= low * H * W - 0.5 * (h + w) - 0.25).all()
        assert (h * w <= high * H * W + 0.5 * (h + w) + 0.25).all()
    ratio = h / w
    assert ratio.min() >= 0.5 * 0.7 and ratio.max() <= 2.0 / 0.7  # rounding slack
    assert (masked[mask] == 0).all() and torch.equal(masked[~mask], obs[~mask])


def test_block_many_blocks_within_bounds_and_coverage():
    masker = block((12, 20), num_blocks=4, block_scale=(0.05, 0.1), aspect_ratio=(0.2, 5.0))
    blocks = masker.sample_blocks(2000, torch.Generator().manual_seed(3), torch.device("cpu"))
    top, left, h, w = blocks.unbind(-1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= 12).all() and (left + w <= 20).all()
    _, mask = masker(torch.zeros(2000, 12, 20), torch.Generator().manual_seed(3))
    coverage = mask.float().mean(dim=(1, 2))
    slack = 0.05  # rounding of h and w on a small grid
    assert (coverage <= 4 * 0.1 + slack).all() and (coverage >= 0.05 - slack).all()


def test_block_int_grids_keep_dtype_and_fill(generator):
    masker = block((10, 10), dtype="int8", fill_value=10)
    grid = torch.randint(0, 10, (4, 10, 10), dtype=torch.int8)
    masked, mask = masker(grid, generator)
    assert masked.dtype == torch.int8 and mask.any()
    assert (masked[mask] == 10).all() and torch.equal(masked[~mask], grid[~mask])
    with pytest.raises(ValueError, match="fill_value.*int8.*1000"):
        block((10, 10), dtype="int8", fill_value=1000)


def test_block_channels_share_the_mask(generator):
    masker = block((3, 16, 16))
    _, mask = masker(torch.randn(2, 3, 16, 16), generator)
    assert mask.shape == (2, 1, 16, 16)


def test_block_determinism_and_validation():
    masker = block((16, 16))
    obs = torch.randn(16, 16, 16)
    a = masker(obs, torch.Generator().manual_seed(4))[1]
    b = masker(obs, torch.Generator().manual_seed(4))[1]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"block_scale: expected \(min, max\).*\(0.5, 0.2\)"):
        m.BlockMasker.Params(block_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="obs_shape \\(5,\\)"):
        block((5,))


def test_none_is_identity(generator):
    obs = torch.randn(3, 2, 4)
    masked, mask = m.NoMasker(m.NoMasker.Params(), PHYSICS)(obs, generator)
    assert masked is obs and not mask.any() and mask.shape == (3, 1, 1)


@pytest.mark.parametrize("name", ["feature", "block", "none"])
def test_registered_through_entry_points_and_recipe_round_trip(name):
    from lejepa_core.registry import get_registry
    from lejepa_core.structure import structure_attrs, unstructure

    cls = get_registry().get("masker", name)
    errors: list[str] = []
    params = structure_attrs(unstructure(cls.Params()), cls.Params, "masker", errors)
    assert errors == [] and params == cls.Params()


def test_recipe_errors_are_path_lines():
    from lejepa_core.structure import structure_attrs

    errors: list[str] = []
    structure_attrs({"fill_valeu": 1}, m.FeatureMasker.Params, "masker", errors)
    assert errors == [
        "masker.fill_valeu: unknown key (did you mean 'fill_value'?); known keys: "
        + ", ".join(sorted(f.name for f in attrs.fields(m.FeatureMasker.Params)))
    ]
    errors = []
    structure_attrs({"p_coordinates": 0.9}, m.FeatureMasker.Params, "masker", errors)
    assert errors == [
        "masker: p_coordinates + p_velocities + p_pair + p_single + p_all must be <= 1, got 1.3 (0.9, 0.2, 0.1, 0.1, 0.0)"
    ]
