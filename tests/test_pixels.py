"""Pixels: per-ball channel observations, the two-frame probe, embedding datasets."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

import lejepa_envs  # noqa: F401  (registers the envs)
from lejepa_core.data.embed import EmbeddingError, embed_file
from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.eval.two_frames import two_frame_latents
from lejepa_envs.ball_render import disc_coverage, render_ball_channels, render_gray

BOX = (1.0, 0.8)


def test_ball_channels_equal_the_coverage_of_each_ball_alone():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0.0, 1.0, (300, 3, 2)) * np.array(BOX)  # some discs cross the border
    radius = np.array([0.06, 0.08, 0.1])
    channels = render_ball_channels(pos, radius, BOX, (20, 24))
    assert channels.shape == (300, 3, 20, 24) and channels.dtype == np.float32
    np.testing.assert_allclose(channels, disc_coverage(pos, radius, BOX, (20, 24)), atol=1e-6)
    # the grayscale frame is their maximum
    np.testing.assert_allclose(channels.max(1), render_gray(pos, radius, BOX, (20, 24)), atol=1e-6)


def test_ball_channels_env_single_and_vector_agree():
    kwargs = dict(num_balls=2, obs_mode="ball_channels", image_size=(16, 12), max_steps=5)
    single = gym.make("lejepa/BouncingBalls-v0", **kwargs)
    vector = gym.make_vec(
        "lejepa/BouncingBalls-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs
    )
    obs, info = single.reset(seed=3)
    vobs, vinfo = vector.reset(seed=3)
    assert obs.shape == (2, 16, 12) and single.observation_space.contains(obs)
    np.testing.assert_array_equal(vobs[0], obs)
    np.testing.assert_array_equal(vinfo["state"][0], info["state"])
    for _ in range(3):
        obs, *_, info = single.step(0)
        vobs, *_, vinfo = vector.step(np.zeros(2, dtype=np.int64))
    np.testing.assert_array_equal(vobs[0], obs)
    # channel b draws ball b: its brightest pixel is next to that ball's position
    state = info["state"]
    for ball in range(2):
        row, col = np.unravel_index(obs[ball].argmax(), obs[ball].shape)
        x, y = (col + 0.5) / 12, 1.0 - (row + 0.5) / 16
        assert abs(x - state[ball, 0]) < 0.1 and abs(y - state[ball, 1]) < 0.1
    meta = single.unwrapped.metadata
    assert meta["observation_axes"] == ("ball", "row (top to bottom)", "column")
    assert meta["feature_names"] == () and meta["state_feature_groups"]["velocities"] == (
        "vx",
        "vy",
    )


def test_two_frame_latents_pair_the_last_two_context_frames():
    class Batch:
        context_obs = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [B, W, 2]
        context_state = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)

    z, state = two_frame_latents(lambda x: 10 * x, [Batch(), Batch()])
    ctx = Batch.context_obs
    assert torch.equal(z[:2], torch.cat([10 * ctx[:, 1], 10 * ctx[:, 2]], dim=-1))
    assert torch.equal(state[:2], Batch.context_state[:, 2]) and z.shape == (4, 4)


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("frames") / "frames.h5"
    generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=5,
        steps=12,
        out=out,
        seed=0,
        env_kwargs={"num_balls": 2, "obs_mode": "ball_channels", "image_size": 8},
        progress=False,
    )
    return out


def test_embed_file_replaces_observations_and_keeps_the_rest(frames_file, tmp_path):
    weights = np.random.default_rng(0).normal(size=(2 * 8 * 8, 5)).astype(np.float32)
    calls = []

    def encode(frames):
        calls.append(len(frames))
        return frames.reshape(len(frames), -1) @ weights

    out = embed_file(frames_file, tmp_path / "emb.h5", encode, batch=30, description="test")
    with h5py.File(frames_file, "r") as src, h5py.File(out, "r") as emb:
        frames = src["observations"][...]
        np.testing.assert_allclose(emb["observations"][...], encode(frames), rtol=1e-5)
        for name in ("actions", "states", "episode_offsets", "episode_seeds"):
            np.testing.assert_array_equal(emb[name][...], src[name][...])
        metadata = json.loads(emb.attrs["env_metadata"])
        assert metadata["dt"] == 0.1 and metadata["box"] == [1.0, 1.0]
        assert metadata["observation_axes"] == ["embedding"] and emb.attrs["embedding"] == "test"
    assert max(calls[1:-1]) <= 30  # whole episodes, about `batch` rows a time
    data = TrajectoryData.open(out)
    assert data.obs_shape == (5,) and data.state_shape == (2, 4)
    data.close()


def test_embed_file_names_a_wrong_encoder_output(frames_file, tmp_path):
    with pytest.raises(EmbeddingError, match=r"encode must map \[R, \*obs\] to float \[R, D\]"):
        embed_file(frames_file, tmp_path / "bad.h5", lambda f: f.reshape(len(f), -1).astype(int))
    with pytest.raises(EmbeddingError, match=r"encode returned \[1, 3\] for 60 rows"):
        embed_file(frames_file, tmp_path / "bad.h5", lambda f: np.zeros((1, 3), np.float32))
    assert not (tmp_path / "bad.h5").exists()
