"""generate_dataset: determinism across workers, ragged episodes, states, atomicity."""

from __future__ import annotations

import gymnasium as gym
import h5py
import numpy as np
import pytest

from lejepa_core.data import blocks, generate, seeding
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import UserInputError
from lejepa_core.registry import ensure_envs_registered


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f}


@pytest.mark.slow  # a worker pool
def test_vector_env_same_bytes_whatever_the_workers(tmp_path):
    # CartPole has a native vector env (only one int seed: per-block seeding) and ends early
    kwargs = dict(episodes=40, steps=30, seed=3, progress=False, block_episodes=8)
    one = generate.generate_dataset("CartPole-v1", out=tmp_path / "w1.h5", workers=1, **kwargs)
    two = generate.generate_dataset("CartPole-v1", out=tmp_path / "w2.h5", workers=2, **kwargs)
    a, b = _arrays(one), _arrays(two)
    assert (
        a.keys()
        == b.keys()
        == {
            "observations",
            "actions",
            "rewards",
            "episode_offsets",
            "episode_seeds",
            "episode_ends",
        }
    )
    assert set(a["episode_ends"].tolist()) <= {0, 1}  # CartPole terminates, never truncates here
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    lengths = np.diff(a["episode_offsets"])
    assert len(lengths) == 40 and lengths.max() <= 30 and lengths.min() < 30  # ragged
    with h5py.File(one) as f:
        assert f.attrs["seeding"] == "per-block" and f.attrs["vectorized"]
        assert f.attrs["env_id"] == "CartPole-v1"
    # the last action of every episode is padding
    assert (a["actions"][a["episode_offsets"][1:] - 1] == 0).all()
    different = generate.generate_dataset(
        "CartPole-v1", out=tmp_path / "s4.h5", **{**kwargs, "seed": 4}
    )
    assert _arrays(different)["observations"].tobytes() != a["observations"].tobytes()


@pytest.mark.slow  # a worker pool
def test_single_env_with_states_matches_direct_rollout(tmp_path, tiny_env_id):
    env_id = tiny_env_id
    out = generate.generate_dataset(
        env_id,
        episodes=6,
        steps=12,
        out=tmp_path / "t.h5",
        seed=1,
        workers=2,
        block_episodes=2,
        env_kwargs={"width": 7},
        progress=False,
    )
    with TrajectoryData.open(out, on_device="always") as data:
        assert data.obs_dtype == "uint8" and data.obs_shape == (4, 7)
        assert data.state_shape == (2,) and data.state_feature_names == ("x", "v")
        assert data.env_kwargs == {"width": 7}
        assert isinstance(data.stats["mean"], float)  # images: scalar statistics
        assert data.attrs["seeding"] == "per-episode"
        offsets = data.episode_offsets.tolist()
        with h5py.File(out) as f:
            seeds, actions = f["episode_seeds"][...], f["actions"][...]
        assert seeds.tolist() == seeding.episode_seeds(1, 0, 6).tolist()
        # replay episode 4 by hand from its seed and recorded actions
        env = gym.make(env_id, width=7)
        obs, info = env.reset(seed=int(seeds[4]))
        rows = range(offsets[4], offsets[5])
        for i, row in enumerate(rows):
            assert (data.observations[row].numpy() == obs).all()
            assert (data.states[row].numpy() == info["state"]).all()
            if i < len(rows) - 1:
                obs, _, terminated, _, info = env.step(actions[row])
        assert terminated or len(rows) == 12


def test_noop_policy_uses_env_metadata(tmp_path, tiny_env_id):
    env_id = tiny_env_id
    out = generate.generate_dataset(
        env_id, episodes=2, steps=5, out=tmp_path / "n.h5", policy="noop", progress=False
    )
    actions, offsets = _arrays(out)["actions"], _arrays(out)["episode_offsets"]
    last = set((offsets[1:] - 1).tolist())
    assert all(a == 1 for i, a in enumerate(actions) if i not in last)
    with pytest.raises(UserInputError, match="no no-op action"):
        generate.generate_dataset(
            "CartPole-v1", episodes=1, steps=3, out=tmp_path / "x.h5", policy="noop", progress=False
        )


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_failure_mid_generation_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, workers):
    out = tmp_path / "d.h5"
    generate.generate_dataset("CartPole-v1", episodes=4, steps=5, out=out, progress=False)
    before = out.read_bytes()
    real = blocks._run_vector

    def failing(job, *args):
        if (
            job.block == 2
        ):  # the third block, in whichever process runs it (fork inherits the patch)
            raise RuntimeError("env exploded")
        return real(job, *args)

    monkeypatch.setattr(blocks, "_run_vector", failing)
    with pytest.raises(RuntimeError, match="env exploded"):
        generate.generate_dataset(
            "CartPole-v1",
            episodes=8,
            steps=5,
            out=out,
            block_episodes=2,
            workers=workers,
            progress=False,
        )
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_bad_arguments(tmp_path):
    with pytest.raises(UserInputError, match="unknown environment"):
        generate.generate_dataset(
            "NoSuchEnv-v9", episodes=1, steps=2, out=tmp_path / "a.h5", progress=False
        )
    with pytest.raises(UserInputError, match="episodes and steps"):
        generate.generate_dataset(
            "CartPole-v1", episodes=0, steps=2, out=tmp_path / "a.h5", progress=False
        )
    (tmp_path / "file").write_text("")
    with pytest.raises(UserInputError, match="cannot create directory"):
        generate.generate_dataset(
            "CartPole-v1", episodes=1, steps=2, out=tmp_path / "file" / "a.h5", progress=False
        )
    with pytest.raises(UserInputError, match="bad env kwargs"):
        generate.generate_dataset(
            "CartPole-v1",
            episodes=1,
            steps=2,
            out=tmp_path / "a.h5",
            env_kwargs={"zz": 1},
            progress=False,
        )


def test_sample_actions_respects_spaces():
    rng = np.random.default_rng(0)
    box = gym.spaces.Box(-1, np.array([1, np.inf], np.float32), (2,), np.float32)
    a = blocks.sample_actions(box, rng, (5, 3))
    assert (
        a.shape == (5, 3, 2)
        and a.dtype == np.float32
        and (a[..., 0] >= -1).all()
        and (a[..., 0] <= 1).all()
    )
    assert (a[..., 1] >= -1).all()
    d = blocks.sample_actions(gym.spaces.Discrete(3, start=2), rng, (100,))
    assert set(d.tolist()) == {2, 3, 4}
    md = blocks.sample_actions(gym.spaces.MultiDiscrete([2, 5]), rng, (50,))
    assert md.shape == (50, 2) and md[:, 1].max() <= 4


def test_bouncing_balls_noop_and_random_policies(tmp_path):
    ensure_envs_registered()
    assert "lejepa/BouncingBalls-v0" in gym.registry, "lejepa_envs did not register BouncingBalls"
    out = generate.generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=6,
        steps=10,
        out=tmp_path / "bb.h5",
        block_episodes=4,
        progress=False,
    )
    with TrajectoryData.open(out) as data:
        assert data.feature_names == ("x", "y", "vx", "vy")
        assert data.obs_shape[-1] == 4 and len(data.stats["mean"]) == 4
        assert data.num_steps == 60 and data.attrs["vectorized"]
        # the default policy is the env's published no-op: passive, predictable physics
        assert data.attrs["policy"] == "noop"
    assert not _arrays(out)["actions"].any()
    random = generate.generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=6,
        steps=10,
        out=tmp_path / "r.h5",
        policy="random",
        progress=False,
    )
    assert _arrays(random)["actions"].any()


def test_bouncing_balls_pixels_writes_states(tmp_path):
    ensure_envs_registered()
    assert "lejepa/BouncingBalls-v0" in gym.registry, "lejepa_envs did not register BouncingBalls"
    out = generate.generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=3,
        steps=4,
        out=tmp_path / "px.h5",
        env_kwargs={"obs_mode": "pixels"},
        progress=False,
    )
    with TrajectoryData.open(out) as data:
        assert data.state_shape is not None and data.state_shape[-1] == 4
        assert len(data.obs_shape) >= 2 and data.states.shape[0] == 12
        assert data.state_feature_names == ("x", "y", "vx", "vy")
        assert isinstance(data.stats["mean"], float)
    with h5py.File(out) as f:  # "auto": images compressed, state vectors raw
        assert f["observations"].compression == "lzf" and f["states"].compression is None


@pytest.mark.slow  # a worker pool
def test_bouncing_balls_same_bytes_whatever_the_workers(tmp_path):
    ensure_envs_registered()
    assert "lejepa/BouncingBalls-v0" in gym.registry, "lejepa_envs did not register BouncingBalls"
    kwargs = dict(episodes=6, steps=5, seed=9, block_episodes=2, progress=False)
    a = _arrays(
        generate.generate_dataset(
            "lejepa/BouncingBalls-v0", out=tmp_path / "a.h5", workers=1, **kwargs
        )
    )
    b = _arrays(
        generate.generate_dataset(
            "lejepa/BouncingBalls-v0", out=tmp_path / "b.h5", workers=2, **kwargs
        )
    )
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert a["episode_seeds"].tolist() == seeding.episode_seeds(9, 0, 6).tolist()  # per-episode


@pytest.mark.slow  # a worker pool
def test_same_seed_same_bytes_single_env_random_actions(tmp_path, tiny_env_id):
    # the single-env path with random actions: every seed stream matters here
    kwargs = dict(episodes=9, steps=15, seed=5, policy="random", block_episodes=4, progress=False)
    paths = [
        generate.generate_dataset(tiny_env_id, out=tmp_path / "a.h5", workers=1, **kwargs),
        generate.generate_dataset(tiny_env_id, out=tmp_path / "b.h5", workers=1, **kwargs),
        generate.generate_dataset(tiny_env_id, out=tmp_path / "c.h5", workers=2, **kwargs),
    ]
    a, b, c = (_arrays(p) for p in paths)
    assert a.keys() == b.keys() == c.keys() and "states" in a
    for name in a:
        assert a[name].tobytes() == b[name].tobytes() == c[name].tobytes(), name
    assert len(set(a["actions"].tolist())) == 3  # random, not the no-op
    other = _arrays(
        generate.generate_dataset(tiny_env_id, out=tmp_path / "d.h5", **{**kwargs, "seed": 6})
    )
    assert other["actions"].tobytes() != a["actions"].tobytes()
    assert other["episode_seeds"].tobytes() != a["episode_seeds"].tobytes()


def test_episode_seeds_are_pinned():
    # The reset seeds of the shipped recipes' data (BouncingBalls, ArcGrid): changing them
    # changes every generated file and the multi_k_physics figures.
    assert seeding.episode_seeds(0, 0, 3).tolist() == [
        6017775124710473527,
        1534736266818221247,
        4702803707325424070,
    ]
    assert seeding.episode_seeds(7, 5, 7).tolist() == [7733373307099033815, 4085016263570201016]


def test_seed_streams_are_distinct_and_63_bit():
    episodes = seeding.episode_seeds(0, 0, 1000)
    blocks = seeding.stream_seeds(0, seeding.BLOCK_RESETS, 0, 1000)
    actions = seeding.stream_seeds(0, seeding.BLOCK_ACTIONS, 0, 1000)
    together = np.concatenate([episodes, blocks, actions])
    assert len(np.unique(together)) == 3000 and together.min() >= 0
    assert seeding.block_seed(0, 7) == blocks[7]
    assert (
        seeding.action_rng(0, 7).integers(0, 2**62, 4).tolist()
        == np.random.default_rng(int(actions[7])).integers(0, 2**62, 4).tolist()
    )
    with pytest.raises(ValueError, match="2\\*\\*48"):
        seeding.episode_seeds(0, 0, 2**48 + 1)
