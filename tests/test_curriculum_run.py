"""The curriculum in training: competence in the train records, bit-exact resume, the CLI error."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lejepa_core.cli import main as cli
from lejepa_core.data.curriculum import COMPETENCE, competence
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training.loop import train
from tests.conftest import tiny_recipe, write_tiny_recipe

pytestmark = pytest.mark.slow
CURRICULUM = ("data.curriculum=competence", "data.curriculum_start=0.25", "data.curriculum_steps=6")


@pytest.fixture
def hard_data(tmp_path, tiny_data):
    """``tiny_data`` with a per-episode difficulty (episode e: (e * 7 % 12) / 11)."""
    path = tmp_path / "hard.h5"
    shutil.copy(tiny_data, path)
    with h5py.File(path, "a") as f:
        f.create_dataset("episode_keys/difficulty", data=(np.arange(12) * 7 % 12) / 11.0)
    return path


def test_curriculum_run_logs_competence_and_resumes_bit_exact(tmp_path, hard_data):
    recipe = tiny_recipe(
        tmp_path, hard_data, ("train.epochs=2", "train.steps_per_epoch=4", *CURRICULUM)
    )
    full = train(recipe, out=tmp_path / "full")
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").open()]
    logged = {r["step"]: r[COMPETENCE] for r in records if r["split"] == "train"}
    n = 9  # 12 episodes, val_fraction 0.25
    for step, value in logged.items():  # the mean over the steps step-1, step (log.every = 2)
        counts = [max(1, -(-competence(t, 0.25, 6) * n // 1)) for t in (step - 2, step - 1)]
        assert value == pytest.approx(np.mean(counts) / n, abs=1e-6)
    assert logged[8] == 1.0 and logged[2] < 0.7
    part = train(recipe, out=tmp_path / "part", stop_at_step=3)  # stopped mid-curriculum
    assert part.step == 3
    resumed = train(recipe, resume=tmp_path / "part")
    assert resumed.step == full.step == 8
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_curriculum_on_a_file_without_difficulty_is_exit_2(tmp_path, tiny_data):
    recipe = write_tiny_recipe(tmp_path, tiny_data)
    sets = [arg for setting in CURRICULUM for arg in ("--set", setting)]
    result = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(tmp_path / "r"), *sets])
    assert result.exit_code == 2, result.output
    assert "/episode_keys/difficulty" in result.output and str(tiny_data) in result.output
    assert "Traceback" not in result.output
