"""``train.loss_weighting`` in training: the weights logged, saved and resumed bit-exact, and
no host sync on a step outside the log steps."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import json

import pytest
import torch

from lejepa_core.testing import HostSyncCounter
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training.loop import train
from tests.conftest import tiny_data, tiny_recipe  # noqa: F401
from tests.test_host_syncs import _built_run, _steps


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["uncertainty", "gradnorm:0.5"])
def test_adaptive_weights_are_logged_saved_and_resumed_bit_exact(tmp_path, tiny_data, mode):
    overrides = (f"train.loss_weighting={mode}", "train.epochs=2", "train.steps_per_epoch=4")
    recipe = tiny_recipe(tmp_path, tiny_data, overrides)
    full = train(recipe, out=tmp_path / "full")
    part = train(recipe, out=tmp_path / "part", stop_at_step=6)  # interrupted mid-epoch
    assert part.status == "stopped"
    resumed = train(recipe, resume=tmp_path / "part")
    assert resumed.step == full.step == 8
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    own = [k for k in a["model"] if k.startswith("loss_weighting.")]
    assert own  # the log-variances / multipliers travel with the model
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    name, start = ("log_variance", 0.0) if mode == "uncertainty" else ("multipliers", 1.0)
    assert (a["model"][f"loss_weighting.{name}"] != start).all()  # the weights moved
    records = [
        json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    train_records = [r for r in records if r["split"] == "train"]
    assert all({"loss_weight/l1", "loss_weight/sigreg"} <= r.keys() for r in train_records)
    first = train_records[0]
    assert first["loss_weight/sigreg"] == pytest.approx(0.01, rel=0.05)  # starts at the recipe's


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["uncertainty", "gradnorm"])
def test_no_host_sync_outside_log_steps(tmp_path, mode):
    run, sampler = _built_run("arc_cells", tmp_path, f"train.loss_weighting={mode}")
    _steps(run, sampler, 2)
    with HostSyncCounter() as syncs:
        _steps(run, sampler, 3)
    assert syncs.count == 0, syncs.calls
