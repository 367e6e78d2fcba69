"""What a plain-h5py reader finds in a file (issue 18 items 4 and 6): how each episode ended,
rewards in the source's precision, statistics always JSON lists, spaces as JSON, dataset
attributes, one rule for integer actions; and older files still read."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from lejepa_core.data import schema
from lejepa_core.data.convert import convert_minari
from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.reader import TrajectoryData, inspect_dataset
from tests.test_data_cli import _write_minari


def test_generated_single_env_records_terminations(tmp_path, tiny_env_id):
    out = generate_dataset(
        tiny_env_id, episodes=12, steps=15, out=tmp_path / "t.h5", policy="random", progress=False
    )
    with h5py.File(out) as f:
        lengths = np.diff(f["episode_offsets"][...])
        ends = f["episode_ends"][...]
        assert ends.dtype == np.int8 and ends.shape == (12,)
        assert (lengths < 15).any(), "the tiny env should terminate some episodes"
        assert (ends[lengths < 15] == schema.END_TERMINATED).all()
        assert set(ends[lengths == 15].tolist()) <= {schema.END_CUT, schema.END_TERMINATED}
        assert f["rewards"].dtype == np.float64  # the env's Python floats, unrounded
        rewards = f["rewards"][...]
        assert (rewards != rewards.astype(np.float32)).any()  # more digits than float32 holds
    counts = inspect_dataset(out)["episode_ends"]
    assert counts["terminated"] == int((ends == 1).sum()) and sum(counts.values()) == 12


@pytest.mark.parametrize("env_kwargs", [{"num_balls": 2}, {"num_balls": 2, "max_steps": 4}])
def test_generated_vector_env_records_truncations(tmp_path, env_kwargs):
    out = generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=3,
        steps=8,
        out=tmp_path / "b.h5",
        env_kwargs=env_kwargs,
        progress=False,
    )
    with h5py.File(out) as f:
        lengths = np.diff(f["episode_offsets"][...])
        ends = f["episode_ends"][...].tolist()
    if "max_steps" in env_kwargs:
        assert lengths.tolist() == [5, 5, 5] and ends == [schema.END_TRUNCATED] * 3
    else:
        assert lengths.tolist() == [8, 8, 8] and ends == [schema.END_CUT] * 3


def test_attributes_for_plain_readers(tmp_path):
    states = generate_dataset(
        "lejepa/BouncingBalls-v0", episodes=2, steps=5, out=tmp_path / "s.h5", progress=False
    )
    pixels = generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=2,
        steps=5,
        out=tmp_path / "p.h5",
        env_kwargs={"obs_mode": "pixels", "image_size": 16},
        progress=False,
    )
    with h5py.File(states) as f:
        for key in schema.STAT_NAMES:  # always a JSON list
            assert isinstance(f.attrs[key], str) and len(json.loads(f.attrs[key])) == 4
        action_space = json.loads(f.attrs["action_space"])
        assert action_space["type"] == "Discrete" and action_space["n"] == 1 + 4 * 3
        assert schema.space_from_json(action_space) == gym.spaces.Discrete(13)
        observation_space = schema.space_from_json(json.loads(f.attrs["observation_space"]))
        assert observation_space.shape == (3, 4) and observation_space.dtype == np.float32
        assert json.loads(f["observations"].attrs["axes"]) == ["step", "ball", "feature"]
        units = json.loads(f["observations"].attrs["units"])
        assert units["x"] == "length" and units["vx"] == "length/time"
        assert "padding" in f["actions"].attrs["description"]
        assert f["actions"].dtype == np.int8
    with h5py.File(pixels) as f:
        for key in schema.STAT_NAMES:
            assert len(json.loads(f.attrs[key])) == 1  # one value over all elements, as a list
        assert json.loads(f["observations"].attrs["axes"])[0] == "step"
        assert "row" in json.loads(f["observations"].attrs["axes"])[1]
        assert json.loads(f["states"].attrs["axes"]) == ["step", "ball", "feature"]
    with TrajectoryData.open(pixels) as data:
        assert isinstance(data.stats["mean"], float)  # in memory: one float, as before


def test_older_files_still_read(tmp_path, write_trajectory_file):
    """Scalar float statistics and str(space) attributes, no /episode_ends: still version 1."""
    path = tmp_path / "old.h5"
    write_trajectory_file(path, obs_shape=(2, 2), feature_names=())
    with h5py.File(path, "a") as f:
        for key in schema.STAT_NAMES:
            f.attrs[key] = float(json.loads(f.attrs[key])[0])
        f.attrs["action_space"] = "Discrete(3)"
    with TrajectoryData.open(path, normalize=True) as data:
        assert isinstance(data.stats["mean"], float)
        assert data.attrs["action_space"] == "Discrete(3)"
        assert schema.EPISODE_ENDS not in data.attrs


def test_bad_episode_ends_are_refused(tmp_path, write_trajectory_file):
    path = tmp_path / "bad.h5"
    write_trajectory_file(path)
    with h5py.File(path, "a") as f:
        f["episode_ends"] = np.array([0, 1, 2, 7], np.int8)
    with pytest.raises(Exception, match="episode_ends must hold integers 0..3"):
        TrajectoryData.open(path)


def test_convert_keeps_end_flags_reward_precision_and_stores_actions_by_the_rule(tmp_path):
    _write_minari(tmp_path / "ds")
    with h5py.File(tmp_path / "ds" / "data" / "main_data.hdf5", "a") as f:
        f["episode_0/terminations"][-1] = True
        f["episode_1/truncations"][-1] = True
        f["episode_2/terminations"][-1] = True
        f["episode_2/truncations"][-1] = True
        del f["episode_1/rewards"]
        f["episode_1/rewards"] = np.full(6, 0.1, np.float64)
    metadata_path = tmp_path / "ds" / "data" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["action_space"] = json.dumps(
        {"type": "Discrete", "dtype": "int64", "start": 0, "n": 2}
    )
    metadata_path.write_text(json.dumps(metadata))
    out = convert_minari(tmp_path / "ds", out=tmp_path / "c.h5", progress=False)
    with h5py.File(out) as f:
        assert f["episode_ends"][...].tolist() == [1, 2, 3]
        assert f["rewards"].dtype == np.float64 and f["rewards"][5] == 0.1  # exactly
        assert f["actions"].dtype == np.int8  # Discrete(2): like generated files
        assert json.loads(f.attrs["action_space"])["n"] == 2
