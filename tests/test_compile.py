"""``--compile`` on every shipped recipe (issue 15, items 2 and 6): training steps and a
validation pass through ``wrap_model(compile=True)`` on CPU with tiny overrides, counting
dynamo's graphs and recompilations. Slow: compilation dominates.

``LEJEPA_COMPILE_BACKEND`` picks the backend (default ``aot_eager``: dynamo's graph capture and
AOTAutograd, what breaks on data-dependent code, without inductor's C++ build; set it to
``inductor`` to exercise the full stack)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from lejepa_core.data.prepare import open_data
from lejepa_core.training.compiled import compile_per_mode, phase
from lejepa_core.training.loop import train_step
from lejepa_core.training.run import build_samplers, wrap_model
from lejepa_core.training.runtime import StopFlag
from lejepa_core.training.validate import validate
from tests.test_host_syncs import MAX_SYNCS_PER_STEP, _built_run

BACKEND = os.environ.get("LEJEPA_COMPILE_BACKEND", "aot_eager")

# recipe -> (graphs compiled, recompilations) over 5 steps and 2 validations. Physics: the
# encoder's modes (context with gradient; EMA target without; validation's context and
# target) and the predictor's (training, validation), each compiled once, nothing recompiled
# (lejepa_physics: shared target, whose context [B*W] and target [B] batches are two entries).
# ARC likewise: the object encoder's labelling is a fixed schedule, traced with the rest (it
# had a graph break at an eager ``tokenize``: 5 graphs, 5 recompiles).
COMPILES = {
    "multi_k_physics": (6, 0),
    "lejepa_physics": (6, 0),
    "arc_vq": (6, 0),
    "arc_fsq": (6, 0),
    "arc_objects": (6, 0),
    "arc_cells": (6, 0),
    "arc_tasks": (6, 0),
    "control_physics": (6, 0),
    "pixels_physics": (6, 0),
}


class RecompileLog(logging.Handler):
    """Collects dynamo's ``recompiles`` log messages while active."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Recompiling function" in record.getMessage():
            self.messages.append(record.getMessage().splitlines()[0])

    def __enter__(self) -> RecompileLog:
        torch._logging.set_logs(recompiles=True)
        logging.getLogger("torch._dynamo").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("torch._dynamo").removeHandler(self)
        torch._logging.set_logs()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MAX_SYNCS_PER_STEP))
def test_every_recipe_trains_compiled_without_recompiling(name, tmp_path: Path):
    assert set(COMPILES) == set(MAX_SYNCS_PER_STEP)
    torch._dynamo.reset()
    counters.clear()
    run, sampler = _built_run(name, tmp_path)
    keys = set(run.model.state_dict())
    _, val_batches = build_samplers(run.recipe, open_data(run.recipe, run.device), run.device)
    step_module = wrap_model(run, compile=True, backend=BACKEND)
    params = [p for p in run.model.parameters() if p.requires_grad]
    loss_generator = torch.Generator(device=run.device)
    with StopFlag() as stop, RecompileLog() as recompiles:
        for steps in (3, 2):
            for _ in range(steps):
                batch = sampler.sample(run.recipe.train.batch_size, run.generators["sampler"])
                result = train_step(run, step_module, batch, params, loss_generator, stop)
                assert result.metrics is not None
            assert validate(run, val_batches)["err_signal"] > 0
    assert run.state.step == 5 and run.state.nonfinite_total == 0
    assert set(run.model.state_dict()) == keys  # nothing wrapped
    graphs, recompiled = COMPILES[name]
    assert counters["stats"]["unique_graphs"] == graphs
    assert len(recompiles.messages) <= recompiled, recompiles.messages


@pytest.mark.slow
def test_each_mode_compiles_once_and_validation_has_its_own_entries():
    torch._dynamo.reset()
    layer = torch.nn.Linear(4, 2)
    entries = compile_per_mode(layer, backend="eager")
    x = torch.randn(6, 4)
    with RecompileLog() as recompiles:
        for _ in range(2):
            layer(x).sum().backward()  # train, with gradient
            with torch.no_grad():
                layer(x)
            layer(x[:3])  # another batch size: an entry of its own
            with phase("validation"), torch.no_grad():
                layer.eval()
                layer(x)
                layer.train()
    assert recompiles.messages == []
    assert sorted(entries) == [
        "Linear_train_grad_train_b3",
        "Linear_train_grad_train_b6",
        "Linear_train_nograd_train_b6",
        "Linear_validation_nograd_eval_b6",
    ]
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)
