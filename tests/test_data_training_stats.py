"""Normalisation statistics from the training episodes only (issue 10 item 4, issue 18 item 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lejepa_core.data.prepare import open_data
from lejepa_core.data.reader import TrajectoryData, episode_split
from lejepa_core.data.stats import episode_rows
from lejepa_core.errors import DatasetError
from lejepa_core.recipe import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "lejepa_physics.toml"


def _numpy_stats(obs: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    flat = obs[rows].reshape(-1, obs.shape[-1]).astype(np.float64)
    return {"mean": flat.mean(0), "std": flat.std(0), "min": flat.min(0), "max": flat.max(0)}


def test_episode_rows():
    offsets = np.array([0, 5, 12, 15, 24])
    assert episode_rows(offsets, [2, 0]).tolist() == [0, 1, 2, 3, 4, 12, 13, 14]
    assert episode_rows(offsets, []).tolist() == []


@pytest.mark.parametrize("on_device", ["always", "never"])
def test_episode_stats_equal_numpy_over_those_rows(tmp_path, write_trajectory_file, on_device):
    path = tmp_path / "d.h5"
    arrays = write_trajectory_file(path, lengths=(5, 7, 3, 9, 6, 4))
    train, val = episode_split(6, 0.34, 0)
    rows = episode_rows(np.cumsum([0, 5, 7, 3, 9, 6, 4]), train.numpy())
    expected = _numpy_stats(arrays["observations"], rows)
    with TrajectoryData.open(path, on_device=on_device) as data:
        got = data.episode_stats(train)
        for key in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)
        # not the file's statistics (those cover the validation episodes too)
        assert not np.allclose(got["mean"], data.stats["mean"])


@pytest.mark.parametrize("on_device", ["always", "never"])
def test_open_standardises_with_the_given_or_computed_statistics(
    tmp_path, write_trajectory_file, on_device
):
    path = tmp_path / "d.h5"
    arrays = write_trajectory_file(path, states=True)
    train = torch.tensor([0, 3])
    rows = episode_rows(np.array([0, 5, 12, 15, 24]), train.numpy())
    expected = _numpy_stats(arrays["observations"], rows)
    want = (arrays["observations"] - expected["mean"]) / expected["std"]
    for stats in (lambda data: data.episode_stats(train), expected):
        with TrajectoryData.open(path, on_device=on_device, normalize=True, stats=stats) as data:
            np.testing.assert_allclose(data.normalization["mean"], expected["mean"], rtol=1e-6)
            obs, states = data.rows(torch.arange(24))
            np.testing.assert_allclose(obs.numpy(), want, rtol=1e-5, atol=1e-5)
            assert torch.equal(states, torch.from_numpy(arrays["states"]))  # states stay raw
    with TrajectoryData.open(path, normalize=True) as data:  # no stats: the file's own
        np.testing.assert_allclose(data.normalization["mean"], data.stats["mean"])
    with TrajectoryData.open(path) as data:
        assert data.normalization is None


def test_statistics_that_do_not_fit_are_refused(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path)
    with pytest.raises(DatasetError, match="do not fit observations of shape"):
        TrajectoryData.open(path, normalize=True, stats={"mean": [0.0] * 5, "std": [1.0] * 5})


def test_open_data_uses_the_training_episodes_of_the_recipe(tmp_path):
    path = tmp_path / "balls.h5"
    recipe = load_recipe(
        RECIPE,
        [
            f'data.path="{path.as_posix()}"',
            "data.episodes=6",
            "data.steps=12",
            "data.val_fraction=0.34",
        ],
    )
    with open_data(recipe, torch.device("cpu"), progress=False) as data:
        train, _ = data.episode_split(0.34, recipe.data.split_seed)
        expected = data.episode_stats(train)
        np.testing.assert_allclose(data.normalization["mean"], expected["mean"])
        np.testing.assert_allclose(data.normalization["std"], expected["std"])
        assert not np.allclose(data.normalization["mean"], data.stats["mean"])
    stored = {"mean": [0.5, 0.5, 0.0, 0.0], "std": [1.0, 1.0, 1.0, 1.0]}
    with open_data(recipe, torch.device("cpu"), generate=False, stats=stored) as data:
        assert data.normalization == stored
