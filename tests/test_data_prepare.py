"""open_data: the recipe's data file, generated when missing (unless told not to), checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lejepa_core.data.prepare import open_data
from lejepa_core.errors import DatasetError
from lejepa_core.recipe import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "lejepa_physics.toml"


def _recipe(data_path: Path, *overrides: str):
    small = ["data.episodes=3", "data.steps=12", "data.workers=1"]
    return load_recipe(RECIPE, [f'data.path="{data_path.as_posix()}"', *small, *overrides])


def test_missing_file_is_generated_in_a_new_directory(tmp_path):
    path = tmp_path / "new" / "balls.h5"
    recipe = _recipe(path)
    with open_data(recipe, torch.device("cpu"), progress=False) as data:
        assert path.is_file() and data.path == path
        assert data.env_id == recipe.data.env_id and data.num_episodes == 3
        assert data.env_kwargs == dict(recipe.data.env_kwargs)


def test_generate_false_on_a_missing_file_names_the_path(tmp_path):
    path = tmp_path / "missing" / "balls.h5"
    with pytest.raises(DatasetError, match=re.escape(f"{path}: no such file") + ".*not generated"):
        open_data(_recipe(path), torch.device("cpu"), progress=False, generate=False)
    assert not path.parent.exists()


def test_generate_false_opens_an_existing_file(tmp_path):
    path = tmp_path / "balls.h5"
    open_data(_recipe(path), torch.device("cpu"), progress=False).close()
    with open_data(_recipe(path), torch.device("cpu"), generate=False) as data:
        assert data.num_episodes == 3


def test_a_file_of_other_env_kwargs_is_refused(tmp_path):
    path = tmp_path / "balls.h5"
    open_data(_recipe(path), torch.device("cpu"), progress=False).close()
    with pytest.raises(DatasetError, match="delete the file to regenerate it"):
        open_data(_recipe(path, "data.env_kwargs.num_balls=2"), torch.device("cpu"))
