"""AdamW with sensible weight-decay groups and a linear-warm-up cosine learning-rate schedule.

No weight decay on biases, normalisation parameters (every parameter with fewer than two
dimensions) and embeddings (``nn.Embedding`` weights: time embeddings, codebooks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


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
    """AdamW over ``modules`` (fused kernels on CUDA)."""
    if len(betas) != 2:
        raise ValueError(f"train.betas: expected two values, got {tuple(betas)}")
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(
        parameter_groups(modules, weight_decay), lr=lr, betas=tuple(betas), **kwargs
    )


class WarmupCosine:
    """Sets every group's ``lr`` to ``base_lr * warmup_cosine(step)``; state is the step."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float,
    ):
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        return self.base_lr * warmup_cosine(
            step,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_lr_ratio=self.min_lr_ratio,
        )

    @property
    def lr(self) -> float:
        """Learning rate of the next optimisation step."""
        return self.lr_at(self.step_count)

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "min_lr_ratio": self.min_lr_ratio,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
