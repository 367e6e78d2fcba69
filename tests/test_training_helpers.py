"""Shared pieces of the training and evaluation tests: a tiny dataset and a tiny recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_RECIPE = """
[model]
latent_dim = 8

[encoder]
name = "mlp"
hidden_dim = 16
depth = 1

[predictor]
name = "residual"
hidden_dim = 16
depth = 1
prior_hidden = 8
time_dim = 4

[masker]
name = "feature"
p_coordinates = 0.2
p_velocities = 0.2

[[losses]]
name = "l1"

[[losses]]
name = "sigreg"
weight = 0.01
num_directions = 8

[target]
mode = "ema"
momentum = 0.9
momentum_final = 0.99

[data]
path = "{data_path}"
env_id = "lejepa/BouncingBalls-v0"
env_kwargs = {{ num_balls = 2 }}
episodes = 12
steps = 30
context_frames = 2
horizons = [1, 2, 4]
val_fraction = 0.25

[train]
seed = 0
epochs = 2
steps_per_epoch = 5
batch_size = 16
lr = 3e-3
warmup_steps = 2
val_batches = 2
patience = 0
threads = 1

[log]
every = 2
progress = false
tensorboard = true
runs_dir = "{runs_dir}"
"""


def write_tiny_recipe(directory: Path, data_path: Path, name: str = "tiny") -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        TINY_RECIPE.format(data_path=data_path.as_posix(), runs_dir=(directory / "runs").as_posix())
    )
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 12-episode, 30-step, 2-ball BouncingBalls file (generated once per session)."""
    from lejepa_core.data.generate import generate_dataset

    out = tmp_path_factory.mktemp("tiny-data") / "balls.h5"
    generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=12,
        steps=30,
        out=out,
        seed=0,
        env_kwargs={"num_balls": 2},
        progress=False,
    )
    return out


def tiny_recipe(tmp_path: Path, data_path: Path, overrides: tuple[str, ...] = ()):
    from lejepa_core.recipe import load_recipe

    return load_recipe(write_tiny_recipe(tmp_path, data_path), list(overrides))
