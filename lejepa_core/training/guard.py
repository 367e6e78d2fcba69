"""The non-finite guard on the device: no host sync per step.

A step whose loss or pre-clip gradient norm is NaN/inf (on any rank) changes nothing: AdamW
(fused) skips it through its ``found_inf`` input (weights, moments and step counters bitwise
unchanged), the EMA update gets weight 0, and a GradScaler (fp16) backs off. What the host needs
to know about the steps (how many were skipped or clipped, the longest run of consecutive
skipped steps, a stop request on another rank) is kept in 0-d device tensors (``StepCounters``)
and read once at log steps, epoch ends and checkpoints (``settle``), where
``train.max_nonfinite_steps`` consecutive skipped steps raise ``TrainingError``.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from lejepa_core import artifacts
from lejepa_core.errors import TrainingError


def _zero(device: torch.device, dtype: torch.dtype = torch.int64, value: float = 0) -> torch.Tensor:
    return torch.full((), value, dtype=dtype, device=device)


@attrs.define
class StepCounters:
    """0-d device tensors updated every step without a host sync, read by ``read``.

    skipped, clipped: steps since the last read; streak: the current run of consecutive skipped
    steps (carried over reads); longest: the longest run since the last read; limit_step: the
    first step at which a run reached the limit (-1: none); bad_loss, bad_norm: the loss and
    gradient norm of the latest skipped step (for the error message); stop: the all-reduced
    stop flag of the latest step (DDP only).
    """

    device: torch.device
    skipped: torch.Tensor
    clipped: torch.Tensor
    streak: torch.Tensor
    longest: torch.Tensor
    limit_step: torch.Tensor
    bad_loss: torch.Tensor
    bad_norm: torch.Tensor
    stop: torch.Tensor | None = None

    @classmethod
    def zeros(cls, device: torch.device, streak: int = 0) -> StepCounters:
        return cls(
            device=device,
            skipped=_zero(device),
            clipped=_zero(device),
            streak=_zero(device, value=streak),
            longest=_zero(device, value=streak),
            limit_step=_zero(device, value=-1),
            bad_loss=_zero(device, torch.float32),
            bad_norm=_zero(device, torch.float32),
        )

    @torch.no_grad()
    def update(
        self,
        bad: torch.Tensor,
        clipped: torch.Tensor,
        *,
        step: int,
        limit: int,
        loss: torch.Tensor,
        grad_norm: torch.Tensor,
    ) -> None:
        """One step: bad, clipped 0-d bool; step: its 0-based index; limit:
        ``train.max_nonfinite_steps``; loss, grad_norm: its 0-d figures."""
        self.skipped += bad
        self.clipped += clipped & ~bad
        self.streak = torch.where(bad, self.streak + 1, 0)
        self.longest = torch.maximum(self.longest, self.streak)
        reached = (self.streak >= limit) & (self.limit_step < 0)
        self.limit_step = torch.where(reached, step, self.limit_step)
        self.bad_loss = torch.where(bad, loss.detach().float(), self.bad_loss)
        self.bad_norm = torch.where(bad, grad_norm.detach().float(), self.bad_norm)

    def read(self) -> dict[str, Any]:
        """The counters on the host (one sync) and a reset of those counted since the last read."""
        parts = [self.skipped, self.clipped, self.streak, self.longest, self.limit_step]
        parts += [(self.stop > 0).long() if self.stop is not None else _zero(self.device)]
        values = torch.stack(parts).tolist()
        loss, norm = torch.stack([self.bad_loss, self.bad_norm]).tolist()
        skipped, clipped, streak, longest, limit_step, stop = values
        self.skipped.zero_()
        self.clipped.zero_()
        self.longest = self.streak.clone()
        return {
            "skipped": skipped,
            "clipped": clipped,
            "streak": streak,
            "longest": longest,
            "limit_step": limit_step,
            "stop": bool(stop),
            "loss": loss,
            "grad_norm": norm,
        }


def settle(run: Any, *, check: bool = True) -> dict[str, Any]:
    """Fold ``run.counters`` into ``run.state`` (one host sync) and return what was read.

    check: raise ``TrainingError`` when ``train.max_nonfinite_steps`` consecutive steps were
    skipped since the last read (the weights never saw them: the last checkpoint is good)."""
    counters, state = run.counters, run.state
    if counters is None:
        return {"stop": False}
    read = counters.read()
    state.nonfinite_total += read["skipped"]
    state.clipped_total += read["clipped"]
    state.nonfinite_consecutive = read["streak"]
    limit = run.recipe.train.max_nonfinite_steps
    if check and read["limit_step"] >= 0:
        counters.limit_step.fill_(-1)
        last = run.checkpoints / artifacts.LAST_CHECKPOINT if run.checkpoints else None
        last = last if last is not None and last.is_file() else None  # none written yet
        raise TrainingError(
            f"{limit} consecutive non-finite losses or gradients at step {read['limit_step']} "
            f"(loss {read['loss']}, gradient norm {read['grad_norm']}); the last good "
            f"checkpoint is {last or 'none (no epoch has ended yet)'}. Lower train.lr or check the data."
        )
    return read


def masked_step(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``bad`` (0-d bool), without reading ``bad`` on the host when
    the optimizer is fused (its ``found_inf`` input: the kernel leaves weights, moments and the
    step counters as they were); other optimizers read it (one host sync)."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad.float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(bad):
        optimizer.step()
