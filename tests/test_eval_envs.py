"""``lejepa eval`` on envs lejepa knows nothing about: gymnasium's own (no metadata), a third
party's that publishes groups, ``dt`` and ``derivatives``, and data files written before the
built-in envs published ``dt`` (evaluation reads only the file's ``env_metadata``)."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from lejepa_core.cli import main
from tests.conftest import TINY_RECIPE

SPINNER_ID = "lejepa-test/Spinner-v0"
SPINNER_DT = 0.05


class SpinnerEnv(gym.Env):
    """A third party's env: an angle turning at a constant angular velocity (no actions).

    Observation float32 ``[theta, omega]``; ``theta += dt * omega`` each step, so the
    constant-velocity baseline is exact on ``angle``."""

    metadata = {
        "render_modes": [],
        "feature_names": ("theta", "omega"),
        "feature_groups": {"angle": ("theta",), "angular_velocity": ("omega",)},
        "dt": SPINNER_DT,
        "derivatives": {"theta": "omega"},
        "noop_action": 0,
    }

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(1)
        self._state = np.zeros(2, dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._state = np.array([self.np_random.uniform(-1, 1), self.np_random.uniform(-2, 2)])
        return self._state.astype(np.float32), {}

    def step(self, action):
        self._state[0] += SPINNER_DT * self._state[1]
        return self._state.astype(np.float32), 0.0, False, False, {}


@pytest.fixture(scope="module")
def spinner_registered():
    gym.register(SPINNER_ID, entry_point=SpinnerEnv)
    yield SPINNER_ID
    del gym.registry[SPINNER_ID]


ARC_KWARGS = "env_kwargs = { grid_size = 6, num_objects = 2, max_shape_size = 2, max_steps = 40 }"
OBJECT_ENCODER = 'name = "object"\ndim = 16\ndepth = 1\nnum_heads = 2\nmax_objects = 8'


def train_tiny(
    directory: Path,
    env_id: str,
    *,
    data_path: Path | None = None,
    env_kwargs: str = "env_kwargs = {}",
    encoder: str = 'name = "mlp"\nhidden_dim = 16\ndepth = 1',
) -> Path:
    """A 1-epoch run of the tiny recipe on ``env_id`` (no masking: no feature names needed)."""
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.loop import train

    directory.mkdir(parents=True, exist_ok=True)
    data_path = data_path or directory / "data.h5"
    text = TINY_RECIPE.format(data_path=data_path.as_posix(), runs_dir=directory.as_posix())
    text = text.replace('"lejepa/BouncingBalls-v0"', f'"{env_id}"')
    text = text.replace("env_kwargs = { num_balls = 2 }", env_kwargs)
    text = text.replace('name = "mlp"\nhidden_dim = 16\ndepth = 1', encoder)
    text = text.replace(
        'name = "feature"\np_coordinates = 0.2\np_velocities = 0.2', 'name = "none"'
    )
    (directory / "recipe.toml").write_text(text)
    recipe = load_recipe(directory / "recipe.toml", ["train.epochs=1", "train.steps_per_epoch=3"])
    return train(recipe, out=directory / "run").run_dir


def run_eval(run_dir: Path) -> tuple[str, dict]:
    result = CliRunner().invoke(
        main, ["eval", str(run_dir), "--batches", "2", "--device", "cpu"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output, json.loads((run_dir / "eval.json").read_text())


@pytest.mark.parametrize("env_id, features", [("CartPole-v1", 4), ("Pendulum-v1", 3)])
def test_gymnasium_env_is_evaluated_on_one_group_all(tmp_path, env_id, features):
    output, report = run_eval(train_tiny(tmp_path, env_id))
    names = [f"f{i}" for i in range(features)]
    assert report["kind"] == "state" and report["env_id"] == env_id
    assert report["feature_names"] == names and report["groups"] == {"all": names}
    assert set(report["r2"]) == {"overall", "all"}
    assert all(math.isfinite(v) for v in report["r2"].values())
    estimators = ["model", "rollout", "copy_last", "probe_floor"]
    assert report["dt"] is None and report["estimators"] == estimators
    for row in report["per_k"]:
        assert set(row) == {"k", "samples"} | {
            f"{name}/{figure}" for name in estimators for figure in ("mae", "mae_all")
        }
        assert all(math.isfinite(v) for v in row.values())
    assert "nan" not in output.lower()
    assert f"all ({', '.join(names)})" in output
    assert "constant velocity" not in output


def test_third_party_env_gets_its_groups_and_the_constant_velocity_baseline(
    tmp_path, spinner_registered
):
    output, report = run_eval(train_tiny(tmp_path, spinner_registered))
    assert report["groups"] == {"angle": ["theta"], "angular_velocity": ["omega"]}
    assert set(report["r2"]) == {"overall", "angle", "angular_velocity"}
    assert report["dt"] == SPINNER_DT
    assert report["estimators"] == [
        "model",
        "rollout",
        "copy_last",
        "constant_velocity",
        "probe_floor",
    ]
    for row in report["per_k"]:
        # theta + k dt omega is the true next angle; omega is copied, and never changes
        assert row["constant_velocity/mae_angle"] < 1e-5 < row["copy_last/mae_angle"]
        assert (
            row["constant_velocity/mae_angular_velocity"] == row["copy_last/mae_angular_velocity"]
        )
        assert row["copy_last/mae_angular_velocity"] < 1e-6
    text = " ".join(output.split())
    assert "per feature group (dt=0.05)" in text and "constant velocity" in text
    assert "angle" in text and "angular_velocity" in text
    assert "nan" not in output.lower()


def test_old_data_file_without_dt_still_evaluates(tmp_path, tiny_data):
    """A BouncingBalls file written before the env published dt and derivatives (and when
    its position group was called ``coordinates``): groups from the file, no CV baseline."""
    old = tmp_path / "old.h5"
    shutil.copy(tiny_data, old)
    with h5py.File(old, "r+") as f:
        metadata = json.loads(f.attrs["env_metadata"])
        for key in ("dt", "derivatives", "positions", "box"):
            metadata.pop(key, None)
        groups = {"coordinates": ["x", "y"], "velocities": ["vx", "vy"]}
        metadata["feature_groups"] = metadata["state_feature_groups"] = groups
        f.attrs["env_metadata"] = json.dumps(metadata)
    run_dir = train_tiny(
        tmp_path,
        "lejepa/BouncingBalls-v0",
        data_path=old,
        env_kwargs="env_kwargs = { num_balls = 2 }",
    )
    output, report = run_eval(run_dir)
    assert report["groups"] == {"coordinates": ["x", "y"], "velocities": ["vx", "vy"]}
    assert report["dt"] is None and "constant_velocity/mae" not in report["per_k"][0]
    assert all(math.isfinite(v) for v in report["r2"].values())
    assert "coordinates" in output and "velocities" in output
    assert "nan" not in output.lower()


@pytest.fixture(scope="module")
def arc_data(tmp_path_factory) -> Path:
    from lejepa_core.data.generate import generate_dataset

    out = tmp_path_factory.mktemp("arc") / "arc.h5"
    kwargs = {"grid_size": 6, "num_objects": 2, "max_shape_size": 2, "max_steps": 40}
    generate_dataset(
        "lejepa/ArcGrid-v0", episodes=12, steps=30, out=out, env_kwargs=kwargs, progress=False
    )
    return out


@pytest.mark.parametrize("published", [True, False], ids=["new-file", "file-without-cell_values"])
def test_grid_eval_reads_cell_values(tmp_path, arc_data, published):
    """ArcGrid publishes cell_values = 11. A run whose file was written before it did (the
    metadata is stripped after training here) falls back to the file's largest value + 1
    (the pad 10), for the object encoder and the probe alike."""
    data = tmp_path / "arc.h5"
    shutil.copy(arc_data, data)
    run_dir = train_tiny(
        tmp_path, "lejepa/ArcGrid-v0", data_path=data, env_kwargs=ARC_KWARGS, encoder=OBJECT_ENCODER
    )
    if not published:
        with h5py.File(data, "r+") as f:
            metadata = json.loads(f.attrs["env_metadata"])
            del metadata["cell_values"], metadata["palette"]
            f.attrs["env_metadata"] = json.dumps(metadata)
    output, report = run_eval(run_dir)
    assert report["kind"] == "grid" and report["cell_values"] == 11
    assert 0.0 <= report["probe_cell_accuracy"] <= 1.0
    assert report["estimators"] == [
        "model",
        "rollout",
        "blank",
        "copy_last",
        "constant_velocity",
        "probe_floor",
    ]
    for row in report["per_k"]:
        for name in report["estimators"]:
            assert 0.0 <= row[f"{name}/cell_accuracy"] <= 1.0
    first = report["per_k"][0]  # k = 1: a rollout of one step is the direct prediction
    assert first["k"] == 1 and first["rollout/cell_accuracy"] == first["model/cell_accuracy"]
    assert report["latent"]["rollout/err_signal/k1"] == report["latent"]["model/err_signal/k1"]
    assert "probe floor" in output and "copy last grid" in output
    assert "probe cell accuracy" in output and "nan" not in output.lower()
