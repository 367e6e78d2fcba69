"""Using what lejepa makes (issue 18 items 1-3): a run stores what inference needs, loads and
predicts without its data file (``lejepa_core.load``), ``lejepa eval`` never generates data,
docs/api.md's script runs, and ``gym.make("lejepa/...")`` works after ``import lejepa_envs``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lejepa_core
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.errors import DatasetError
from lejepa_core.eval.load import load_run
from lejepa_core.training import checkpoint as ckpt
from tests.conftest import tiny_recipe

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """A one-epoch tiny run on its own copy of the data: (run_dir, data_path)."""
    from lejepa_core.training.loop import train

    root = tmp_path_factory.mktemp("api")
    data_path = root / "data" / "balls.h5"
    data_path.parent.mkdir()
    shutil.copy(tiny_data, data_path)
    recipe = tiny_recipe(root, data_path, ("train.epochs=1",))
    train(recipe, out=root / "run")
    return root / "run", data_path


@pytest.fixture
def data_moved_away(trained):
    """The run's data file moved away for the test (restored afterwards)."""
    run_dir, data_path = trained
    away = data_path.with_suffix(".away")
    data_path.rename(away)
    try:
        yield data_path
    finally:
        away.rename(data_path)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_the_run_stores_what_inference_needs(trained):
    run_dir, data_path = trained
    stored = json.loads((run_dir / "model_input.json").read_text())
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert state["model_input"] == stored
    assert stored["env_id"] == "lejepa/BouncingBalls-v0" and stored["env_kwargs"] == {
        "num_balls": 2
    }
    assert stored["obs_shape"] == [2, 4] and stored["obs_dtype"] == "float32"
    assert stored["feature_names"] == ["x", "y", "vx", "vy"]
    assert stored["env"]["feature_groups"] == {"positions": ["x", "y"], "velocities": ["vx", "vy"]}
    assert stored["data"]["path"] == str(data_path.resolve()) and stored["data"]["episodes"] == 12
    with TrajectoryData.open(data_path) as data:
        train_episodes, _ = data.episode_split(0.25, 0)  # the tiny recipe's split
        expected = data.episode_stats(train_episodes)
        file_mean = data.stats["mean"]
    np.testing.assert_allclose(stored["normalization"]["mean"], expected["mean"])
    np.testing.assert_allclose(stored["normalization"]["std"], expected["std"])
    assert not np.allclose(stored["normalization"]["mean"], file_mean)  # not over val episodes


def test_load_predicts_like_training_without_the_data_file(trained):
    run_dir, data_path = trained
    loaded = load_run(run_dir, device="cpu")  # with its data, standardised as in training
    val = loaded.data.episode_split(0.25, 0)[1]
    kwargs = dict(context_frames=2, horizons=(1, 2, 4), device="cpu")
    batch = WindowSampler(loaded.data, val, **kwargs).fixed_batches(8, 1, seed=3)[0]
    with torch.no_grad():
        want_prediction = loaded.model.predict(batch.context_obs, batch.k)
        want_target = loaded.target_encoder(batch.target_obs)
    loaded.data.close()
    with TrajectoryData.open(data_path) as raw:  # the same windows, raw observations
        raw_batch = WindowSampler(raw, val, **kwargs).fixed_batches(8, 1, seed=3)[0]
    away = data_path.with_suffix(".away")
    data_path.rename(away)
    try:
        before = _files(data_path.parent)
        model = lejepa_core.load(run_dir, device="cpu")
        prediction = model.predict(raw_batch.context_obs.numpy(), raw_batch.k)
        target = model.encode(raw_batch.target_obs)
        assert _files(data_path.parent) == before and not data_path.exists()
    finally:
        away.rename(data_path)
    torch.testing.assert_close(prediction, want_prediction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target, want_target, atol=1e-5, rtol=1e-5)
    # predict == predict_latent(encode(context=True)); single windows drop the batch axis
    z_context = model.encode(raw_batch.context_obs.reshape(-1, 2, 4), context=True).reshape(
        8, 2, -1
    )
    torch.testing.assert_close(model.predict_latent(z_context, raw_batch.k), prediction)
    single = model.predict(raw_batch.context_obs[0], int(raw_batch.k[0]))
    torch.testing.assert_close(single, prediction[0], atol=1e-6, rtol=1e-6)
    assert model.encode(raw_batch.target_obs[0]).shape == (8,)
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    assert "WorldModel(" in repr(model) and model.spec.context_frames == 2


def test_shapes_are_checked_with_the_shapes_named(trained):
    model = lejepa_core.load(trained[0], device="cpu")
    with pytest.raises(ValueError, match=re.escape("expected observations of shape [2, 4]")):
        model.encode(np.zeros((5, 3, 4), np.float32))
    with pytest.raises(ValueError, match="W = 3 context frames, the run was trained on W = 2"):
        model.predict(np.zeros((3, 2, 4), np.float32), 1)
    with pytest.raises(ValueError, match=re.escape("k: expected an int or [4] ints")):
        model.predict(np.zeros((4, 2, 2, 4), np.float32), [1, 2])
    with pytest.raises(ValueError, match="latent_dim is 8"):
        model.predict_latent(torch.zeros(2, 5), 1)


def test_eval_without_the_data_file_says_which_and_generates_nothing(trained, data_moved_away):
    from lejepa_core.cli import main

    run_dir = trained[0]
    root = run_dir.parent
    before = _files(root)
    result = CliRunner().invoke(main, ["eval", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {data_moved_away}: no such file")
    assert "nothing is generated" in lines[0]
    assert not data_moved_away.exists() and _files(root) == before
    with pytest.raises(DatasetError, match="no such file"):
        load_run(run_dir, device="cpu")
    assert lejepa_core.load(run_dir, device="cpu").spec.obs_shape == (2, 4)


def test_the_data_file_is_found_where_the_run_read_it(trained, tmp_path, monkeypatch):
    """A relative data.path, evaluated from another directory: the recorded absolute path."""
    run_dir, data_path = trained
    monkeypatch.chdir(tmp_path)  # data.path is absolute in the tiny recipe; make it relative
    recipe_file = run_dir / "resolved_recipe.toml"
    original = recipe_file.read_text()
    recipe_file.write_text(original.replace(data_path.as_posix(), "data/balls.h5"))
    try:
        loaded = load_run(run_dir, device="cpu")
        assert loaded.data.path == data_path.resolve()
        loaded.data.close()
        assert not (tmp_path / "data").exists()
    finally:
        recipe_file.write_text(original)


def test_a_different_data_file_is_refused(trained, tmp_path, write_trajectory_file):
    run_dir, data_path = trained
    from lejepa_core.data.generate import generate_dataset

    other = generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=5,
        steps=30,
        out=tmp_path / "other.h5",
        env_kwargs={"num_balls": 2},
        progress=False,
    )
    recipe_file = run_dir / "resolved_recipe.toml"
    original = recipe_file.read_text()
    recipe_file.write_text(original.replace(data_path.as_posix(), other.as_posix()))
    try:
        with pytest.raises(
            DatasetError, match="holds 5 episodes .* trained on 12.*not the run's data"
        ):
            load_run(run_dir, device="cpu")
    finally:
        recipe_file.write_text(original)


def test_runs_from_before_model_input_load_from_their_data(trained, tmp_path):
    run_dir, data_path = trained
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    (old / "model_input.json").unlink()
    for name in ("best.pt", "last.pt"):
        state = ckpt.load_checkpoint(old / "checkpoints" / name)
        del state["model_input"]
        ckpt.save_atomic(state, old / "checkpoints" / name)
    loaded = load_run(old, device="cpu")
    try:  # standardised with the file's statistics, as such runs were trained
        assert loaded.data.normalization["mean"] == pytest.approx(loaded.data.stats["mean"])
    finally:
        loaded.data.close()
    assert lejepa_core.load(old, device="cpu").model_input.obs_shape == (2, 4)
    away = data_path.with_suffix(".away")
    data_path.rename(away)
    try:
        with pytest.raises(DatasetError, match="no such file"):
            lejepa_core.load(old, device="cpu")
    finally:
        away.rename(data_path)


def test_docs_api_script_runs_on_a_fresh_env(trained, data_moved_away, capsys):
    text = (DOCS / "api.md").read_text()
    script = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert 'gym.make("lejepa/BouncingBalls-v0"' in script and "lejepa_core.load(" in script
    script = re.sub(r'RUN_DIR = ".*"', f"RUN_DIR = {str(trained[0])!r}", script)
    namespace: dict = {}
    exec(compile(script, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["z_hat"].shape == namespace["z_true"].shape == (8,)
    assert namespace["z_hats"].shape == (3, 8)
    assert "cosine(prediction, target):" in capsys.readouterr().out


def test_lazy_public_names():
    from lejepa_core import WorldModel, load

    assert load is lejepa_core.model.load and WorldModel is lejepa_core.model.WorldModel
    assert {"load", "WorldModel"} <= set(dir(lejepa_core))


# ------------------------------------------------------------------ gymnasium registration
def test_registering_again_is_harmless():
    import gymnasium

    import lejepa_envs
    from lejepa_core.registry import ensure_envs_registered

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is overridden
        assert lejepa_envs.register_with_gymnasium() == list(lejepa_envs.ENVS)
        assert set(lejepa_envs.ENVS) <= set(ensure_envs_registered())
    spec = gymnasium.spec("lejepa/BouncingBalls-v0")
    assert (
        spec.vector_entry_point == lejepa_envs.ENVS["lejepa/BouncingBalls-v0"]["vector_entry_point"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "code",
    [
        "import gymnasium as gym, lejepa_envs\n"
        "env = gym.make('lejepa/BouncingBalls-v0', num_balls=2); env.reset(seed=0); env.step(0)\n"
        "gym.make('lejepa/ArcGrid-v0').reset(seed=0)\n"
        "gym.make_vec('lejepa/BouncingBalls-v0', num_envs=2, vectorization_mode='vector_entry_point')\n",
        "import gymnasium as gym\n"  # gymnasium's module:id form imports lejepa_envs itself
        "gym.make('lejepa_envs:lejepa/BouncingBalls-v0').reset(seed=0)\n",
    ],
)
def test_gym_make_in_a_plain_script(code):
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code + "print('ok')"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
