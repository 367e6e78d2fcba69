"""Health checks (``lejepa_core.training.health``) on hand-made records, then in a training run:
one warning per trip, ``summary.json``'s ``health``, stop rules, diagnostics between epochs and
a resumed run that continues its trips."""
# ruff: noqa: F811  (the shared tiny_data fixture is imported, then requested by name)

from __future__ import annotations

import json

import pytest

from lejepa_core.recipe import RecipeError
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training.health import (
    CHECKS,
    HealthConfig,
    HealthMonitor,
    err_signal_band,
    evaluate,
    readings,
)
from lejepa_core.training.loop import train
from tests.conftest import tiny_recipe

CONFIG = HealthConfig()


def train_record(step: int, **figures) -> dict:
    return {"step": step, "epoch": 0, "split": "train", **figures}


def val_record(step: int, **figures) -> dict:
    base = {
        "err_signal": 0.3,
        "cosine": 0.9,
        "baseline/mean/err_signal": 0.8,
        "baseline/copy_last/err_signal": 0.5,
        "rank/context": 10.0,
        "rank/target": 10.0,
    }
    return {"step": step, "epoch": 0, "split": "val", **base, **figures}


def bad(record: dict, **kw) -> set[str]:
    return {r.check for r in readings(CONFIG, record, **kw) if r.bad}


# ----------------------------------------------------------------------------- one record
def test_a_healthy_record_trips_nothing_and_missing_figures_give_no_reading():
    assert bad(val_record(200)) == set()
    healthy_train = train_record(
        50, **{"grad_norm": 2.0, "quantizer/usage_window": 0.5, "quantizer/codebook_size": 256}
    )
    assert bad(healthy_train) == set()
    assert readings(CONFIG, train_record(50)) == []  # no quantizer, no grad norm: nothing
    checked = {r.check for r in readings(CONFIG, val_record(200, err_signal=0.05))}
    assert checked == {
        "rank_context",
        "rank_target",
        "err_signal_failed",
        "err_signal_copy_last",
        "cosine_consistency",
    }


@pytest.mark.parametrize(
    ("figures", "tripped"),
    [
        ({"rank/context": 2.9}, {"rank_context"}),
        ({"rank/target": 4.9}, {"rank_target"}),
        ({"rank/target": 5.0}, set()),
        # no better than predicting the mean (0.8 here, not 1.0) is also no better than copy-last
        ({"err_signal": 0.85}, {"err_signal_failed", "err_signal_copy_last"}),
        ({"err_signal": 0.5}, {"err_signal_copy_last"}),  # equal to copy-last: no better
        ({"err_signal": 0.49}, set()),
        ({"err_signal": 0.08, "cosine": 0.9}, {"cosine_consistency"}),
        ({"err_signal": 0.08, "cosine": 0.96}, set()),
        ({"err_signal": 0.2, "cosine": 0.5}, set()),  # cosine only expected when err/σ <= 0.1
    ],
)
def test_validation_checks(figures, tripped):
    assert bad(val_record(200, **figures)) == tripped


def test_training_checks_and_the_refresh_check_waits_for_the_warm_up():
    record = train_record(
        150,
        **{
            "quantizer/usage_window": 0.04,
            "quantizer/codebook_size": 256,
            "quantizer/replaced_codes_max": 30.0,  # > 10 % of 256
            "grad_norm": 31.0,
        },
    )
    everything = {"codebook_usage", "codebook_usage_critical", "codebook_refresh", "grad_norm"}
    assert bad(record, warmup_steps=100) == everything
    assert bad(record, warmup_steps=150) == everything - {"codebook_refresh"}
    record["quantizer/replaced_codes_max"] = 25.0
    assert "codebook_refresh" not in bad(record)


def test_err_signal_bands_point_to_the_mean_baseline():
    assert err_signal_band(0.8, 0.8) == "failed"  # Gaussian latents: the mean reads 0.8
    assert err_signal_band(0.79, 0.8) == "weak"
    assert err_signal_band(0.95) == "weak" and err_signal_band(1.0) == "failed"
    assert err_signal_band(0.5, 0.8) == "coarse"
    assert err_signal_band(0.1, 0.8) == "excellent"


# ----------------------------------------------------------------------------- durations, trips
def usage_records(values: list[float], every: int = 50) -> list[dict]:
    return [
        train_record(every * (i + 1), **{"quantizer/usage_window": v}) for i, v in enumerate(values)
    ]


def test_codebook_usage_alerts_after_three_epochs_below_and_a_recovery_ends_the_trip():
    """steps_per_epoch 200, a record every 50 steps: usage 0.07 from step 50 trips at step 600
    (3 epochs after step 0, the last good point), not before; back above 0.08 the trip ends;
    a second dip is a second trip."""
    values = [0.07] * 11 + [0.06] + [0.2] * 2 + [0.07] * 12
    trips = [t for t in evaluate(CONFIG, usage_records(values), steps_per_epoch=200)]
    usage = [t for t in trips if t.check == "codebook_usage"]
    assert [(t.first_step, t.last_step) for t in usage] == [(50, 600), (750, 1300)]
    assert usage[0].value == 0.06 and usage[0].threshold == 0.08  # the worst figure seen
    assert usage[0].action == "alert"
    # 11 records (550 steps) below 0.08: not yet
    assert not any(
        t.check == "codebook_usage"
        for t in evaluate(CONFIG, usage_records([0.07] * 11), steps_per_epoch=200)
    )


def test_stop_rule_and_one_warning_per_trip():
    config = HealthConfig(stop_on=("codebook_usage_critical",))
    lines: list[str] = []
    monitor = HealthMonitor(config, steps_per_epoch=100, warn=lines.append)
    stops = [monitor.observe(r) for r in usage_records([0.5, 0.04, 0.04, 0.03, 0.03])]
    # the last good record is at step 50; 1 epoch = 100 steps below 0.05 -> step 150
    assert stops == [False, False, True, False, False]
    assert monitor.stopped
    (trip,) = [t for t in monitor.trips if t.check == "codebook_usage_critical"]
    assert (trip.first_step, trip.last_step, trip.value, trip.action) == (100, 250, 0.03, "stop")
    critical = [line for line in lines if "codebook_usage_critical" in line]
    assert len(critical) == 1 and "stopping the run" in critical[0]
    assert all(line.startswith("warning: health check ") for line in lines)
    # without stop_on the same trip is an alert and nothing stops
    quiet = HealthMonitor(HealthConfig(), steps_per_epoch=100)
    assert not any(quiet.observe(r) for r in usage_records([0.5, 0.04, 0.04, 0.03]))
    assert {t.action for t in quiet.trips} == {"alert"}


def test_grad_norm_must_stay_high_for_the_configured_windows():
    config = HealthConfig(grad_norm_windows=3)

    def trips(norms):
        records = [train_record(10 * (i + 1), grad_norm=n) for i, n in enumerate(norms)]
        return [t for t in evaluate(config, records, steps_per_epoch=100)]

    assert trips([40, 40, 5, 40, 40, 5]) == []  # a mean of 31 with spikes: never 3 in a row
    (trip,) = trips([5, 40, 35, 81, 5])
    assert (trip.first_step, trip.last_step, trip.value, trip.threshold) == (20, 40, 81, 30.0)


def test_agree_decides_the_stop_on_every_rank():
    """Under DDP rank 0's decision is broadcast: this rank would stop, rank 0 does not."""
    config = HealthConfig(stop_on=("rank_target",))
    monitor = HealthMonitor(config, steps_per_epoch=100, agree=lambda mine: False)
    assert monitor.observe(val_record(100, **{"rank/target": 1.0})) is False
    assert not monitor.stopped


def test_disabled_checks_nothing_and_stop_on_names_are_validated():
    monitor = HealthMonitor(HealthConfig(enabled=False), steps_per_epoch=100)
    monitor.observe(val_record(100, **{"rank/target": 1.0}))
    assert monitor.trips == []
    with pytest.raises(ValueError, match="stop_on: unknown check 'rank'; known checks: "):
        HealthConfig(stop_on=("rank",))
    assert "codebook_usage_critical" in CHECKS


# ----------------------------------------------------------------------------- in a run
def _records(run_dir, split=None) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if split is None or r["split"] == split]


def test_a_stop_rule_ends_the_run_after_saving_last_pt(tmp_path, tiny_data, capsys):
    recipe = tiny_recipe(
        tmp_path,
        tiny_data,
        ("health.rank_target_min=100.0", 'health.stop_on=["rank_target"]', "train.epochs=3"),
    )
    result = train(recipe, out=tmp_path / "run")
    assert result.status == "health_stopped" and result.step == 5  # the first validation
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["train_state"]["step"] == 5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "health_stopped"
    entry = next(h for h in summary["health"] if h["check"] == "rank_target")
    assert entry["first_step"] == entry["last_step"] == 5
    assert entry["threshold"] == 100.0 and entry["value"] < 100 and entry["action"] == "stop"
    assert set(entry) == {"check", "first_step", "last_step", "value", "threshold", "action"}
    err = capsys.readouterr().err
    assert err.count("warning: health check rank_target at step 5") == 1


def test_diagnostics_between_epochs_and_a_resumed_run_continues_its_trips(
    tmp_path, tiny_data, capsys
):
    """log.diagnostics_every = 2 (epochs of 5 steps): val records at 2, 4, 5, 6, 8, 10, only
    the epoch ends with ``best``. A trip that began before an interruption continues after the
    resume: one entry, one warning."""
    overrides = ("log.diagnostics_every=2", "health.rank_target_min=100.0")
    recipe = tiny_recipe(tmp_path, tiny_data, overrides)
    stopped = train(recipe, out=tmp_path / "run", stop_at_step=7)
    assert stopped.status == "stopped"
    resumed = train(recipe, resume=tmp_path / "run")
    assert resumed.status == "finished" and resumed.step == 10
    val = _records(tmp_path / "run", "val")
    assert [r["step"] for r in val] == [2, 4, 5, 6, 8, 10]
    assert [("best" in r) for r in val] == [False, False, True, False, False, True]
    assert all("err_signal" in r and "baseline/copy_last/err_signal" in r for r in val)
    health = json.loads((tmp_path / "run" / "summary.json").read_text())["health"]
    rank = [h for h in health if h["check"] == "rank_target"]
    assert [(h["first_step"], h["last_step"]) for h in rank] == [(2, 10)]
    assert capsys.readouterr().err.count("health check rank_target") == 1


def test_health_table_is_strict():
    from pathlib import Path

    from lejepa_core.recipe import load_recipe

    path = Path(__file__).parents[1] / "recipes" / "multi_k_physics.toml"
    with pytest.raises(RecipeError, match="health.stop_on: unknown check 'ranks'"):
        load_recipe(path, ['health.stop_on=["ranks"]'])
    assert load_recipe(path).health == HealthConfig()
