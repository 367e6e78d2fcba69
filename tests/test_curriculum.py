"""The difficulty curriculum: competence, the restricted sampler, stored difficulty, errors."""

from __future__ import annotations

import hashlib
import math

import h5py
import numpy as np
import pytest
import torch

from lejepa_core.data import curriculum
from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.data.writer import TrajectoryWriter
from lejepa_core.errors import DatasetError, UserInputError
from lejepa_core.recipe import DataConfig
from lejepa_envs.arc_grid import ArcGridEnv


def _write(path, difficulty=None, lengths=(8,) * 10):
    total = int(sum(lengths))
    keys = None if difficulty is None else {"difficulty": list(difficulty)}
    with TrajectoryWriter(
        path, obs_shape=(1,), obs_dtype="float32", action_shape=(), action_dtype="int64"
    ) as writer:
        writer.append(
            np.arange(total, dtype=np.float32)[:, None],
            np.zeros(total, np.int64),
            lengths=list(lengths),
            seeds=np.arange(len(lengths)),
            episode_keys=keys,
        )
    return path


@pytest.mark.parametrize("start", [0.0, 0.1, 0.25, 0.9, 1.0])
def test_competence_is_the_closed_form(start):
    steps = 300
    for t in (0, 1, 17, 150, 299, 300, 301, 10_000):
        expected = min(1.0, math.sqrt(t * (1 - start**2) / steps + start**2))
        assert curriculum.competence(t, start, steps) == pytest.approx(expected, abs=1e-12)
    assert curriculum.competence(0, start, steps) == pytest.approx(start)
    assert curriculum.competence(steps, start, steps) == 1.0
    assert curriculum.competence(5, start, 0) == 1.0  # T = 0: everything from the start
    # c(t)^2 grows linearly in t (Platanios et al.'s square-root schedule)
    squares = [curriculum.competence(t, start, steps) ** 2 for t in (0, 100, 200)]
    assert squares[1] - squares[0] == pytest.approx(squares[2] - squares[1])
    assert curriculum.available(200, 0.25) == 50
    assert curriculum.available(200, 0.2501) == 51 and curriculum.available(200, 0.0) == 1


def test_easiest_first_sorts_by_difficulty_then_index():
    difficulty = np.array([0.5, 0.1, 0.5, 0.0, 0.9, 0.1])
    order = curriculum.easiest_first(torch.tensor([5, 0, 2, 1, 4]), difficulty)
    assert order.tolist() == [1, 5, 0, 2, 4]


def test_sampler_never_draws_a_harder_episode_than_allowed(tmp_path):
    rng = np.random.default_rng(0)
    difficulty = rng.random(10)
    path = _write(tmp_path / "d.h5", difficulty)
    config = DataConfig(curriculum="competence", curriculum_start=0.25, curriculum_steps=40)
    step = {"t": 0}
    with TrajectoryData.open(path) as data:
        train = torch.tensor([0, 1, 2, 3, 4, 6, 7, 8])  # 5 and 9 are validation episodes
        full = WindowSampler(data, train, context_frames=2, horizons=(1, 2))
        sampler = curriculum.wrap(full, config, lambda: step["t"])
        order = sorted(train.tolist(), key=lambda e: (difficulty[e], e))
        generator = torch.Generator().manual_seed(0)
        seen_at_end = set()
        for t in range(0, 45):
            step["t"] = t
            batch = sampler.sample(64, generator)
            count = math.ceil(curriculum.competence(t, 0.25, 40) * len(order) - 1e-9)
            allowed = set(order[: max(1, count)])
            assert set(batch.episode.tolist()) <= allowed
            assert sampler.fraction == max(1, count) / len(order)
            metrics = curriculum.with_competence({"loss": 1.0}, sampler)
            assert metrics[curriculum.COMPETENCE] == sampler.fraction
            if t >= 40:
                seen_at_end |= set(batch.episode.tolist())
        assert seen_at_end == set(train.tolist())  # all by step T, validation never
        assert sampler.sample(8, generator).episode.tolist()  # full sampler at c = 1
        # the same seed and steps give the same windows (resume continues the same way)
        step["t"] = 7
        a = sampler.sample(16, torch.Generator().manual_seed(3))
        again = curriculum.wrap(full, config, lambda: 7)
        b = again.sample(16, torch.Generator().manual_seed(3))
        assert torch.equal(a.episode, b.episode) and torch.equal(a.t, b.t)
        assert curriculum.wrap(full, DataConfig(), lambda: 0) is full  # "none"
        sampler.close()


def test_file_without_difficulty_is_one_line_user_error(tmp_path):
    path = _write(tmp_path / "plain.h5")
    config = DataConfig(curriculum="competence")
    with TrajectoryData.open(path) as data:
        full = WindowSampler(data, torch.arange(10), context_frames=2, horizons=(1,))
        with pytest.raises(DatasetError) as error:
            curriculum.wrap(full, config, lambda: 0)
    message = str(error.value)
    assert isinstance(error.value, UserInputError) and "\n" not in message
    assert str(path) in message and "/episode_keys/difficulty" in message
    bad = _write(tmp_path / "bad.h5", [2.0] * 10)
    with TrajectoryData.open(bad) as data:
        full = WindowSampler(data, torch.arange(10), context_frames=2, horizons=(1,))
        with pytest.raises(DatasetError, match=r"numbers in \[0, 1\]"):
            curriculum.wrap(full, config, lambda: 0)


def test_generated_difficulty_round_trips_through_the_file(tmp_path):
    out = tmp_path / "mixed.h5"
    generate_dataset(
        "lejepa/ArcGrid-v0",
        episodes=6,
        steps=3,
        out=out,
        seed=0,
        env_kwargs={"source": "procedural", "difficulty": "mixed", "max_speed": 2},
        progress=False,
    )
    with TrajectoryData.open(out) as data:
        stored = data.episode_keys["difficulty"]
    assert stored.dtype == np.float64 and ((stored >= 0) & (stored <= 1)).all()
    assert len(set(stored.tolist())) > 1
    with h5py.File(out, "r") as f:
        seeds = f["episode_seeds"][...]  # the env reset with each seed reports the same value
    env = ArcGridEnv(difficulty="mixed", max_speed=2)
    expected = [env.reset(seed=int(s))[1]["difficulty"] for s in seeds]
    np.testing.assert_allclose(stored, expected)


# The grids of the default procedural env before the difficulty option existed (sha256 of
# 4 seeds x 13 frames, default knobs and gravity + recolour + speed 2).
DEFAULT_DIGEST = "12700afdf3d90a1d309d806eab82c5c009a6a45e5402f1cb871ed5cbb06c4437"


def test_default_env_output_is_unchanged():
    digest = hashlib.sha256()
    for kwargs in ({}, {"gravity": True, "recolour": "max", "max_speed": 2}):
        env = ArcGridEnv(**kwargs)
        for seed in range(4):
            obs, info = env.reset(seed=seed)
            assert "difficulty" not in info and "episode_keys" not in env.metadata
            digest.update(obs.tobytes())
            for _ in range(12):
                obs, *_ = env.step(0)
                digest.update(obs.tobytes())
    assert digest.hexdigest() == DEFAULT_DIGEST


def test_mixed_difficulty_draws_knobs_and_scores_them():
    env = ArcGridEnv(difficulty="mixed", num_objects=4, max_shape_size=3, gravity=True)
    scores = []
    for seed in range(40):
        _, info = env.reset(seed=seed)
        knobs = env._knobs
        assert 1 <= len(env.world.shapes) == knobs.num_objects <= 4
        assert all(s.max() < knobs.max_shape_size for s in env.world.shapes)
        expected = np.mean(
            [(knobs.num_objects - 1) / 3, (knobs.max_shape_size - 1) / 2, float(knobs.gravity)]
        )
        assert info["difficulty"] == pytest.approx(expected)
        scores.append(info["difficulty"])
    assert min(scores) < 0.3 and max(scores) > 0.7
    assert env.metadata["episode_keys"] == ("difficulty",)
    with pytest.raises(ValueError, match="difficulty='hard'"):
        ArcGridEnv(difficulty="hard")
    with pytest.raises(ValueError, match="applies only to source='procedural'"):
        ArcGridEnv(source="arc", difficulty="mixed")
