"""``lejepa export --minari``: files generated here open with the real ``minari.load_dataset``,
and Minari -> lejepa -> Minari keeps observations, actions, rewards (float64), end flags and
seeds (issue 18 item 4)."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from lejepa_core.cli import main
from lejepa_core.data import schema
from lejepa_core.data.convert import convert_minari
from lejepa_core.data.export import default_dataset_id, export_minari
from lejepa_core.data.generate import generate_dataset
from lejepa_core.errors import UserInputError

minari = pytest.importorskip("minari", reason="minari (dev extra) is not installed")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _episodes(path):
    with h5py.File(path) as f:
        offsets = f["episode_offsets"][...]
        arrays = {k: f[k][...] for k in ("observations", "actions", "rewards")}
        ends = f["episode_ends"][...] if "episode_ends" in f else None
        states = f["states"][...] if "states" in f else None
        seeds = f["episode_seeds"][...]
    return offsets, arrays, ends, states, seeds


def test_generated_file_opens_with_minari_load_dataset(tmp_path, minari_root):
    data = generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=4,
        steps=9,
        out=tmp_path / "balls.h5",
        env_kwargs={"num_balls": 2, "max_steps": 6},
        policy="random",
        progress=False,
    )
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--minari",
            str(data),
            "--out",
            str(minari_root / "lejepa" / "balls-v0"),
            "--quiet",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    dataset = minari.load_dataset("lejepa/balls-v0")
    offsets, arrays, ends, _, seeds = _episodes(data)
    assert dataset.total_episodes == 4 and dataset.total_steps == int(offsets[-1]) - 4
    assert dataset.action_space == gym.spaces.Discrete(9)
    assert dataset.observation_space.shape == (2, 4)
    for e, episode in enumerate(dataset.iterate_episodes()):
        rows = slice(offsets[e], offsets[e + 1])
        np.testing.assert_array_equal(episode.observations, arrays["observations"][rows])
        np.testing.assert_array_equal(episode.actions, arrays["actions"][rows][:-1])
        assert episode.actions.dtype == np.int64
        np.testing.assert_array_equal(episode.rewards, arrays["rewards"][rows][:-1])
        assert ends[e] == schema.END_TRUNCATED  # max_steps: the env truncated every episode
        assert episode.truncations[-1] and not episode.terminations.any()
        assert not episode.truncations[:-1].any()
    assert [m["seed"] for m in dataset.storage.get_episode_metadata(range(4))] == seeds.tolist()
    env = dataset.recover_environment()  # env_spec with the file's kwargs
    assert env.unwrapped.config.num_balls == 2


def test_terminations_cuts_and_states(tmp_path, tiny_env_id, minari_root):
    data = generate_dataset(
        tiny_env_id, episodes=12, steps=7, out=tmp_path / "t.h5", policy="random", progress=False
    )
    out = export_minari(data, out=tmp_path / "anywhere" / "tiny", progress=False)
    dataset = minari.MinariDataset(out / "data")  # outside the Minari root: open the path
    assert dataset.spec.dataset_id == "lejepa/tiny-v0"
    offsets, arrays, ends, states, _ = _episodes(data)
    assert (ends == schema.END_TERMINATED).any() and (ends == schema.END_CUT).any()
    for e, episode in enumerate(dataset.iterate_episodes()):
        assert bool(episode.terminations[-1]) == bool(ends[e] & schema.END_TERMINATED)
        assert bool(episode.truncations[-1]) == (ends[e] == schema.END_CUT)  # a cut: a time limit
        np.testing.assert_array_equal(episode.infos["state"], states[offsets[e] : offsets[e + 1]])
    # back: the states come back as /states, the cuts as truncations
    back = convert_minari(out, out=tmp_path / "back.h5", progress=False)
    offsets2, arrays2, ends2, states2, _ = _episodes(back)
    np.testing.assert_array_equal(offsets2, offsets)
    np.testing.assert_array_equal(states2, states)
    np.testing.assert_array_equal(arrays2["observations"], arrays["observations"])
    np.testing.assert_array_equal(
        ends2, np.where(ends == schema.END_CUT, schema.END_TRUNCATED, ends)
    )


def _minari_cartpole(dataset_id: str) -> object:
    """A dataset written by minari itself (``create_dataset_from_buffers``; DataCollector would
    need jax): CartPole episodes ending by termination, truncation, both and neither."""
    from minari.data_collector import EpisodeBuffer

    env = gym.make("CartPole-v1")
    buffers = []
    for seed, (steps, flags) in enumerate([(30, None), (12, "trunc"), (9, "both"), (6, "none")]):
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        observations, actions, rewards = [obs], [], []
        terminated = False
        for _ in range(steps):
            action = int(rng.integers(2))
            obs, reward, terminated, _, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward + 1e-9 * seed)  # not representable in float32
            if terminated:
                break
        n = len(actions)
        terminations = np.zeros(n, bool)
        truncations = np.zeros(n, bool)
        terminations[-1] = terminated or flags == "both"
        truncations[-1] = flags in ("trunc", "both")
        buffers.append(
            EpisodeBuffer(
                seed=100 + seed,
                observations=np.stack(observations),
                actions=np.asarray(actions, np.int64),
                rewards=np.asarray(rewards, np.float64),
                terminations=terminations,
                truncations=truncations,
            )
        )
    return minari.create_dataset_from_buffers(
        dataset_id, buffers, env="CartPole-v1", algorithm_name="random"
    )


def test_minari_to_lejepa_to_minari(tmp_path, minari_root):
    original = _minari_cartpole("cartpole/source-v0")
    converted = convert_minari(
        minari_root / "cartpole" / "source-v0", out=tmp_path / "c.h5", progress=False
    )
    with h5py.File(converted) as f:
        assert f["rewards"].dtype == np.float64 and f["actions"].dtype == np.int8
        assert json.loads(f.attrs["action_space"]) == json.loads(
            minari.serialization.serialize_space(gym.spaces.Discrete(2))
        )
    export_minari(converted, out=minari_root / "cartpole" / "back-v0", progress=False)
    back = minari.load_dataset("cartpole/back-v0")
    assert back.total_episodes == original.total_episodes == 4
    assert back.total_steps == original.total_steps
    assert back.action_space == original.action_space
    assert back.observation_space == original.observation_space
    assert back.spec.env_spec.id == "CartPole-v1"
    for a, b in zip(original.iterate_episodes(), back.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(b.observations, a.observations)
        np.testing.assert_array_equal(b.actions, a.actions)
        assert b.actions.dtype == a.actions.dtype
        np.testing.assert_array_equal(b.rewards, a.rewards)  # float64, exactly
        np.testing.assert_array_equal(b.terminations, a.terminations)
        neither = not (a.terminations[-1] or a.truncations[-1])  # only "cut": truncated
        np.testing.assert_array_equal(b.truncations[:-1], a.truncations[:-1])
        assert b.truncations[-1] == (a.truncations[-1] or neither)
    seeds = [m["seed"] for m in back.storage.get_episode_metadata(range(4))]
    assert seeds == [100, 101, 102, 103]


def test_export_refuses_and_explains(tmp_path, write_trajectory_file, minari_root):
    data = tmp_path / "d.h5"
    write_trajectory_file(data)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UserInputError, match="already exists"):
        export_minari(data, out=tmp_path / "full", progress=False)
    with pytest.raises(UserInputError, match="not of Minari's form"):
        export_minari(data, out=tmp_path / "o", dataset_id="no version", progress=False)
    result = CliRunner().invoke(main, ["export", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--minari" in result.output
    result = CliRunner().invoke(main, ["export", "--minari", str(tmp_path / "none"), "--out", "o"])
    assert result.exit_code == 2 and "no such file or run directory" in result.output
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*.tmp"))
    assert default_dataset_id(minari_root / "ns" / "name-v3") == "ns/name-v3"
    assert default_dataset_id(tmp_path / "plain") == "lejepa/plain-v0"
    # an older file (no /episode_ends, str(space), no spaces at all): spaces from the arrays
    out = export_minari(data, out=tmp_path / "old", progress=False)
    dataset = minari.MinariDataset(out / "data")
    actions = h5py.File(data)["actions"][...]
    assert dataset.action_space == gym.spaces.Discrete(
        int(actions.max() - actions.min() + 1), start=int(actions.min())
    )
    assert all(e.truncations[-1] for e in dataset.iterate_episodes())


def test_a_run_directory_exports_its_data(tmp_path, tiny_data, minari_root):
    from tests.conftest import tiny_recipe

    run = tmp_path / "run"
    run.mkdir()
    (run / "resolved_recipe.toml").write_text(tiny_recipe(tmp_path, tiny_data).to_toml())
    out = export_minari(run, out=minari_root / "lejepa" / "run-v0", progress=False)
    assert minari.load_dataset("lejepa/run-v0").total_episodes == 12 and out.is_dir()
