"""Built-in encoders: registration, shapes, gradients, invariances, object labelling vs scipy."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch
from scipy import ndimage

from lejepa_core import Encoder, ModelSpec
from lejepa_core.envinfo import EnvInfo
from lejepa_core.params import help_of
from lejepa_core.structure import structure_attrs, unstructure
from lejepa_plugins import encoders
from lejepa_plugins.object_encoder import (
    ObjectEncoder,
    connected_components,
    extract_objects,
    object_feature_dim,
)

PHYSICS = ModelSpec(obs_shape=(5, 4), latent_dim=8, feature_names=("x", "y", "vx", "vy"))
PIXELS = ModelSpec(obs_shape=(7, 9), latent_dim=8)
ARC_VALUES = {"cell_values": 11, "pad_value": 10}  # what ArcGrid publishes in its metadata
ARC = ModelSpec(obs_shape=(10, 10), latent_dim=8, obs_dtype="int8", env=EnvInfo(**ARC_VALUES))

SMALL = {  # tiny widths so every test runs in well under a second on two shared cores
    "mlp": {"hidden_dim": 16},
    "set": {"hidden_dim": 16},
    "transformer": {"dim": 16, "depth": 1, "num_heads": 2},
    "grid_cnn": {"channels": 8, "depth": 2},
    "object": {"dim": 16, "depth": 1, "num_heads": 2, "max_objects": 8},
}
CASES = [
    ("mlp", PHYSICS), ("mlp", PIXELS), ("mlp", ARC),
    ("set", PHYSICS),
    ("transformer", PHYSICS), ("transformer", PIXELS), ("transformer", ARC),
    ("grid_cnn", PIXELS), ("grid_cnn", ARC),
    ("object", ARC),
]  # fmt: skip


def registered() -> dict[str, type]:
    found: dict[str, type] = {}
    encoders.register_encoders(lambda name, cls: found.__setitem__(name, cls))
    return found


def build(name: str, spec: ModelSpec, **overrides) -> Encoder:
    cls = registered()[name]
    return cls(cls.Params(**{**SMALL[name], **overrides}), spec)


def random_obs(spec: ModelSpec, batch: int, generator: torch.Generator) -> torch.Tensor:
    if spec.obs_dtype == "int8":
        obs = torch.randint(0, 10, (batch, *spec.obs_shape), generator=generator).to(torch.int8)
        obs[:, 7:, :] = 10  # a 7 x 10 grid inside a 10 x 10 canvas
        obs[0, :, 4:] = 10
        return obs
    return torch.randn((batch, *spec.obs_shape), generator=generator)


def test_registered_names_and_params():
    found = registered()
    assert set(found) == {
        "mlp",
        "set",
        "transformer",
        "grid_cnn",
        "object",
        "conv",
        "vit",
        "identity",
    }
    for name, cls in found.items():
        assert issubclass(cls, Encoder)
        assert cls.__doc__.splitlines()[0].strip(), name
        for field in attrs.fields(cls.Params):
            assert field.default is not attrs.NOTHING, (name, field.name)
            assert help_of(field), (name, field.name)
        cls.Params()  # the defaults are valid


@pytest.mark.parametrize("name", sorted(registered()))
def test_params_round_trip_through_recipe_data(name):
    params_cls = registered()[name].Params
    errors: list[str] = []
    data = unstructure(params_cls())
    assert structure_attrs(data, params_cls, "encoder", errors) == params_cls()
    assert errors == []
    structure_attrs({**data, "hidden_dimm": 3}, params_cls, "encoder", errors)
    assert errors and errors[0].startswith("encoder.hidden_dimm: unknown key")


@pytest.mark.parametrize(
    "name,spec", CASES, ids=[f"{n}-{s.obs_dtype}-{s.obs_shape}" for n, s in CASES]
)
def test_shape_gradients_and_determinism(name, spec, generator):
    torch.manual_seed(0)
    encoder = build(name, spec)
    obs = random_obs(spec, 3, generator)
    z = encoder(obs)
    assert z.shape == (3, spec.latent_dim) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    (z * torch.randn(z.shape, generator=generator)).sum().backward()
    for param_name, p in encoder.named_parameters():
        assert p.grad is not None, param_name
        assert torch.isfinite(p.grad).all(), param_name
        assert p.grad.abs().sum() > 0, param_name
    torch.manual_seed(0)
    again = build(name, spec)
    assert torch.equal(again(obs), z.detach())


@pytest.mark.parametrize("pooling", ["mean", "sum", "attention"])
def test_set_encoder_is_permutation_invariant(pooling, generator):
    encoder = build("set", PHYSICS, pooling=pooling, num_heads=2)
    obs = torch.randn(4, 5, 4, generator=generator)
    permuted = obs[:, torch.randperm(5, generator=generator)]
    torch.testing.assert_close(encoder(permuted), encoder(obs), atol=1e-5, rtol=0)


def test_transformer_objects_without_positions_is_permutation_invariant(generator):
    encoder = build("transformer", PHYSICS, positional="none", pooling="mean").eval()
    obs = torch.randn(4, 5, 4, generator=generator)
    permuted = obs[:, torch.randperm(5, generator=generator)]
    torch.testing.assert_close(encoder(permuted), encoder(obs), atol=1e-5, rtol=0)


def test_transformer_patches_pad_and_mask_outside_cells(generator):
    # 10 x 10 padded to 12 x 12: 3 x 3 patches
    encoder = build("transformer", ARC, patch_size=4, positional="sinusoidal")
    obs = random_obs(ARC, 2, generator)
    tokens, mask = encoder.patchify(obs)
    assert tokens.shape == (2, 9, 4 * 4 * 11)
    # sample 0: rows 7..11 and columns 4..11 are pad; patch rows 0..3, 4..7, 8..11 (same for columns)
    assert mask[0].tolist() == [False, True, True] * 2 + [True] * 3
    assert mask[1].tolist() == [False, False, False] * 2 + [True] * 3
    # a grid that is all pad keeps all its tokens (no empty attention)
    _, mask = encoder.patchify(torch.full((1, 10, 10), 10, dtype=torch.int8))
    assert not mask.any()


def test_constructor_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"obs_shape \(30, 30\) with obs_dtype 'float32'"):
        build("object", ModelSpec(obs_shape=(30, 30), latent_dim=8))  # float: not an ARC grid
    with pytest.raises(ValueError, match=r"\(2, 5, 4\)"):
        build("set", ModelSpec(obs_shape=(2, 5, 4), latent_dim=8))
    with pytest.raises(ValueError, match=r"dim: expected a multiple of num_heads=3, got 16"):
        build("transformer", PHYSICS, num_heads=3)
    with pytest.raises(ValueError, match=r"pooling: expected one of"):
        registered()["set"].Params(pooling="max")
    with pytest.raises(ValueError, match=r"kernel_size: expected an odd value, got 4"):
        build("grid_cnn", ARC, kernel_size=4)


def test_grid_cnn_pools_only_inside_the_grid(generator):
    encoder = build("grid_cnn", ARC, pooling="mean").eval()
    small = torch.full((1, 10, 10), 10, dtype=torch.int8)
    small[0, :3, :3] = torch.randint(0, 10, (3, 3), generator=generator).to(torch.int8)
    inside = torch.zeros(10, 10, dtype=torch.bool)
    inside[:3, :3] = True
    x = torch.nn.functional.one_hot(small.long(), 11).float().permute(0, 3, 1, 2)
    features = encoder.convs(x)[0][:, inside]  # [C, 9]
    expected = encoder.head(features.mean(dim=1))
    torch.testing.assert_close(encoder(small)[0], expected)


# ----------------------------------------------------------------------- object encoder


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings of the same cells describe the same partition (a bijection of labels)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("num_colours", [2, 3, 10])
def test_connected_components_match_scipy(num_colours, generator):
    grid = torch.randint(0, num_colours, (6, 30, 30), generator=generator).to(torch.int8)
    grid[0, 12:, :] = 10  # pad
    grid[1] = 1  # one component covering the whole grid
    grid[2, ::2, :] = 0  # a snake: the slowest case for label propagation
    grid[2, 1::4, :-1] = 5
    grid[2, 3::4, 1:] = 5
    labels = connected_components(grid, (10,)).numpy()
    values = grid.numpy()
    assert (labels[values == 10] == -1).all()
    for b in range(grid.shape[0]):
        for colour in range(10):
            cells = values[b] == colour
            if not cells.any():
                continue
            reference, _ = ndimage.label(cells)  # default structure: 4-connectivity
            assert same_partition(reference[cells], labels[b][cells]), (b, colour)
        # labels are never shared by cells of different colours
        assert same_partition(
            labels[b][values[b] != 10], (labels[b] * 16 + values[b])[values[b] != 10]
        )


def test_extract_objects_features_by_hand():
    grid = torch.full((2, 6, 6), 10, dtype=torch.int8)
    grid[0, :5, :5] = 0
    grid[0, 1:4, 1] = 3  # vertical bar, 3 cells, rows 1..3, col 1
    grid[0, 1, 2] = 3  # an L: 4 cells
    grid[0, 4, 4] = 7  # a single cell
    grid[1, :2, :2] = 0  # background only: no objects
    objects = extract_objects(grid, max_objects=3, shape_size=3, **ARC_VALUES)
    assert objects.num_objects.tolist() == [2, 0]
    assert objects.padding_mask.tolist() == [[False, False, True], [True, True, True]]
    assert objects.features.shape == (2, 3, object_feature_dim(3, 11))
    ell, dot = objects.features[0, 0], objects.features[0, 1]  # largest first
    assert ell[3] == 1 and dot[7] == 1  # colour one-hot
    torch.testing.assert_close(ell[10], torch.tensor(4 / 36))
    # r0, c0, r1 + 1, c1 + 1
    torch.testing.assert_close(ell[12:16], torch.tensor([1 / 6, 1 / 6, 4 / 6, 3 / 6]))
    torch.testing.assert_close(ell[16:18], torch.tensor([3 / 6, 2 / 6]))  # bbox height, width
    centroid = torch.tensor([(1.75 + 0.5) / 6, (1.25 + 0.5) / 6])  # mean row 1.75, mean col 1.25
    torch.testing.assert_close(ell[18:20], centroid)
    # the 3 x 2 box resampled to 3 x 3 (rows 0, 1, 2; columns 0, 1, 1): the L shape
    assert ell[20:].view(3, 3).tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert dot[20:].tolist() == [1.0] * 9
    assert (objects.features[1] == 0).all()


def test_extract_objects_keeps_the_largest(generator):
    grid = torch.zeros(1, 8, 8, dtype=torch.int8)
    grid[0, 0, 0] = 1  # size 1
    grid[0, 2, :3] = 2  # size 3
    grid[0, 5:7, 5:7] = 4  # size 4
    grid[0, 7, 0] = 6  # size 1
    objects = extract_objects(grid, max_objects=2, **ARC_VALUES)
    assert objects.num_objects.tolist() == [4]
    assert objects.features[0, :, :10].argmax(dim=1).tolist() == [4, 2]
    with_background = extract_objects(grid, max_objects=2, include_background=True, **ARC_VALUES)
    # the colour-0 background is now the largest object
    assert with_background.features[0, 0, 0] == 1


def test_object_encoder_all_pad_and_token_order(generator):
    encoder = build("object", ARC).eval()
    empty = torch.full((2, 10, 10), 10, dtype=torch.int8)
    assert torch.isfinite(encoder(empty)).all()
    # the encoder is a function of the set of objects: transposing twice is the identity, and
    # flipping the grid changes the features, hence (generically) the latent
    obs = random_obs(ARC, 2, generator)
    assert not torch.allclose(encoder(obs), encoder(obs.flip(2)))


def test_object_encoder_reads_cell_values_and_pad_from_the_env():
    # ARC's 11 values and pad 10 give the parameter shapes of saved ARC checkpoints
    encoder = build("object", ARC)
    assert encoder.embed_object.in_features == object_feature_dim(3, 11) == 10 + 10 + 9
    assert encoder.embed_grid.in_features == 11 + 3
    # another env's grids: 5 values with the pad first; colours are 1..4
    spec = ModelSpec(
        obs_shape=(6, 6), latent_dim=8, obs_dtype="uint8", env=EnvInfo(cell_values=5, pad_value=0)
    )
    other = build("object", spec)
    assert other.embed_object.in_features == object_feature_dim(3, 5) == 4 + 10 + 9
    grid = torch.zeros(2, 6, 6, dtype=torch.uint8)
    grid[:, :4, :4] = 1  # value 0 is the pad here: a 4 x 4 grid of colour 1
    grid[0, 1, 1:3] = 4
    objects = extract_objects(grid, max_objects=4, cell_values=5, pad_value=0)
    assert objects.num_objects.tolist() == [2, 1]
    # colour one-hot over the values but the pad: colour 4 is column 3
    assert objects.features[0, 1, :4].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert torch.isfinite(other(grid)).all()


@pytest.mark.parametrize(
    "env",
    [
        EnvInfo(),
        EnvInfo(cell_values=11),
        EnvInfo(pad_value=10),
        EnvInfo(cell_values=4, pad_value=7),
    ],
)
def test_object_encoder_names_the_metadata_it_needs(env):
    spec = ModelSpec(obs_shape=(10, 10), latent_dim=8, obs_dtype="int8", env=env)
    with pytest.raises(ValueError, match=r"metadata\['cell_values'\] and \['pad_value'\]"):
        ObjectEncoder(ObjectEncoder.Params(**SMALL["object"]), spec)
