"""``--compile`` on every shipped recipe (issue 15, item 2): a few training steps through
``wrap_model(compile=True)`` on CPU with tiny overrides. Slow: compilation dominates.

``LEJEPA_COMPILE_BACKEND`` picks the backend (default ``aot_eager``: dynamo's graph capture and
AOTAutograd, what breaks on data-dependent code, without inductor's C++ build; set it to
``inductor`` to exercise the full stack)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lejepa_core.training.loop import train_step
from lejepa_core.training.run import wrap_model
from lejepa_core.training.runtime import StopFlag
from tests.test_host_syncs import MAX_SYNCS_PER_STEP, _built_run

BACKEND = os.environ.get("LEJEPA_COMPILE_BACKEND", "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MAX_SYNCS_PER_STEP))
def test_every_recipe_trains_compiled(name, tmp_path: Path):
    torch._dynamo.reset()
    run, sampler = _built_run(name, tmp_path)
    step_module = wrap_model(run, compile=True, backend=BACKEND)
    params = [p for p in run.model.parameters() if p.requires_grad]
    loss_generator = torch.Generator(device=run.device)
    with StopFlag() as stop:
        for _ in range(3):
            batch = sampler.sample(run.recipe.train.batch_size, run.generators["sampler"])
            result = train_step(run, step_module, batch, params, loss_generator, stop)
            assert result.metrics is not None  # a finite step
    assert run.state.step == 3 and run.state.nonfinite_total == 0
    assert hasattr(run.model.context_encoder, "_compiled_call_impl")
