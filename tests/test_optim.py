"""AdamW parameter groups and the warm-up cosine learning-rate schedule (a torch LambdaLR):
the same rates as the hand-written scheduler it replaced, a bit-exact state-dict round trip,
the recipe's schedule after a resume, and a clear error for format-1 checkpoints."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch

from lejepa_core.errors import CheckpointError
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training.optim import (
    load_scheduler_state,
    parameter_groups,
    warmup_cosine,
    warmup_cosine_lr,
)


class ReferenceWarmupCosine:
    """The scheduler of lejepa <= checkpoint format 1, verbatim (minus its state dict)."""

    def __init__(self, optimizer, *, base_lr, warmup_steps, total_steps, min_lr_ratio):
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self.step_count = 0
        self._apply()

    def lr_at(self, step):
        return self.base_lr * warmup_cosine(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_lr_ratio=self.min_lr_ratio,
        )

    @property
    def lr(self):
        return self.lr_at(self.step_count)

    def _apply(self):
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self):
        self.step_count += 1
        self._apply()


def _optimizer(lr: float) -> torch.optim.AdamW:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    return torch.optim.AdamW(parameter_groups([model], 0.1), lr=lr)


def _rates(scheduler, optimizer, steps: int) -> list[tuple[float, ...]]:
    """Every group's lr before each of ``steps`` optimisation steps (then after the last)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no optimizer.step() in these loops
        for _ in range(steps):
            out.append(tuple(group["lr"] for group in optimizer.param_groups))
            scheduler.step()
    out.append(tuple(group["lr"] for group in optimizer.param_groups))
    return out


CONFIGS = [
    # lr, warmup_steps, total_steps, min_lr_ratio
    (3e-3, 2, 10, 0.0),
    (6e-3, 100, 6000, 0.01),
    (1e-3, 0, 50, 0.1),
    (0.5, 10, 5, 0.2),  # warm-up longer than the run
    (2e-4, 1, 1, 1.0),
]


@pytest.mark.parametrize(("lr", "warmup", "total", "min_ratio"), CONFIGS)
def test_lambda_lr_matches_the_old_scheduler(lr, warmup, total, min_ratio):
    kw = dict(warmup_steps=warmup, total_steps=total, min_lr_ratio=min_ratio)
    old_opt, new_opt = _optimizer(lr), _optimizer(lr)
    old = ReferenceWarmupCosine(old_opt, base_lr=lr, **kw)
    new = warmup_cosine_lr(new_opt, **kw)
    steps = total + 20  # past the end: flat at lr * min_lr_ratio
    old_rates, new_rates = _rates(old, old_opt, steps), _rates(new, new_opt, steps)
    assert len(new_rates) == steps + 1 and len(new_opt.param_groups) == 2
    for step, (a, b) in enumerate(zip(old_rates, new_rates, strict=True)):
        assert b == pytest.approx(a, abs=1e-12, rel=0), step
    assert new.get_last_lr()[0] == new_opt.param_groups[0]["lr"]
    assert new_rates[-1][0] == pytest.approx(lr * min_ratio, abs=1e-12)


def test_warmup_cosine_values():
    kw = dict(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(4, **kw) == pytest.approx(0.5)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos = 0
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)
    assert warmup_cosine(500, **kw) == pytest.approx(0.1)
    assert warmup_cosine(0, warmup_steps=0, total_steps=10, min_lr_ratio=0.0) == pytest.approx(1.0)
    # an independent formula in the cosine part
    step = 35
    assert warmup_cosine(step, **kw) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi * (step - 10) / 100))
    )


def test_no_weight_decay_on_biases_norms_embeddings():
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(5, 4)
    )
    decay, no_decay = parameter_groups([model], 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4


def _save_load(obj):
    """Through torch.save / torch.load(weights_only=True), as a checkpoint travels."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_scheduler_state_round_trip_is_exact():
    kw = dict(warmup_steps=5, total_steps=40, min_lr_ratio=0.01)
    opt = _optimizer(3e-3)
    sched = warmup_cosine_lr(opt, **kw)
    _rates(sched, opt, 17)
    saved = _save_load({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    lr_at_save = sched.get_last_lr()
    rest = _rates(sched, opt, 30)

    opt2 = _optimizer(3e-3)
    sched2 = warmup_cosine_lr(opt2, **kw)
    opt2.load_state_dict(saved["optimizer"])
    load_scheduler_state(sched2, saved["scheduler"])
    assert sched2.last_epoch == 17 and sched2.get_last_lr() == lr_at_save
    assert _rates(sched2, opt2, 30) == rest  # exactly equal, every step


def test_resumed_schedule_follows_the_recipe():
    """``--set train.epochs=...`` on resume: the rates of the new schedule from the saved step
    on (as the previous scheduler did), not the saved run's."""
    opt = _optimizer(1e-3)
    sched = warmup_cosine_lr(opt, warmup_steps=2, total_steps=20, min_lr_ratio=0.0)
    _rates(sched, opt, 10)
    saved = _save_load({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})

    longer = dict(warmup_steps=2, total_steps=60, min_lr_ratio=0.0)
    opt2 = _optimizer(2e-3)  # and a new train.lr
    sched2 = warmup_cosine_lr(opt2, **longer)
    opt2.load_state_dict(saved["optimizer"])
    load_scheduler_state(sched2, saved["scheduler"])
    expected = [2e-3 * warmup_cosine(s, **longer) for s in range(10, 20)]
    got = [r[0] for r in _rates(sched2, opt2, 9)]
    assert got == pytest.approx(expected, abs=1e-15, rel=0)
    assert sched2.get_last_lr()[0] == pytest.approx(expected[-1], abs=1e-15, rel=0)


def test_format_1_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format_version": 1, "scheduler": {"step_count": 3}}, path)
    with pytest.raises(
        CheckpointError, match=rf"format 1, this lejepa reads format {ckpt.FORMAT_VERSION}.*older"
    ):
        ckpt.load_checkpoint(path)
    torch.save({"something": "else"}, path)
    with pytest.raises(CheckpointError, match="not a lejepa checkpoint"):
        ckpt.load_checkpoint(path)
