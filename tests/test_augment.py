"""``[data] augment``: colour permutations and dihedral transforms of training windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lejepa_core.data.augment import (
    AugmentDraw,
    WindowAugment,
    dihedral,
    permute_values,
    value_table,
    window_augment,
)
from lejepa_core.data.sampler import Batch
from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import RecipeError
from lejepa_core.recipe import DataConfig

PAD, BACKGROUND, VALUES = 10, 0, 11
INFO = EnvInfo(cell_values=VALUES, pad_value=PAD, background_value=BACKGROUND)
NUMPY = {  # choice -> the numpy transform of a square region
    0: lambda m: m,
    1: np.flipud,
    2: np.fliplr,
    3: lambda m: np.rot90(m, 2),
    4: lambda m: m.T,
    5: lambda m: np.rot90(m, -1),
    6: lambda m: np.rot90(m, 1),
    7: lambda m: np.rot90(m, 2).T,
}


def _padded(region: np.ndarray, size: int = 8) -> np.ndarray:
    grid = np.full((size, size), PAD, dtype=np.int8)
    grid[: region.shape[0], : region.shape[1]] = region
    return grid


def _batch(context: torch.Tensor, target: torch.Tensor) -> Batch:
    b = context.shape[0]
    zeros = torch.zeros(b, dtype=torch.int64)
    return Batch(
        context_obs=context,
        target_obs=target,
        k=zeros + 1,
        context_state=None,
        target_state=None,
        episode=zeros,
        t=zeros,
    )


def test_a_permutation_keeps_pad_and_background_and_is_a_bijection_on_the_rest():
    augment = WindowAugment(("colours",), INFO, (8, 8))
    draw = augment.draw(64, torch.Generator().manual_seed(0))
    table = value_table(draw.keys, augment.movable, augment.size)  # [64, 11]
    assert table.shape == (64, VALUES)
    assert (table[:, PAD] == PAD).all() and (table[:, BACKGROUND] == BACKGROUND).all()
    moved = table[:, 1:PAD]  # the colours 1..9
    assert (moved.sort(dim=1).values == torch.arange(1, PAD)).all()  # a permutation of 1..9
    assert len({tuple(row) for row in moved.tolist()}) > 60  # different per window
    grids = torch.randint(0, VALUES, (64, 3, 8, 8), dtype=torch.int8)
    out = permute_values(grids, table)
    assert out.dtype == torch.int8
    expected = torch.stack([table[b][grids[b].long()] for b in range(64)]).to(torch.int8)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("choice", range(8))
def test_dihedral_matches_numpy_on_the_content_region_and_keeps_the_pad(choice):
    rng = np.random.default_rng(choice)
    square = rng.integers(0, 10, (5, 5)).astype(np.int8)
    grids = torch.from_numpy(np.stack([_padded(square), _padded(square[:4])]))[None]  # [1,2,8,8]
    # frame 1 is 4 x 5: not square, so the window takes choice % 4 for both frames
    out = dihedral(grids, torch.tensor([choice]), PAD)[0].numpy()
    effective = choice % 4
    assert np.array_equal(out[0], _padded(NUMPY[effective](square)))
    assert np.array_equal(out[1], _padded(NUMPY[effective](square[:4])))
    square_only = torch.from_numpy(_padded(square))[None, None]
    out = dihedral(square_only, torch.tensor([choice]), PAD)[0, 0].numpy()
    assert np.array_equal(out, _padded(NUMPY[choice](square)))
    assert (out[5:] == PAD).all() and (out[:, 5:] == PAD).all()


def test_the_eight_choices_are_the_eight_distinct_symmetries():
    region = torch.arange(16, dtype=torch.int64).reshape(1, 1, 4, 4).expand(8, 1, 4, 4)
    out = dihedral(region, torch.arange(8), pad_value=None)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_the_context_frames_and_the_target_get_the_same_transform():
    augment = WindowAugment(("colours", "dihedral"), INFO, (8, 8))
    frame = torch.from_numpy(_padded(np.arange(1, 26).reshape(5, 5) % 10))  # [8, 8]
    context = frame.expand(16, 3, 8, 8).clone()
    batch = _batch(context, frame.expand(16, 8, 8).clone())
    draw = augment.draw(16, torch.Generator().manual_seed(1))
    out = augment.apply(batch, draw)
    assert out.context_obs.shape == (16, 3, 8, 8) and out.target_obs.shape == (16, 8, 8)
    for w in range(3):
        assert torch.equal(out.context_obs[:, w], out.target_obs)
    assert not torch.equal(out.target_obs, batch.target_obs)
    # what each window got: the permutation, then the dihedral choice, like numpy
    table = value_table(draw.keys, augment.movable, augment.size)
    for b in range(16):
        permuted = table[b][frame.long()].to(torch.int8).numpy()
        want = _padded(NUMPY[int(draw.dihedral[b])](permuted[:5, :5]))
        assert np.array_equal(out.target_obs[b].numpy(), want)


def test_the_same_seed_gives_the_same_transforms():
    augment = WindowAugment(("colours", "dihedral"), INFO, (8, 8))
    grids = torch.randint(0, PAD, (4, 3, 8, 8), dtype=torch.int8)
    batch = _batch(grids[:, :2], grids[:, 2])
    a = augment.apply(batch, augment.draw(4, torch.Generator().manual_seed(7)))
    b = augment.apply(batch, augment.draw(4, torch.Generator().manual_seed(7)))
    c = augment.apply(batch, augment.draw(4, torch.Generator().manual_seed(8)))
    assert torch.equal(a.context_obs, b.context_obs) and torch.equal(a.target_obs, b.target_obs)
    assert not torch.equal(a.context_obs, c.context_obs)


def test_values_outside_the_table_are_left_alone():
    table = torch.tensor([[0, 2, 1]])
    grids = torch.tensor([[[1, 2, 7, -1]]])
    assert permute_values(grids, table).tolist() == [[[2, 1, 7, -1]]]


def test_an_empty_draw_changes_nothing():
    augment = WindowAugment((), INFO, (8, 8))
    grids = torch.randint(0, VALUES, (2, 3, 8, 8), dtype=torch.int8)
    batch = _batch(grids[:, :2], grids[:, 2])
    out = augment.apply(batch, AugmentDraw(keys=None, dihedral=None))
    assert torch.equal(out.context_obs, batch.context_obs)


def test_the_recipe_field_accepts_the_known_names_only():
    assert DataConfig().augment == ()
    assert DataConfig(augment=("colours", "dihedral")).augment == ("colours", "dihedral")
    with pytest.raises(ValueError, match="augment: expected one of 'colours', 'dihedral'"):
        DataConfig(augment=("colors",))


class _Data:
    path = "x.h5"
    obs_shape = (8, 8)
    obs_dtype = "int8"
    state_shape = None
    attrs = {"env_metadata": {"cell_values": VALUES, "pad_value": PAD}}


def test_float_observations_are_refused_naming_the_key():
    data = _Data()
    data.obs_dtype = "float32"
    data.attrs = {"env_metadata": {}}
    with pytest.raises(RecipeError, match=r"data.augment: \['colours'\] on x.h5: expected integer"):
        window_augment(("colours",), data)
    assert window_augment((), data) is None


def test_states_beside_the_grids_are_refused():
    data = _Data()
    data.state_shape = (4,)
    with pytest.raises(RecipeError, match="data.augment.*/states"):
        window_augment(("dihedral",), data)
    data.state_shape, data.obs_shape = None, (8, 8, 1)
    with pytest.raises(RecipeError, match=r"'dihedral' expected \[H, W\]"):
        window_augment(("dihedral",), data)
    assert isinstance(window_augment(("colours",), data), WindowAugment)
