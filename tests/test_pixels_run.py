"""End to end on frames and on embeddings: train, eval (two-frame probe), report pictures,
the frozen target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lejepa_core.cli import main
from lejepa_core.data.generate import generate_dataset

pytestmark = pytest.mark.slow

PIXEL_RECIPE = """
[model]
latent_dim = {latent_dim}
[encoder]
{encoder}
[predictor]
name = "residual"
hidden_dim = 16
depth = 1
time_dim = 4
[masker]
{masker}
[[losses]]
name = "l1"
[target]
mode = "{target}"
[data]
path = "{data}"
env_id = "lejepa/BouncingBalls-v0"
env_kwargs = {{ num_balls = 2, obs_mode = "ball_channels", image_size = 12 }}
episodes = 10
steps = 30
context_frames = 2
horizons = [1, 2]
val_fraction = 0.3
[train]
seed = 0
epochs = 1
steps_per_epoch = 4
batch_size = 16
lr = 3e-3
warmup_steps = 1
val_windows = 32
threads = 1
mask_frames = "shared"
[log]
every = 2
progress = false
tensorboard = false
"""
CONV = 'name = "conv"\nchannels = 8\nkeypoints = 4'
BLOCK = 'name = "block"\nnum_blocks = 1\nblock_scale = [0.1, 0.2]'


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _train(tmp: Path, name: str, **fields) -> Path:
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.loop import train

    path = tmp / f"{name}.toml"
    path.write_text(PIXEL_RECIPE.format(**fields))
    return train(load_recipe(path), out=tmp / name).run_dir


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pixels") / "frames.h5"
    generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=10,
        steps=30,
        out=out,
        seed=0,
        env_kwargs={"num_balls": 2, "obs_mode": "ball_channels", "image_size": 12},
        progress=False,
    )
    return out


def test_pixel_run_evaluates_two_frame_probe_and_draws_frames(frames, tmp_path):
    run = _train(
        tmp_path, "pixels", latent_dim=8, encoder=CONV, masker=BLOCK, target="ema", data=frames
    )
    _cli("eval", str(run), "--device", "cpu", "--batches", "2")
    result = json.loads((run / "eval.json").read_text())
    assert result["probe"]["input"].startswith("target encoder on one frame")
    two = result["two_frame_probe"]
    assert two["input"].startswith("target encoder on the last two context frames")
    assert set(two["r2"]) == {"overall", "positions", "velocities"} and two["eval_samples"] > 0
    assert set(result["r2"]) == {"overall", "positions", "velocities"}
    _cli("report", str(run), "--episodes", "2")
    written = {p.stem for p in (run / "report").glob("*.png")}
    assert {"frames", "latent_positions", "rollouts", "latents"} <= written
    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert "Frames and decoded predictions" in page and "Latent space by position" in page


def test_embedding_run_with_identity_encoder_and_frozen_target(frames, tmp_path):
    from examples.embed_frames import main as embed

    embedded = tmp_path / "emb.h5"
    embed([str(frames), str(embedded), "--dim", "6"])
    run = _train(
        tmp_path,
        "emb",
        latent_dim=6,
        encoder='name = "identity"',
        masker='name = "none"',
        target="frozen",
        data=embedded,
    )
    _cli("eval", str(run), "--device", "cpu", "--batches", "2")
    result = json.loads((run / "eval.json").read_text())
    assert (
        result["latent"]["model/err_signal/k1"] > 0
        and "copy_last/err_signal/k1" in result["latent"]
    )
    assert "velocities" in result["two_frame_probe"]["r2"]


def test_frozen_target_keeps_the_initial_encoder(frames, tmp_path):
    """target.mode = "frozen" with a trainable encoder: the target encoder of the checkpoint is
    the context encoder as built at step 0, while the context encoder moved."""
    from lejepa_core.build import build_model
    from lejepa_core.eval.load import load_run

    run = _train(
        tmp_path, "frozen", latent_dim=8, encoder=CONV, masker=BLOCK, target="frozen", data=frames
    )
    loaded = load_run(run, device="cpu")
    torch.manual_seed(loaded.recipe.train.seed)
    initial = build_model(loaded.recipe, loaded.spec).context_encoder.state_dict()
    target = loaded.target_encoder.state_dict()
    trained = loaded.model.context_encoder.state_dict()
    assert all(torch.equal(target[name], value) for name, value in initial.items())
    assert any(not torch.equal(trained[name], value) for name, value in initial.items())
    loaded.data.close()
