"""Schema v1: writer round trip, atomicity, and every validation error naming the file."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from lejepa_core.data import schema
from lejepa_core.data.reader import TrajectoryData, episode_split, inspect_dataset
from lejepa_core.data.writer import RunningStats, TrajectoryWriter
from lejepa_core.errors import DatasetError


def test_round_trip_plain_h5py_and_reader(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    arrays = write_trajectory_file(path, states=True)
    with h5py.File(path, "r") as f:  # readable with plain h5py, nothing pickled
        assert f.attrs["schema"] == "lejepa-trajectories"
        assert f.attrs["schema_version"] == 1
        assert json.loads(f.attrs["feature_names"]) == ["a", "b", "c"]
        np.testing.assert_array_equal(f["observations"][...], arrays["observations"])
        np.testing.assert_array_equal(f["episode_offsets"][...], [0, 5, 12, 15, 24])
        assert f["observations"].compression is None  # "auto": float observations raw
        assert f["actions"].compression == "lzf"
        assert f["observations"].chunks[1:] == (2, 3)
    flat = arrays["observations"].reshape(-1, 3).astype(np.float64)
    for on_device in ("always", "never"):
        with TrajectoryData.open(path, on_device=on_device) as data:
            assert data.env_id == "test/Fake-v0" and data.env_kwargs == {"n": 2}
            assert data.feature_names == ("a", "b", "c")
            assert data.obs_shape == (2, 3) and data.obs_dtype == "float32"
            assert data.state_shape == (2, 2)
            assert data.num_episodes == 4 and data.num_steps == 24
            assert data.episode_offsets.dtype == torch.int64
            np.testing.assert_allclose(data.stats["mean"], flat.mean(0), rtol=1e-6)
            np.testing.assert_allclose(data.stats["std"], flat.std(0), rtol=1e-6)
            np.testing.assert_allclose(data.stats["min"], flat.min(0))
            np.testing.assert_allclose(data.stats["max"], flat.max(0))
            assert data.attrs["schema_version"] == 1
            if on_device == "always":
                assert torch.equal(data.observations, torch.from_numpy(arrays["observations"]))
                assert torch.equal(data.states, torch.from_numpy(arrays["states"]))
            else:
                assert data.observations is None and data.states is None
                obs, states = data.read_rows(np.array([0, 1, 7, 23]))
                assert torch.equal(obs, torch.from_numpy(arrays["observations"][[0, 1, 7, 23]]))
                assert torch.equal(states, torch.from_numpy(arrays["states"][[0, 1, 7, 23]]))


@pytest.mark.parametrize("compression", ["lzf", "gzip", "gzip-4", "none"])
def test_compression_choices_round_trip(tmp_path, compression):
    path = tmp_path / "d.h5"
    obs = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with TrajectoryWriter(
        path,
        obs_shape=(3,),
        obs_dtype="float32",
        action_shape=(),
        action_dtype="int8",
        compression=compression,
    ) as writer:
        writer.append(obs, np.ones(50, np.int8), lengths=[20, 30], seeds=[1, 2])
    with h5py.File(path) as f:
        assert f["observations"].compression == {"none": None, "lzf": "lzf"}.get(
            compression, "gzip"
        )
    with TrajectoryData.open(path, on_device="always") as data:
        assert torch.equal(data.observations, torch.from_numpy(obs))


def test_normalize_standardises_observations_but_not_states(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    arrays = write_trajectory_file(path)
    with TrajectoryData.open(path, on_device="always", normalize=True) as data:
        obs = data.observations.reshape(-1, 3).double()
        torch.testing.assert_close(
            obs.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            obs.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0
        )
        assert torch.equal(data.states, torch.from_numpy(arrays["observations"]))  # raw


def test_running_stats_merge_equals_numpy():
    x = np.random.default_rng(1).normal(5, 3, size=(1000, 7, 4)).astype(np.float32)
    stats = RunningStats(True, 4)
    for block in np.array_split(x, 3):
        stats.update(block)
    got, flat = stats.as_attrs(), x.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(got["mean"], flat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(got["std"], flat.std(0), rtol=1e-7)
    scalar = RunningStats(False, 1)
    scalar.update(x[:10])
    assert scalar.as_attrs()["max"] == pytest.approx(float(x[:10].max()))


def test_failed_write_leaves_old_file_intact_and_no_temp_files(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path, lengths=(4, 4))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with TrajectoryWriter(
            path, obs_shape=(3,), obs_dtype="float32", action_shape=(), action_dtype="int64"
        ) as writer:
            writer.append(
                np.zeros((5, 3), np.float32), np.zeros(5, np.int64), lengths=[5], seeds=[0]
            )
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_writer_rejects_non_finite_observations(tmp_path):
    path = tmp_path / "d.h5"
    obs = np.zeros((3, 2), np.float32)
    obs[1, 0] = np.nan
    with pytest.raises(DatasetError, match="d.h5: non-finite"):
        with TrajectoryWriter(
            path, obs_shape=(2,), obs_dtype="float32", action_shape=(), action_dtype="int64"
        ) as w:
            w.append(obs, np.zeros(3, np.int64), lengths=[3], seeds=[0])
    assert list(tmp_path.iterdir()) == []


# -- validation errors: each a DatasetError naming the file -----------------------------------
def _expect(path, match):
    with pytest.raises(DatasetError, match=match) as info:
        TrajectoryData.open(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.h5", "no such file")


def test_truncated_file(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path, lengths=(50, 50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect(path, "truncated or corrupt")


def test_not_hdf5(tmp_path):
    path = tmp_path / "d.h5"
    path.write_text("hello")
    _expect(path, "not a readable HDF5 file")


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((3, 2))
    _expect(path, "not a lejepa trajectory file")


def test_wrong_schema_version(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 2
    _expect(path, "schema_version 2 is not supported")


@pytest.mark.parametrize("on_device", ["always", "never"])
def test_nan_in_observations(tmp_path, on_device, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path)
    with h5py.File(path, "a") as f:
        f["observations"][6, 1, 2] = np.nan
    with pytest.raises(
        DatasetError, match=r"d.h5: /observations holds non-finite values \(first at row 6\)"
    ):
        TrajectoryData.open(path, on_device=on_device)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f.__delitem__("actions"), "missing dataset /actions"),
        (
            lambda f: _replace(f, "episode_offsets", np.array([0, 5, 4, 15, 24])),
            "not strictly increasing",
        ),
        (lambda f: _replace(f, "episode_offsets", np.array([0, 5, 12, 15, 20])), "ends at 20"),
        (lambda f: _replace(f, "episode_offsets", np.array([1, 5, 12, 15, 24])), "starts at 1"),
        (lambda f: _replace(f, "actions", np.zeros(23)), "/actions has shape"),
        (lambda f: _replace(f, "episode_seeds", np.zeros(3)), "/episode_seeds has shape"),
        (lambda f: f.attrs.__setitem__("obs_dtype", "uint8"), "attribute obs_dtype says uint8"),
        (lambda f: f.attrs.__setitem__("mean", "[1, 2]"), "statistic 'mean' has shape"),
    ],
)
def test_inconsistent_files(tmp_path, edit, match, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path)
    with h5py.File(path, "a") as f:
        edit(f)
    _expect(path, match)


def _replace(f, name, value):
    del f[name]
    f[name] = value


def test_episode_split_reproducible_disjoint_and_covering():
    train, val = episode_split(50, 0.1, seed=0)
    train2, val2 = episode_split(50, 0.1, seed=0)
    assert torch.equal(train, train2) and torch.equal(val, val2)
    assert len(val) == 5 and len(train) == 45
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(50))
    assert not torch.equal(val, episode_split(50, 0.1, seed=1)[1])
    assert len(episode_split(2, 0.01, seed=0)[1]) == 1  # at least one validation episode
    assert len(episode_split(1, 0.5, seed=0)[1]) == 0  # but never the only episode
    assert len(episode_split(10, 0.0, seed=0)[1]) == 0


def test_inspect_dataset(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path, lengths=[5] * 20)
    info = inspect_dataset(path)
    assert info["episodes"] == 20 and info["total_steps"] == 100
    assert info["split"]["val_episodes"] == 2 and info["split"]["train_episodes"] == 18
    assert info["datasets"]["observations"]["shape"] == [100, 2, 3]
    assert info["stats"]["mean"] == pytest.approx(json.loads(h5py.File(path)["/"].attrs["mean"]))
    assert schema.SCHEMA_NAME == info["attrs"]["schema"]
