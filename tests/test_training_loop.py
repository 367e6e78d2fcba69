"""The pieces of the training loop: ``train_step`` (a non-finite step never reaches the
weights), ``end_of_epoch`` (best.pt by the monitored figure, early stopping after
``train.patience``), rank 0's figure deciding on every rank, and a 2-process gloo run whose
ranks see different validation figures."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import attrs
import pytest
import torch

from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import TrainingError
from lejepa_core.recipe import load_recipe
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training import distributed, loop
from lejepa_core.training.loop import train, train_step
from lejepa_core.training.optim import warmup_cosine
from lejepa_core.training.run import build_run, build_samplers
from lejepa_core.training.runtime import StopFlag
from tests.conftest import become_rank, finish_rank, free_port, tiny_recipe, write_tiny_recipe

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- train_step
@pytest.fixture
def built(tmp_path, tiny_data):
    """A fresh run of the tiny recipe (EMA target, grad_clip 1) and its training sampler;
    log.every=1: the host reads the step counters after every step (guard.settle)."""
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.grad_clip=1.0", "train.max_nonfinite_steps=2", "log.every=1")
    )
    data = TrajectoryData.open(tiny_data, device="cpu", normalize=recipe.data.normalize)
    sampler, _ = build_samplers(recipe, data, CPU)
    run = build_run(recipe, data, CPU, distributed.DistInfo())
    run.model.train()
    return run, sampler


def _step(run, batch, stop=None):
    params = [p for p in run.model.parameters() if p.requires_grad]
    return train_step(run, run.model, batch, params, torch.Generator(), stop or StopFlag())


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_step_skips_a_nonfinite_step_without_touching_the_weights(built):
    run, sampler = built
    batch = sampler.sample(16, run.generators["sampler"])
    nan_batch = attrs.evolve(batch, context_obs=torch.full_like(batch.context_obs, float("nan")))
    model, target = _snapshot(run.model), _snapshot(run.target_encoder)
    lr = run.recipe.train.lr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # also: no LambdaLR warning for a skipped first step
        result = _step(run, nan_batch)
    assert result.metrics is None and not result.stop_requested
    assert _same(model, _snapshot(run.model)) and _same(target, _snapshot(run.target_encoder))
    # fused AdamW skipped on the device: moments still zero, step counters back at 0
    states = list(run.optimizer.state.values())
    assert states and all(float(st["step"]) == 0 for st in states)
    assert all(not st["exp_avg"].any() and not st["exp_avg_sq"].any() for st in states)
    s = run.state
    assert (s.step, s.nonfinite_total, s.nonfinite_consecutive, s.samples_seen) == (1, 1, 1, 16)
    # the schedule advances over the skipped step
    kw = dict(warmup_steps=2, total_steps=run.total_steps, min_lr_ratio=0.0)
    assert result.lr == pytest.approx(lr * warmup_cosine(0, **kw), abs=1e-15)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(lr * warmup_cosine(1, **kw))

    # a finite step: weights and the EMA target move, the counter of consecutive ones resets
    result = _step(run, batch)
    assert not _same(model, _snapshot(run.model))
    assert not _same(target, _snapshot(run.target_encoder))
    assert (run.state.step, run.state.nonfinite_consecutive, run.state.nonfinite_total) == (2, 0, 1)
    assert {"loss/total", "loss/l1", "loss/sigreg", "grad_norm", "clip_fraction"} <= set(
        result.metrics
    )
    assert float(result.metrics["clip_fraction"]) == float(float(result.metrics["grad_norm"]) > 1.0)
    assert run.state.clipped_total == int(float(result.metrics["clip_fraction"]))

    # train.max_nonfinite_steps = 2 in a row: a TrainingError naming the step
    _step(run, nan_batch)
    with pytest.raises(TrainingError, match="2 consecutive non-finite .* at step 3"):
        _step(run, nan_batch)


def test_train_step_reports_a_stop_request(built):
    run, sampler = built
    stop = StopFlag()
    stop.requested = True
    result = _step(run, sampler.sample(16, run.generators["sampler"]), stop)
    assert result.stop_requested and result.metrics is not None and run.state.step == 1


# ----------------------------------------------------------------------------- end_of_epoch
def _scripted_validation(monkeypatch, figures, *, key="err_signal"):
    """``validate`` returns ``figures[epoch]`` under ``key`` and an ever-improving other figure
    (so monitoring the wrong key would change the outcome)."""
    other = "loss/total" if key == "err_signal" else "err_signal"

    def fake(run, batches):
        epoch = run.state.step // run.recipe.train.steps_per_epoch - 1
        return {key: figures[epoch], other: 10.0 - epoch}

    monkeypatch.setattr(loop, "validate", fake)


def _records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.mark.parametrize("monitor", ["err_signal", "loss"])
def test_end_of_epoch_keeps_best_by_the_monitored_figure_and_stops_after_patience(
    tmp_path, tiny_data, monkeypatch, monitor
):
    figures = [3.0, 2.0, 2.5, 1.9, 1.95, 2.1, 0.1]
    key = "err_signal" if monitor == "err_signal" else "loss/total"
    _scripted_validation(monkeypatch, figures, key=key)
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.epochs=7", "train.patience=2", f"train.monitor={monitor!r}")
    )
    result = train(recipe, out=tmp_path / "run")
    # epochs 0, 1 improve; 2 does not; 3 improves; 4 and 5 do not: patience 2 is reached
    assert result.status == "early_stopped" and result.step == 6 * 5
    val = _records(tmp_path / "run", "val")
    assert [r["best"] for r in val] == [True, True, False, True, False, False]
    assert [r["epochs_without_improvement"] for r in val] == [0, 0, 1, 0, 1, 2]
    assert [r["best_val"] for r in val] == [3.0, 2.0, 2.0, 1.9, 1.9, 1.9]
    best = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert best["train_state"]["step"] == 4 * 5 and last["train_state"]["step"] == 6 * 5
    assert result.summary["best_val"] == 1.9 and result.summary["best_epoch"] == 3
    assert result.summary["monitor"] == monitor
    assert result.summary["final_validation"][key] == 2.1


def test_min_delta_and_no_early_stop_at_the_last_step(tmp_path, tiny_data, monkeypatch):
    _scripted_validation(monkeypatch, [1.0, 0.95, 0.5])
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.epochs=3", "train.patience=1", "train.min_delta=0.1")
    )
    result = train(recipe, out=tmp_path / "run")
    assert result.status == "early_stopped" and result.step == 10  # 0.95 is not 0.1 better

    _scripted_validation(monkeypatch, [1.0, 1.0])
    recipe = tiny_recipe(tmp_path, tiny_data, ("train.epochs=2", "train.patience=1"))
    result = train(recipe, out=tmp_path / "run2")
    assert result.status == "finished" and result.step == 10  # the patience ran out at the end


def test_rank_zero_figure_decides(tmp_path, tiny_data, monkeypatch):
    """This process plays rank 1: its own figures would stop it after epoch 1 (patience 1),
    rank 0's (the broadcast ones) keep improving, so it trains on like rank 0."""
    _scripted_validation(monkeypatch, [1.0, 1.0, 1.0])  # this rank's figures
    rank0 = iter([3.0, 2.0, 1.5])
    sent = []

    def broadcast(obj):
        sent.append(obj)
        return next(rank0)

    monkeypatch.setattr(distributed, "broadcast_object", broadcast)
    recipe = tiny_recipe(tmp_path, tiny_data, ("train.epochs=3", "train.patience=1"))
    result = train(recipe, out=tmp_path / "run")
    assert sent == [1.0, 1.0, 1.0]  # one broadcast per epoch, of the monitored figure
    assert result.status == "finished" and result.step == 15
    assert result.summary["best_val"] == 1.5 and result.summary["best_epoch"] == 2
    assert [r["best"] for r in _records(tmp_path / "run", "val")] == [True, True, True]


# ----------------------------------------------------------------------------- validation
def test_validation_windows_and_figures_do_not_depend_on_the_batch_size(tmp_path, tiny_data):
    """``train.val_windows`` windows, drawn once and only then cut into batches: batch sizes 16
    and 7 (which does not divide 32) validate the same windows and, on the same model, give the
    same err/σ, baselines, ranks and (window-weighted) L1 loss."""
    from lejepa_core.training.validate import validate

    data = TrajectoryData.open(tiny_data, device="cpu", normalize=True)
    windows, figures = [], []
    for batch_size in (16, 7):
        recipe = tiny_recipe(
            tmp_path, tiny_data, (f"train.batch_size={batch_size}", "train.val_windows=32")
        )
        _, val_batches = build_samplers(recipe, data, CPU)
        assert [len(b.k) for b in val_batches] == (
            [16, 16] if batch_size == 16 else [7, 7, 7, 7, 4]
        )
        windows.append(
            [torch.cat([getattr(b, name) for b in val_batches]) for name in ("episode", "t", "k")]
        )
        run = build_run(recipe, data, CPU, distributed.DistInfo())  # same seed: same weights
        figures.append(validate(run, val_batches))
    assert all(torch.equal(a, b) for a, b in zip(*windows, strict=True))
    first, second = figures
    for key in ("err_signal", "err_signal/k1", "baseline/copy_last/err_signal", "rank/target"):
        assert second[key] == pytest.approx(first[key], rel=1e-5), key
    assert second["loss/l1"] == pytest.approx(first["loss/l1"], rel=1e-5)


def test_val_batches_is_refused_with_the_replacement():
    from lejepa_core.errors import RecipeError

    with pytest.raises(RecipeError, match="train.val_batches: replaced by train.val_windows"):
        load_recipe(
            Path(__file__).parents[1] / "recipes" / "multi_k_physics.toml", ["train.val_batches=8"]
        )


def test_an_old_recipe_with_val_batches_reads_as_the_same_windows(tmp_path, capsys):
    text = (Path(__file__).parents[1] / "recipes" / "multi_k_physics.toml").read_text()
    text = text.replace("val_windows = 4096", "val_batches = 8")
    assert "val_batches = 8" in text
    old = tmp_path / "old.toml"
    old.write_text(text)
    recipe = load_recipe(old)
    assert recipe.train.val_windows == 8 * recipe.train.batch_size
    assert "read as val_windows = 8 x 512 = 4096" in capsys.readouterr().err


# ----------------------------------------------------------------------------- DDP, gloo
def _ddp_worker(rank: int, world_size: int, port: int, recipe_path: str, out: str) -> None:
    """One rank of a torchrun-like launch; rank 0's monitored figure stalls (it would stop
    after epoch 1), rank 1's keeps improving (it would train on: a hang before the fix)."""
    become_rank(rank, world_size, port)

    def skewed(run, batches):
        epoch = run.state.step // run.recipe.train.steps_per_epoch - 1
        return {"err_signal": 1.0 if rank == 0 else 1.0 / (epoch + 1), "loss/total": 1.0}

    loop.validate = skewed
    recipe = load_recipe(
        recipe_path,
        ["train.epochs=4", "train.steps_per_epoch=2", "train.patience=1", "log.every=1"],
    )
    result = train(recipe, out=Path(out) / "run", device="cpu")
    report = {
        "status": result.status,
        "step": result.step,
        "best_val": result.summary["best_val"],
        "group_destroyed": not torch.distributed.is_initialized(),
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(report))
    finish_rank()


@pytest.mark.slow  # two spawned processes each import torch and lejepa: ~10 s idle
def test_ddp_ranks_with_different_validation_figures_stop_together(tmp_path, tiny_data):
    recipe = write_tiny_recipe(tmp_path, tiny_data)
    context = torch.multiprocessing.start_processes(
        _ddp_worker,
        args=(2, free_port(), str(recipe), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail("the ranks did not finish together (a DDP hang)")
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # both follow rank 0: epoch 0 improves, epoch 1 does not, patience 1 -> stop at step 4
    for report in reports:
        assert report == {
            "status": "early_stopped",
            "step": 4,
            "best_val": 1.0,
            "group_destroyed": True,
        }
    assert len(_records(tmp_path / "run", "val")) == 2
