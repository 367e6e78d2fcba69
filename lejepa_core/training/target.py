"""The target encoder: an exponential moving average (EMA) of the context encoder, the
context encoder itself ("shared" mode, LeJEPA style: gradients flow through both views), or
a frozen copy of the context encoder at initialisation ("frozen": never updated; with the
``identity`` encoder the targets are the observations themselves, e.g. embeddings computed
elsewhere, docs/embeddings.md).

EMA update, per parameter: ``target <- momentum * target + (1 - momentum) * online``;
buffers (e.g. batch-norm statistics) are copied. The momentum is constant, or follows a
cosine from ``momentum`` at step 0 to ``momentum_final`` at the last step.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

TARGET_COPY_MODES = ("ema", "frozen")
"""``target.mode`` values with a target encoder of its own (a copy of the context encoder)."""


def has_target_copy(mode: str) -> bool:
    """True when ``target.mode`` keeps a separate target encoder (``ema``, ``frozen``)."""
    return mode in TARGET_COPY_MODES


def ema_momentum(step: int, *, base: float, final: float | None, total_steps: int) -> float:
    """Momentum used by the update after optimisation ``step``: constant ``base``, or
    ``final - (final - base) * (cos(pi * step / total_steps) + 1) / 2`` when ``final`` is set."""
    if final is None:
        return base
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def make_ema_copy(encoder: nn.Module) -> nn.Module:
    """A frozen deep copy of ``encoder`` (no gradients, train/eval mode follows the caller)."""
    target = copy.deepcopy(encoder)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(
    target: nn.Module, online: nn.Module, momentum: float, apply: torch.Tensor | None = None
) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter; buffers
    copied. Fused ``_foreach`` kernels over all parameters.

    apply: a 0-d bool device tensor; when False the update is a no-op (weight 0, buffers kept),
    decided on the device without a host sync (a skipped non-finite step)."""
    target_params = [p for p in target.parameters()]
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError(
            f"ema_update: {len(target_params)} target vs {len(online_params)} online parameters"
        )
    if target_params and apply is None:
        torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
    elif target_params:
        # target + w * (online - target), w = 1 - momentum, or 0 when not applied: a 0-d
        # device tensor (``_foreach_lerp_`` would read a tensor weight on the host)
        weight = torch.where(apply, 1.0 - momentum, 0.0).to(target_params[0].dtype)
        steps = torch._foreach_sub(online_params, target_params)
        torch._foreach_mul_(steps, weight)
        torch._foreach_add_(target_params, steps)
    for t_buf, o_buf in zip(target.buffers(), online.buffers(), strict=True):
        t_buf.copy_(o_buf if apply is None else torch.where(apply, o_buf, t_buf))
