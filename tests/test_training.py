"""Training loop: EMA, schedule, gradient norm, non-finite steps, resume, checkpoints, early
stopping, run directory, the ``lejepa run`` command and DDP."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch
from click.testing import CliRunner

from lejepa_core import Loss, LossOutput, hookimpl
from lejepa_core.errors import StorageError, TrainingError
from lejepa_core.params import param
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training.loop import train
from lejepa_core.training.target import ema_momentum, ema_update, make_ema_copy
from tests.conftest import tiny_recipe, write_tiny_recipe

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- pure pieces
def test_ema_update_formula():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    target = make_ema_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.fill_(2.0)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=False):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o, rtol=1e-6, atol=1e-7)
        assert not t.requires_grad
    assert torch.equal(target[1].running_mean, online[1].running_mean)


def test_ema_momentum_schedule():
    assert ema_momentum(7, base=0.99, final=None, total_steps=100) == 0.99
    assert ema_momentum(0, base=0.99, final=0.999, total_steps=100) == pytest.approx(0.99)
    assert ema_momentum(50, base=0.99, final=0.999, total_steps=100) == pytest.approx(0.9945)
    assert ema_momentum(100, base=0.99, final=0.999, total_steps=100) == pytest.approx(0.999)


def test_atomic_checkpoint_failure_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"format_version": ckpt.FORMAT_VERSION, "w": torch.ones(3)}, path)

    def broken_save(obj, handle):
        handle.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(StorageError, match="disk full"):
        ckpt.save_atomic({"format_version": ckpt.FORMAT_VERSION, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_rng_state_round_trip():
    g = torch.Generator().manual_seed(3)
    state = ckpt.capture_rng_state({"g": g})
    first = (torch.rand(3), torch.rand(2, generator=g))
    ckpt.restore_rng_state(state, {"g": g})
    second = (torch.rand(3), torch.rand(2, generator=g))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=False))


# ----------------------------------------------------------------------------- the loop
def test_pre_clip_gradient_norm_is_logged(tmp_path, tiny_data, monkeypatch):
    """The logged grad_norm is the global norm before clipping; the applied gradients are clipped."""
    real = torch.nn.utils.clip_grad_norm_
    seen = []

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        hand = math.sqrt(
            sum(float(p.grad.double().square().sum()) for p in params if p.grad is not None)
        )
        norm = real(params, max_norm, *args, **kwargs)
        after = math.sqrt(
            sum(float(p.grad.double().square().sum()) for p in params if p.grad is not None)
        )
        seen.append((hand, float(norm), after))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    recipe = tiny_recipe(
        tmp_path,
        tiny_data,
        ("train.grad_clip=0.01", "log.every=1", "train.epochs=1", "train.steps_per_epoch=3"),
    )
    result = train(recipe, out=tmp_path / "run")
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    logged = [r["grad_norm"] for r in records if r["split"] == "train"]
    assert len(logged) == len(seen) == 3
    for (hand, norm, after), value in zip(seen, logged, strict=False):
        assert norm == pytest.approx(hand, rel=1e-5) and value == pytest.approx(hand, rel=1e-5)
        assert hand > 0.01 and after == pytest.approx(0.01, rel=1e-3)
    assert all(r["clip_fraction"] == 1.0 for r in records if r["split"] == "train")


def test_grad_norm_max_is_the_largest_pre_clip_norm_of_each_log_window(
    tmp_path, tiny_data, monkeypatch
):
    """``grad_norm`` is the window's mean, ``grad_norm_max`` its maximum (a spike a mean of 50
    steps flattens), in every train record; the last window is shorter (7 steps, every 3)."""
    real = torch.nn.utils.clip_grad_norm_
    norms = []

    def spy(params, max_norm, *args, **kwargs):
        norm = real(params, max_norm, *args, **kwargs)
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("log.every=3", "train.epochs=1", "train.steps_per_epoch=7")
    )
    result = train(recipe, out=tmp_path / "run")
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    train_records = [r for r in records if r["split"] == "train"]
    windows = [norms[0:3], norms[3:6], norms[6:7]]
    assert [r["step"] for r in train_records] == [3, 6, 7]
    for record, window in zip(train_records, windows, strict=True):
        assert record["grad_norm_max"] == pytest.approx(max(window), rel=1e-6)
        assert record["grad_norm"] == pytest.approx(sum(window) / len(window), rel=1e-6)
    assert len(set(norms[0:3])) == 3  # the maximum differs from the mean


class NaNWindowLoss(Loss):
    """Test loss: 0 x prediction, NaN for steps in [start, stop)."""

    @attrs.frozen(kw_only=True)
    class Params:
        start: int = param(0, "first NaN step")
        stop: int = param(10**9, "first finite step after the NaN window")

    def forward(self, outputs):
        value = outputs.prediction.sum() * 0.0
        if self.params.start <= outputs.step < self.params.stop:
            value = value + float("nan")
        return LossOutput(value=value)


class _NaNPlugin:
    @hookimpl
    def register_losses(self, register):
        register("test_nan_window", NaNWindowLoss)


@pytest.fixture
def nan_loss_registered():
    from lejepa_core.registry import get_plugin_manager

    pm = get_plugin_manager()
    plugin = _NaNPlugin()
    pm.register_plugin(plugin, name="test-training-nan")
    yield
    pm.unregister(plugin)


def _with_nan_loss(tmp_path, tiny_data, start, stop, *extra):
    from lejepa_core.recipe import load_recipe

    path = write_tiny_recipe(tmp_path, tiny_data)
    path.write_text(
        path.read_text()
        + f'\n[[losses]]\nname = "test_nan_window"\nstart = {start}\nstop = {stop}\n'
    )
    return load_recipe(path, list(extra))


def test_nonfinite_step_is_skipped_and_weights_unchanged(tmp_path, tiny_data, nan_loss_registered):
    recipe = _with_nan_loss(
        tmp_path, tiny_data, 3, 5, "train.epochs=1", "train.steps_per_epoch=7", "log.every=1"
    )
    snapshots = {}

    def on_step(run):
        snapshots[run.state.step] = {k: v.clone() for k, v in run.model.state_dict().items()}

    result = train(recipe, out=tmp_path / "run", on_step=on_step)
    assert result.summary["nonfinite_steps"] == 2
    # steps 3 and 4 (0-based) were skipped: weights after them equal the weights after step 2
    for key, value in snapshots[3].items():
        assert torch.equal(value, snapshots[5][key]), key
    assert any(not torch.equal(v, snapshots[6][k]) for k, v in snapshots[5].items())
    assert all(torch.isfinite(v).all() for v in snapshots[7].values() if v.is_floating_point())


def test_persistent_nonfinite_loss_stops_with_training_error(
    tmp_path, tiny_data, nan_loss_registered
):
    recipe = _with_nan_loss(tmp_path, tiny_data, 6, 10**9, "train.max_nonfinite_steps=3")
    with pytest.raises(TrainingError, match="3 consecutive non-finite"):
        train(recipe, out=tmp_path / "run")
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["train_state"]["step"] == 5  # the epoch-end checkpoint, never overwritten
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_resume_is_bit_exact(tmp_path, tiny_data):
    recipe = tiny_recipe(tmp_path, tiny_data, ("train.epochs=2", "train.steps_per_epoch=4"))
    full = train(recipe, out=tmp_path / "full")
    part = train(recipe, out=tmp_path / "part", stop_at_step=6)  # interrupted mid-epoch
    assert part.status == "stopped" and part.step == 6
    resumed = train(recipe, resume=tmp_path / "part")
    assert resumed.step == full.step == 8 and resumed.status == "finished"
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    for group in ("model", "target_encoder"):
        assert a[group].keys() == b[group].keys()
        for key in a[group]:
            assert torch.equal(a[group][key], b[group][key]), f"{group}.{key}"
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=False
    ):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["train_state"]["best_val"] == b["train_state"]["best_val"]


def test_early_stopping_keeps_best(tmp_path, tiny_data):
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.epochs=6", "train.patience=2", "train.min_delta=1e9")
    )
    result = train(recipe, out=tmp_path / "run")
    assert result.status == "early_stopped"
    assert result.step == 3 * 5  # epoch 0 improves on inf, epochs 1 and 2 do not
    best = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["train_state"]["step"] == 5


def test_run_dir_contents_and_metric_keys(tmp_path, tiny_data):
    recipe = tiny_recipe(tmp_path, tiny_data)
    result = train(recipe, out=tmp_path / "run")
    run = result.run_dir
    names = {p.name for p in run.iterdir()}
    assert {"resolved_recipe.toml", "metrics.jsonl", "summary.json", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "epoch", "split"} <= r.keys() for r in records)
    train_keys = set().union(*(r.keys() for r in records if r["split"] == "train"))
    assert {
        "loss/total",
        "loss/l1",
        "loss/sigreg",
        "loss/l1/error_to_signal",
        "grad_norm",
        "grad_norm_max",
        "clip_fraction",
        "lr",
        "samples_per_s",
        "ema_momentum",
        "nonfinite_steps",
        "loss/sigreg/null_level_effective",
        "loss/sigreg/effective_weight",
    } <= train_keys
    # SIGReg unnormalised, weight 0.01: its weight on the divergence is 0.01 x N, N = B x W = 32
    first = next(r for r in records if r["split"] == "train")
    assert first["loss/sigreg/effective_weight"] == pytest.approx(0.01 * 16 * 2)
    assert first["loss/sigreg/null_level_effective"] == pytest.approx(2 * 1.0525, rel=1e-4)
    val = [r for r in records if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [0, 1]
    expected = {
        "loss/total",
        "err_signal",
        "cosine",
        "baseline/copy_last/err_signal",
        "baseline/copy_last_context/err_signal",
        "baseline/mean/err_signal",
        "rank/context",
        "rank/target",
        "variance/target/min",
        "variance/target/mean",
        "isotropy/target",
        "best",
    }
    expected |= {
        f"{m}/k{k}"
        for m in ("err_signal", "cosine", "baseline/copy_last/err_signal")
        for k in (1, 2, 4)
    }
    assert expected <= val[-1].keys()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 10
    from lejepa_core.recipe import load_recipe

    assert load_recipe(run / "resolved_recipe.toml").hash() == recipe.hash()


def test_shared_target_and_quantizer_run(tmp_path, tiny_data):
    recipe = tiny_recipe(
        tmp_path, tiny_data, ("target.mode=shared", "quantizer.name=fsq", "train.epochs=1")
    )
    result = train(recipe, out=tmp_path / "run")
    assert result.status == "finished"
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["target_encoder"] is None
    val = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert "loss/quantizer" in val and any(k.startswith("quantizer/") for k in val)


def test_sigterm_saves_and_exits_cleanly(tmp_path, tiny_data):
    import signal

    recipe = tiny_recipe(tmp_path, tiny_data)

    def on_step(run):
        if run.state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(recipe, out=tmp_path / "run", on_step=on_step)
    # the flag is read at the next step's (all-reduced) sync: that step finishes, then it stops
    assert result.status == "interrupted" and result.step == 4
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["train_state"]["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored afterwards
    resumed = train(recipe, resume=tmp_path / "run")
    assert resumed.status == "finished" and resumed.step == 10


def test_unmasked_context_is_computed_when_a_loss_requires_it(tmp_path, tiny_data):
    path = write_tiny_recipe(tmp_path, tiny_data)
    path.write_text(path.read_text() + '\n[[losses]]\nname = "invariance"\nweight = 0.1\n')
    from lejepa_core.recipe import load_recipe

    result = train(load_recipe(path, ["train.epochs=1"]), out=tmp_path / "run")
    val = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert result.status == "finished" and math.isfinite(val["loss/invariance"])


# ----------------------------------------------------------------------------- the commands
def test_lejepa_run_cli_end_to_end(tmp_path, tiny_data):
    from lejepa_core.cli import main

    recipe = write_tiny_recipe(tmp_path, tiny_data)
    out = tmp_path / "cli-run"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(recipe),
            "--set",
            "train.epochs=1",
            "--set",
            "train.lr=1e-3",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "run finished" in result.output
    resolved = (out / "resolved_recipe.toml").read_text()
    assert "epochs = 1" in resolved and "lr = 0.001" in resolved
    # a second run into the same directory is refused (exit 2, one line)
    again = CliRunner().invoke(main, ["run", str(recipe), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    bad = CliRunner().invoke(main, ["run", str(recipe), "--set", "train.lr=-1"])
    assert bad.exit_code == 2 and "train.lr" in bad.output


@pytest.mark.slow  # torchrun, two processes
def test_ddp_two_processes_gloo(tmp_path, tiny_data):
    recipe = write_tiny_recipe(tmp_path, tiny_data)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lejepa_core.cli",
            "run",
            str(recipe),
            "--nproc",
            "2",
            "--out",
            str(out),
            "--set",
            "train.epochs=1",
            "--device",
            "cpu",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished" and summary["step"] == 5
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["split"] == "val"]) == 1  # only rank 0 writes
