"""The non-finite guard on the device (``lejepa_core/training/guard.py``): a step with a NaN
loss outside the log steps makes no host sync, leaves the weights, the AdamW state and the EMA
target bitwise unchanged, stays out of the log window's means, and is counted when the host
reads the counters at the next log step."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import pytest
import torch

from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import TrainingError
from lejepa_core.testing import HostSyncCounter
from lejepa_core.training import distributed
from lejepa_core.training.diagnostics import LogWindow
from lejepa_core.training.guard import StepCounters
from lejepa_core.training.loop import train_step
from lejepa_core.training.run import build_run, build_samplers
from lejepa_core.training.runtime import StopFlag
from lejepa_core.training.target import ema_update
from tests.conftest import tiny_recipe

CPU = torch.device("cpu")


def _run(tmp_path, tiny_data, *overrides):
    recipe = tiny_recipe(tmp_path, tiny_data, ("log.every=4", "train.grad_clip=1.0", *overrides))
    data = TrajectoryData.open(tiny_data, device="cpu", normalize=recipe.data.normalize)
    sampler, _ = build_samplers(recipe, data, CPU)
    run = build_run(recipe, data, CPU, distributed.DistInfo())
    run.model.train()
    return run, sampler


def _step(run, batch, loss_scale: float = 1.0):
    """One ``train_step``; loss_scale NaN poisons the loss (a weight of the first loss)."""
    run.model.weights[0] = loss_scale
    params = [p for p in run.model.parameters() if p.requires_grad]
    return train_step(run, run.model, batch, params, torch.Generator(), StopFlag())


def _state(run):
    """Weights, EMA target and AdamW state (moments and step counters), cloned."""
    optim = {
        (i, key): value.clone()
        for i, state in enumerate(run.optimizer.state.values())
        for key, value in state.items()
    }
    model = {k: v.clone() for k, v in run.model.state_dict().items()}
    target = {k: v.clone() for k, v in run.target_encoder.state_dict().items()}
    return model, target, optim


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and torch.equal(a[k].view(-1).view(torch.uint8), b[k].view(-1).view(torch.uint8))
        for k in a
    )


def test_a_nan_step_off_the_log_steps_changes_nothing_and_is_counted_at_the_log_step(
    tmp_path, tiny_data
):
    run, sampler = _run(tmp_path, tiny_data)
    batches = [sampler.sample(16, run.generators["sampler"]) for _ in range(4)]
    window = LogWindow()
    first = _step(run, batches[0])  # a good step: AdamW has moments now
    window.add(first.metrics, first.applied)
    before = _state(run)
    with HostSyncCounter() as syncs:
        poisoned = _step(run, batches[1], float("nan"))
    assert syncs.calls == []  # decided on the device
    window.add(poisoned.metrics, poisoned.applied)
    after = _state(run)
    for group, (a, b) in zip(
        ("model", "target", "adamw"), zip(before, after, strict=True), strict=True
    ):
        assert _bitwise_equal(a, b), group
    assert not bool(poisoned.applied) and bool(first.applied)
    assert run.state.nonfinite_total == 0 and run.state.step == 2  # not read yet
    third = _step(run, batches[2])
    window.add(third.metrics, third.applied)
    assert not _bitwise_equal(after[0], _state(run)[0])  # a good step moves the weights again
    fourth = _step(run, batches[3])  # step 3: a log step (log.every = 4) reads the counters
    window.add(fourth.metrics, fourth.applied)
    assert run.state.nonfinite_total == 1 and run.state.nonfinite_consecutive == 0
    good = [first, third, fourth]
    assert run.state.clipped_total == sum(int(r.metrics["clip_fraction"]) for r in good)
    record = window.means.pop()  # the skipped step stays out of the means (and the maximum)
    losses = [float(r.metrics["loss/total"].detach()) for r in good]
    assert record["loss/total"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert record["grad_norm_max"] == pytest.approx(
        max(float(r.metrics["grad_norm"]) for r in good)
    )


def test_consecutive_nan_steps_raise_at_the_read_naming_the_step(tmp_path, tiny_data):
    run, sampler = _run(tmp_path, tiny_data, "train.max_nonfinite_steps=2")
    batch = sampler.sample(16, run.generators["sampler"])
    _step(run, batch, float("nan"))
    _step(run, batch, float("nan"))  # step 1 reaches the limit; nothing is read yet
    _step(run, batch)  # recovered, but the run of 2 happened
    with pytest.raises(TrainingError, match=r"2 consecutive non-finite .* at step 1 \(loss nan"):
        _step(run, batch)  # step 3: the log step reads the counters


def test_the_counters_travel_through_the_checkpoint(tmp_path, tiny_data):
    """``checkpoint_state`` folds the device counters into ``train_state``; a loaded run
    continues the run of consecutive skipped steps."""
    run, sampler = _run(tmp_path, tiny_data, "train.max_nonfinite_steps=3")
    batch = sampler.sample(16, run.generators["sampler"])
    _step(run, batch, float("nan"))
    _step(run, batch, float("nan"))
    saved = run.checkpoint_state()
    assert saved["train_state"]["nonfinite_total"] == 2
    assert saved["train_state"]["nonfinite_consecutive"] == 2
    fresh, _ = _run(tmp_path, tiny_data, "train.max_nonfinite_steps=3")
    fresh.load(saved, path=tmp_path / "x.pt")
    _step(fresh, batch, float("nan"))  # the third in a row: step 2
    with pytest.raises(TrainingError, match="3 consecutive non-finite .* at step 2"):
        _step(fresh, batch)


def test_counters_without_a_read_make_no_host_sync():
    counters = StepCounters.zeros(CPU)
    with HostSyncCounter() as syncs:
        for bad in (True, False, True, True):
            counters.update(
                torch.tensor(bad),
                torch.tensor(not bad),
                step=0,
                limit=5,
                loss=torch.tensor(1.0),
                grad_norm=torch.tensor(2.0),
            )
    assert syncs.calls == []
    read = counters.read()
    assert (read["skipped"], read["clipped"], read["streak"], read["longest"]) == (3, 1, 2, 2)
    assert read["limit_step"] == -1 and counters.read()["skipped"] == 0


def test_a_masked_ema_update_keeps_the_target():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    kept = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.9, apply=torch.tensor(False))
    assert all(torch.equal(kept[k], v) for k, v in target.state_dict().items())
    ema_update(target, online, 0.9, apply=torch.tensor(True))
    expected = kept["weight"] + 0.1 * (online.weight.detach() - kept["weight"])
    torch.testing.assert_close(target.weight.detach(), expected)
