"""Resuming a run leaves no step twice in metrics.jsonl or TensorBoard, and a run names its
recipe in TensorBoard (issue 18 item 5). TensorBoard's own EventAccumulator reads the events."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lejepa_core.training.diagnostics import MetricsLog, recipe_hparams, truncate_metrics
from lejepa_core.training.loop import train
from tests.conftest import tiny_recipe


class Crash(Exception):
    pass


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _crash_at(step):
    def on_step(run):
        if run.state.step == step:
            raise Crash  # killed: no checkpoint after the epoch's (step 5)

    return on_step


@pytest.fixture
def resumed(tmp_path, tiny_data):
    """A run killed at step 8 (last checkpoint: step 5, end of epoch 0), then resumed."""
    recipe = tiny_recipe(tmp_path, tiny_data)  # 2 epochs x 5 steps, a record every 2 steps
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        train(recipe, out=run_dir, on_step=_crash_at(8))
    before = [(r["split"], r["step"]) for r in _records(run_dir)]
    assert before == [("train", 2), ("train", 4), ("val", 5), ("train", 6), ("train", 8)]
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "epoch": 1, "split": "tr')  # the torn tail of a killed write
    result = train(recipe, resume=run_dir)
    assert result.status == "finished" and result.step == 10
    return run_dir


def test_resume_leaves_no_duplicate_steps_in_metrics_jsonl(resumed):
    keys = [(r["split"], r["step"]) for r in _records(resumed)]
    assert not [k for k, n in Counter(keys).items() if n > 1]
    assert keys == [
        ("train", 2),
        ("train", 4),
        ("val", 5),
        ("train", 6),
        ("train", 8),
        ("train", 10),
        ("val", 10),
    ]


def test_resume_leaves_no_duplicate_steps_in_tensorboard(resumed):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator", reason="tensorboard not installed"
    )
    events = accumulator.EventAccumulator(str(resumed), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss/total")]
    assert steps == [2, 4, 6, 8, 10]
    assert [e.step for e in events.Scalars("val/err_signal")] == [5, 10]
    # the recipe, once (the resumed session does not write it again)
    text = events.Tensors("recipe/text_summary")
    assert len(text) == 1 and b"latent_dim = 8" in text[0].tensor_proto.string_val[0]


def test_hparams_reach_tensorboards_hparams_plugin(tmp_path, tiny_data):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator", reason="tensorboard not installed"
    )
    from tensorboard.plugins.hparams import plugin_data_pb2

    recipe = tiny_recipe(tmp_path, tiny_data, ("train.epochs=1",))
    train(recipe, out=tmp_path / "run")
    events = accumulator.EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["train.lr"].number_value == pytest.approx(3e-3)
    assert start.hparams["encoder.name"].string_value == "mlp"
    assert start.hparams["losses.1.name"].string_value == "sigreg"
    assert json.loads(start.hparams["data.horizons"].string_value) == [1, 2, 4]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/err_signal", "val/loss/total"}


def test_truncate_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert truncate_metrics(path, 3) == 0  # no file yet
    lines = [json.dumps({"step": s, "split": "train"}) + "\n" for s in (1, 2, 3, 4)]
    path.write_text("".join(lines) + "not json\n" + '{"step": 2')
    assert truncate_metrics(path, 3) == 3
    assert path.read_text() == "".join(lines[:3])
    assert truncate_metrics(path, 3) == 0


def test_recipe_hparams_are_flat_scalars(tmp_path, tiny_data):
    hparams = recipe_hparams(tiny_recipe(tmp_path, tiny_data))
    assert hparams["data.env_kwargs.num_balls"] == 2 and hparams["train.batch_size"] == 16
    assert all(isinstance(v, (str, int, float, bool)) for v in hparams.values())


def test_a_disabled_log_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=True, enabled=False, resume_step=3)
    log.write({"step": 1, "epoch": 0, "split": "train", "x": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []
