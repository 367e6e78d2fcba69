"""``[data] augment`` in the training sampler: training windows only, after the windows' random
numbers, the same with and without prefetch, no host sync, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lejepa_core.cli import main
from lejepa_core.data.augment import WindowAugment, value_table
from lejepa_core.data.prepare import open_data
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.errors import RecipeError
from lejepa_core.recipe import load_recipe
from lejepa_core.testing import HostSyncCounter
from lejepa_core.training import distributed
from lejepa_core.training.run import build_samplers
from tests.conftest import tiny_recipe, write_tiny_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "arc_cells.toml"
TINY = ("data.episodes=8", "data.steps=12", "train.batch_size=16", "train.val_windows=16")


@pytest.fixture(scope="module")
def arc_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arc-augment") / "arc.h5"
    recipe = load_recipe(RECIPE, [*TINY, f"data.path={path.as_posix()}"])
    open_data(recipe, torch.device("cpu"), progress=False).close()
    return path


def _samplers(path: Path, augment: str):
    overrides = [*TINY, f"data.path={path.as_posix()}", f"data.augment={augment}"]
    recipe = load_recipe(RECIPE, overrides)
    data = open_data(recipe, torch.device("cpu"), progress=False)
    return build_samplers(recipe, data, torch.device("cpu"))


def test_training_windows_are_augmented_after_their_draw_and_validation_ones_never(arc_file):
    plain, plain_val = _samplers(arc_file, "[]")
    augmented, augmented_val = _samplers(arc_file, '["colours"]')
    assert plain.augment is None and isinstance(augmented.augment, WindowAugment)
    for a, b in zip(plain_val, augmented_val, strict=True):
        assert torch.equal(a.context_obs, b.context_obs) and torch.equal(a.target_obs, b.target_obs)
    g_plain, g_aug = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    before = plain.sample(16, g_plain)
    after = augmented.sample(16, g_aug)
    assert torch.equal(before.episode, after.episode) and torch.equal(before.t, after.t)
    assert not torch.equal(before.context_obs, after.context_obs)
    # the colours drawn right after the windows, from the same generator
    draw = augmented.augment.draw(16, g_plain)
    table = value_table(draw.keys, augmented.augment.movable, augmented.augment.size)
    expected = torch.stack([table[b][before.target_obs[b].long()] for b in range(16)])
    assert torch.equal(after.target_obs, expected.to(after.target_obs.dtype))
    assert torch.equal(g_plain.get_state(), g_aug.get_state())
    # pad and background cells stay where they were
    for value in (augmented.augment.pad_value, 0):
        assert torch.equal(before.context_obs == value, after.context_obs == value)


def test_prefetch_gives_the_same_augmented_batches(arc_file):
    sampler, _ = _samplers(arc_file, '["colours", "dihedral"]')
    data, episodes = sampler.data, sampler._episodes
    kwargs = dict(context_frames=2, horizons=(1, 2, 4), augment=sampler.augment)
    eager = WindowSampler(data, episodes, prefetch=False, **kwargs)
    ahead = WindowSampler(data, episodes, prefetch=True, **kwargs)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    try:
        for _ in range(3):
            a, b = eager.sample(8, g1), ahead.sample(8, g2)
            assert torch.equal(a.context_obs, b.context_obs)
            assert torch.equal(a.target_obs, b.target_obs)
    finally:
        ahead.close()


def test_augmenting_a_batch_makes_no_host_sync(arc_file):
    sampler, _ = _samplers(arc_file, '["colours", "dihedral"]')
    generator = torch.Generator().manual_seed(0)
    batch = sampler._sample(16, generator, None)
    with HostSyncCounter() as syncs:
        sampler.augment.apply(batch, sampler.augment.draw(16, generator))
    assert syncs.count == 0, syncs.calls


def test_float_observations_refuse_augment(tiny_data, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_data, ('data.augment=["colours"]',))
    data = open_data(recipe, torch.device("cpu"), progress=False)
    with pytest.raises(RecipeError, match=r"^data.augment: \['colours'\] on .*: expected integer"):
        build_samplers(recipe, data, torch.device("cpu"), distributed.DistInfo())


@pytest.mark.slow
def test_run_with_augment_on_float_data_exits_2_with_one_line(tiny_data, tmp_path):
    path = write_tiny_recipe(tmp_path, tiny_data)
    args = ["run", str(path), "--out", str(tmp_path / "r"), "--set", 'data.augment=["dihedral"]']
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "data.augment: ['dihedral']" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_training_step_with_augment_makes_no_host_sync(tmp_path):
    from tests.test_host_syncs import _built_run, _steps

    run, sampler = _built_run("arc_cells", tmp_path, 'data.augment=["colours", "dihedral"]')
    assert sampler.augment is not None
    _steps(run, sampler, 2)  # warm-up
    with HostSyncCounter() as syncs:
        _steps(run, sampler, 3)
    assert syncs.count == 0, syncs.calls
