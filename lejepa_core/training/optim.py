"""AdamW with sensible weight-decay groups and a linear-warm-up cosine learning-rate schedule.

No weight decay on biases, normalisation parameters (every parameter with fewer than two
dimensions) and embeddings (``nn.Embedding`` weights: time embeddings, codebooks).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimisation ``step`` (0-based: the step about to be taken).

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, then a cosine
    from 1 down to ``min_lr_ratio`` reached at ``total_steps``, flat afterwards.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed matrices, and undecayed biases / norms / embeddings.

    A parameter shared by several modules is counted once.
    """
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for sub in module.modules():
            for param in sub.parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                if isinstance(sub, nn.Embedding) or param.ndim < 2:
                    no_decay.append(param)
                else:
                    decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    modules: Iterable[nn.Module],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, ...],
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW over ``modules``: fused kernels on CPU and CUDA (they take the ``found_inf`` flag
    that skips a non-finite step on the device: ``guard.masked_step``), foreach elsewhere."""
    if len(betas) != 2:
        raise ValueError(f"train.betas: expected two values, got {tuple(betas)}")
    fused = device.type in ("cpu", "cuda")
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(
        parameter_groups(modules, weight_decay), lr=lr, betas=tuple(betas), **kwargs
    )


def warmup_cosine_lr(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> LambdaLR:
    """A ``LambdaLR`` setting every group's ``lr`` to its initial lr (``train.lr``) times
    ``warmup_cosine(step)``; ``get_last_lr()[0]`` is the learning rate of the next step.

    The multiplier is a plain function, so the scheduler's ``state_dict`` never stores the
    schedule's parameters: a resumed run follows its recipe's (see ``load_scheduler_state``).
    """

    def multiplier(step: int) -> float:
        return warmup_cosine(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
        )

    return LambdaLR(optimizer, multiplier)


def load_scheduler_state(scheduler: LambdaLR, state: dict[str, Any]) -> None:
    """Restore the step count of a saved ``warmup_cosine_lr`` scheduler and set the learning
    rates of that step from ``scheduler``'s own base lr and multiplier, i.e. the recipe's
    (``--set train.lr=...`` or ``train.epochs=...`` on resume take effect from the first resumed
    step; unchanged, the rates are exactly those of the saved run). Load the optimizer first."""
    scheduler.load_state_dict({**state, "base_lrs": list(scheduler.base_lrs)})
    lrs = [
        base_lr * multiplier(scheduler.last_epoch)
        for base_lr, multiplier in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() returns; LambdaLR sets it in step()


def advance_schedule(scheduler: LambdaLR, *, skipped: bool) -> None:
    """``scheduler.step()``. The schedule advances over a skipped step too, on purpose: LambdaLR
    would warn on a skipped first step that the optimizer has not stepped yet."""
    if not skipped:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
