"""generate / convert / inspect commands, and the Minari import."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from lejepa_core.cli import main as cli
from lejepa_core.data.commands import convert_command, generate_command, inspect_command
from lejepa_core.data.convert import convert_minari
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import DatasetError, UserInputError


def test_generate_then_inspect(tmp_path):
    out = tmp_path / "c.h5"
    result = CliRunner().invoke(
        generate_command,
        [
            "CartPole-v1",
            "--episodes",
            "12",
            "--steps",
            "20",
            "--out",
            str(out),
            "--seed",
            "2",
            "--quiet",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = CliRunner().invoke(inspect_command, [str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    assert "CartPole-v1" in result.output and "episodes     12" in result.output
    assert "train 11 episodes" in result.output and "val 1 episodes" in result.output
    assert "observation statistics" in result.output
    result = CliRunner().invoke(inspect_command, [str(out), "--json"], catch_exceptions=False)
    info = json.loads(result.output)
    assert info["episodes"] == 12 and info["split"]["val_episodes"] == 1


def test_generate_creates_the_out_directory(tmp_path):
    out = tmp_path / "new" / "dir" / "x.h5"
    args = ["--episodes", "2", "--steps", "5", "--quiet", "--out"]
    result = CliRunner().invoke(
        generate_command, ["CartPole-v1", *args, str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.parent.iterdir()] == ["x.h5"]
    with pytest.raises(UserInputError, match="unknown environment"):  # fails before writing
        CliRunner().invoke(
            generate_command,
            ["NoSuchEnv-v9", *args, str(tmp_path / "other" / "x.h5")],
            catch_exceptions=False,
        )
    assert not (tmp_path / "other").exists()


def test_inspect_table_lists_feature_names(tmp_path, write_trajectory_file):
    path = tmp_path / "d.h5"
    write_trajectory_file(path)
    result = CliRunner().invoke(inspect_command, [str(path)], catch_exceptions=False)
    assert result.exit_code == 0
    for name in ("a", "b", "c", "test/Fake-v0", '{"n": 2}'):
        assert name in result.output


def test_bad_file_is_dataset_error_and_exit_2(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DatasetError, match="bad.h5"):
        CliRunner().invoke(inspect_command, [str(bad)], catch_exceptions=False)
    result = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert "bad.h5: not a readable HDF5 file" in result.output
    result = CliRunner().invoke(
        cli,
        [
            "generate",
            "CartPole-v1",
            "--episodes",
            "1",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "x.h5"),
            "--env-kwargs",
            "[1]",
        ],
    )
    assert result.exit_code == 2 and "--env-kwargs must be a JSON object" in result.output


# -- Minari ------------------------------------------------------------------------------------
def _write_minari(root, lengths=(4, 6, 3)):
    """A Minari-layout dataset written by hand (what minari 0.5's HDF5 storage writes)."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    episodes = []
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i, n in enumerate(lengths):
            g = f.create_group(f"episode_{i}")
            g.attrs["id"] = i
            g.attrs["seed"] = 100 + i
            g.attrs["total_steps"] = n
            obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
            actions = rng.integers(0, 2, n)
            g["observations"], g["actions"] = obs, actions
            g["rewards"] = np.ones(n)
            g["terminations"] = np.zeros(n, bool)
            g["truncations"] = np.zeros(n, bool)
            episodes.append((obs, actions))
    spec = gym.spec("CartPole-v1").to_json()
    (data / "metadata.json").write_text(
        json.dumps(
            {
                "dataset_id": "cartpole/hand-v0",
                "data_format": "hdf5",
                "env_spec": spec,
                "total_episodes": len(lengths),
                "minari_version": "0.5.4",
            }
        )
    )
    return episodes


def test_convert_hand_written_minari(tmp_path):
    episodes = _write_minari(tmp_path / "ds")
    out = tmp_path / "converted" / "out.h5"  # the directory is created
    result = CliRunner().invoke(
        convert_command,
        [str(tmp_path / "ds"), "--out", str(out), "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    with TrajectoryData.open(out, on_device="always") as data:
        assert data.env_id == "CartPole-v1" and data.num_episodes == 3
        assert data.episode_offsets.tolist() == [0, 5, 12, 16]
        assert (
            data.attrs["source"] == "minari"
            and data.attrs["minari_dataset_id"] == "cartpole/hand-v0"
        )
        for e, (obs, _actions) in enumerate(episodes):
            rows = slice(int(data.episode_offsets[e]), int(data.episode_offsets[e + 1]))
            np.testing.assert_array_equal(data.observations[rows].numpy(), obs)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["actions"][5:12], np.append(episodes[1][1], 0))
        assert f["episode_seeds"][...].tolist() == [100, 101, 102]
        assert f["rewards"][4] == 0 and f["rewards"][3] == 1


def test_convert_rejects_non_minari(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a Minari dataset"):
        convert_minari(tmp_path / "empty", out=tmp_path / "o.h5", progress=False)
    d = tmp_path / "dict" / "data"
    d.mkdir(parents=True)
    with h5py.File(d / "main_data.hdf5", "w") as f:
        f.create_group("episode_0/observations").create_dataset("a", data=np.zeros((3, 2)))
        f["episode_0/actions"] = np.zeros(2)
    with pytest.raises(DatasetError, match="Dict/Tuple space"):
        convert_minari(tmp_path / "dict", out=tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_convert_real_minari_dataset(tmp_path, monkeypatch):
    pytest.importorskip("jax")
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    env = minari.DataCollector(gym.make("CartPole-v1"))
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(15):
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    dataset = env.create_dataset(dataset_id="cartpole/lejepa-test-v0", algorithm_name="random")
    out = convert_minari(
        tmp_path / "root" / "cartpole" / "lejepa-test-v0", out=tmp_path / "m.h5", progress=False
    )
    with TrajectoryData.open(out, on_device="always") as data:
        assert data.num_episodes == 3 and data.env_id == "CartPole-v1"
        for e, episode in enumerate(dataset.iterate_episodes()):
            rows = slice(int(data.episode_offsets[e]), int(data.episode_offsets[e + 1]))
            np.testing.assert_array_equal(data.observations[rows].numpy(), episode.observations)


@pytest.mark.parametrize("flag", ["--force", "--overwrite"])
def test_generate_never_replaces_an_existing_file_without_force(tmp_path, flag):
    out = tmp_path / "data.h5"
    out.write_bytes(b"an existing dataset")
    args = ["generate", "CartPole-v1", "--episodes", "2", "--steps", "5", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--quiet"], catch_exceptions=False)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        result.stderr.strip() == f"Error: --out {out}: the file exists; pass --force to replace it"
    )
    assert out.read_bytes() == b"an existing dataset"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]
    result = CliRunner().invoke(cli, [*args, "--quiet", flag], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with TrajectoryData.open(out) as data:
        assert data.num_episodes == 2


def test_convert_never_replaces_an_existing_file_without_force(tmp_path):
    _write_minari(tmp_path / "minari")
    out = tmp_path / "data.h5"
    out.write_bytes(b"an existing dataset")
    args = ["convert", str(tmp_path / "minari"), "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2 and "pass --force" in result.stderr
    assert out.read_bytes() == b"an existing dataset"
