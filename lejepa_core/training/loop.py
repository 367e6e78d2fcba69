"""The training loop: ``train(recipe)`` builds the run, then every step calls, in order,

    train_step:   WindowSampler batch -> JEPAModel forward (masked context, EMA or shared target,
                  k-conditioned predictor, losses) -> backward -> pre-clip gradient norm -> clip
                  -> AdamW and EMA update, both skipped on the device for a non-finite step
                  (guard.py) -> lr schedule
    log_window:   every log.every steps: the ``train`` record of metrics.jsonl + tensorboardX
                  (rank 0) and the progress bar
    end_of_epoch: every steps_per_epoch steps: validation on fixed held-out windows, last/best
                  checkpoints, early stopping (rank 0's figure decides on every rank)
    log_validation: every log.diagnostics_every steps between epoch ends: the validation record
    health:       every record above goes through the health checks (warnings, stop rules)

and ends with ``summary.json``. Where the rest lives: ``run.py`` (Run, TrainState, checkpoint
contents, run directory), ``validate.py``, ``step.py`` (the differentiable step), ``optim.py``
(AdamW, schedule), ``target.py`` (EMA), ``diagnostics.py`` (figures, log window,
metrics.jsonl), ``health.py`` (health checks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lejepa_core import artifacts
from lejepa_core.data import curriculum
from lejepa_core.data.sampler import Batch, WindowSampler
from lejepa_core.interfaces import StepOutputs
from lejepa_core.progress import Progress
from lejepa_core.recipe import Recipe
from lejepa_core.training import console, distributed
from lejepa_core.training.diagnostics import LogWindow, MetricsLog, effective_weights
from lejepa_core.training.grad_paths import gradient_shares
from lejepa_core.training.guard import masked_step, settle
from lejepa_core.training.health import read_records, run_monitor
from lejepa_core.training.optim import advance_schedule
from lejepa_core.training.run import (
    Run,
    rank_device,
    start_run,
    wrap_model,
)
from lejepa_core.training.run_dir import RunDirectory
from lejepa_core.training.runtime import StopFlag, autocast, derive_seed
from lejepa_core.training.step import StepLoss
from lejepa_core.training.target import ema_momentum, ema_update
from lejepa_core.training.validate import log_validation, validate
from lejepa_core.training.weighting import loss_weight_metrics, training_parameters


@attrs.define
class TrainResult:
    """How ``train`` ended (on every rank; only rank 0 wrote ``run_dir``)."""

    run_dir: Path | None
    status: str  # finished | early_stopped | interrupted | stopped | health_stopped
    step: int
    epoch: int
    summary: dict[str, Any]  # summary.json (``Summary.to_dict()``)
    signal: str = ""  # "SIGINT" / "SIGTERM" when a signal interrupted it (on this rank)


@attrs.define
class StepResult:
    """What ``train_step`` reports: the learning rate and EMA momentum it used, whether a stop
    was requested (on any rank; under DDP known at log steps), its figures for the log window
    (0-d tensors: no host sync; None when the host knows the step was skipped) and ``applied``
    (0-d bool on the device: the step reached the weights)."""

    lr: float
    momentum: float
    stop_requested: bool
    metrics: dict[str, Any] | None
    applied: torch.Tensor | None = None


# ----------------------------------------------------------------------------- train
def train(
    recipe: Recipe,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    device: str | None = None,
    compile: bool | None = None,
    stop_at_step: int | None = None,
    on_step: Callable[[Run], None] | None = None,
    data: Any = None,
    force: bool = False,
) -> TrainResult:
    """Train ``recipe``; returns how it ended. ``resume``: a run directory to continue;
    force: write into a non-empty ``out`` that holds no run (``run_dir.py``).

    stop_at_step: stop (saving ``last.pt``) once this global step is reached, as if
    interrupted; on_step: called after every optimisation step (tests, tools);
    data: an opened ``TrajectoryData`` to use instead of ``recipe.data.path``.
    Under torchrun the process group is created here and destroyed on the way out.
    """
    torch_device = rank_device(device or recipe.train.device)
    with distributed.process_group(torch_device) as dist_info:
        if recipe.train.threads:
            torch.set_num_threads(recipe.train.threads)
        show_progress = recipe.log.progress and dist_info.is_main  # plain lines off a TTY
        directory = RunDirectory(
            recipe, out=out, resume=resume, force=force, is_main=dist_info.is_main
        )
        with directory.starting():  # the directory is created (and locked) once all is built
            run, sampler, val_batches = start_run(
                recipe, directory, torch_device, dist_info, data=data, progress=show_progress
            )
            sampler = curriculum.wrap(sampler, recipe.data, lambda: run.state.step)
            step_module = wrap_model(
                run, compile=compile if compile is not None else recipe.train.compile
            )
        log = MetricsLog(
            run.run_dir,
            tensorboard=recipe.log.tensorboard,
            enabled=dist_info.is_main,
            resume_step=run.state.step if resume is not None else None,
            recipe=recipe,
        )
        try:
            with (
                StopFlag() as stop,
                console.progress(show_progress, run.total_steps, run.state.step) as bar,
            ):
                result = _loop(
                    run, step_module, sampler, val_batches, log, stop, bar, stop_at_step, on_step
                )
        finally:
            log.close()
            directory.release()
        distributed.barrier()
        return result


def _loop(
    run: Run,
    step_module: nn.Module,
    sampler: WindowSampler,
    val_batches: list[Batch],
    log: MetricsLog,
    stop: StopFlag,
    bar: Progress,
    stop_at_step: int | None,
    on_step: Callable[[Run], None] | None,
) -> TrainResult:
    t, state = run.recipe.train, run.state
    params = training_parameters(run.model)  # clipped (the loss weighting's are not)
    loss_generator = torch.Generator(device=run.device)
    window = LogWindow()
    history = read_records(run.run_dir, up_to_step=state.step) if state.step else []
    warn = console.warner(bar) if run.dist.is_main else None
    health = run_monitor(run.recipe, warn=warn, agree=distributed.broadcast_object, history=history)
    diagnostics_every = run.recipe.log.diagnostics_every or t.steps_per_epoch
    last_val: dict[str, float] = {}
    status = "finished"
    started, start_step = time.perf_counter(), state.step
    run.model.train()

    while state.step < run.total_steps:
        batch = sampler.sample(t.batch_size, run.generators["sampler"])
        result = train_step(run, step_module, batch, params, loss_generator, stop)
        window.add(curriculum.with_competence(result.metrics, sampler), result.applied)
        epoch = (state.step - 1) // t.steps_per_epoch  # 0-based epoch this step belongs to

        if state.step % run.recipe.log.every == 0 or state.step == run.total_steps:
            health.observe(log_window(run, window, result, epoch, log, bar))
        if state.step % t.steps_per_epoch == 0:
            last_val, stop_early = end_of_epoch(run, val_batches, epoch, log)
            bar.note(console.epoch_line(run, epoch, last_val))
            health.observe({**last_val, artifacts.STEP: state.step, artifacts.SPLIT: "val"})
            if stop_early:
                status = "early_stopped"
                break
        elif state.step % diagnostics_every == 0:
            health.observe(log_validation(run, val_batches, epoch, log))
        if on_step is not None:
            on_step(run)
        at_stop_step = stop_at_step is not None and state.step >= stop_at_step
        if result.stop_requested or health.stopped or at_stop_step:
            status = "interrupted" if result.stop_requested else "stopped"
            status = "health_stopped" if health.stopped else status
            if run.checkpoints is not None and state.step % t.steps_per_epoch != 0:
                run.save(run.checkpoints / artifacts.LAST_CHECKPOINT)
            break

    summary = run.summary(
        status, last_val, wall_seconds=time.perf_counter() - started, start_step=start_step
    )
    summary.health = health.summary()
    if run.run_dir is not None and run.dist.is_main:
        summary.write(run.run_dir)
    if last_val and (never_finite := run.never_finite_error()) is not None:  # no best.pt
        raise never_finite
    return TrainResult(
        run_dir=run.run_dir,
        status=status,
        step=state.step,
        epoch=summary.epochs_completed,
        summary=summary.to_dict(),
        signal=stop.signal_name if status == "interrupted" else "",
    )


# ----------------------------------------------------------------------------- the steps
def train_step(
    run: Run,
    step_module: nn.Module,
    batch: Batch,
    params: list[nn.Parameter],
    loss_generator: torch.Generator,
    stop: StopFlag,
) -> StepResult:
    """One optimisation step on ``batch`` (context_obs [B, W, *obs], target_obs [B, *obs],
    k [B]); advances ``run.state.step`` and the learning-rate schedule.

    forward -> backward (scaled under fp16) -> global gradient norm before clipping -> clip to
    ``train.grad_clip`` -> AdamW -> EMA update. A step whose loss or norm is NaN/inf on any rank
    changes nothing (``guard.py``: decided on the device, no host sync) and is counted; the
    counters are read at log steps and epoch ends (``settle``: ``train.max_nonfinite_steps`` in a
    row raise ``TrainingError``). ``step_module``: ``run.model`` or its DDP wrapper; params: the
    model's trainable parameters. No host sync outside those steps.
    """
    recipe, t, state = run.recipe, run.recipe.train, run.state
    step, scaler = state.step, run.scaler
    max_norm = t.grad_clip if t.grad_clip is not None else math.inf
    loss_generator.manual_seed(derive_seed(t.seed, "loss", step))
    run.optimizer.zero_grad(set_to_none=True)
    log_step = (step + 1) % recipe.log.every == 0 or step + 1 == run.total_steps
    # train.accumulate: micro-batches, each loss weighted by its share of the windows; DDP
    # syncs gradients on the last only; metrics and gradient shares from the last
    parts = distributed.shard_all(batch, min(t.accumulate, batch.k.shape[0]))
    total = 0.0
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        with distributed.no_sync(step_module, skip=last), autocast(run.device, t.precision):
            step_loss, outputs = step_module(
                part.context_obs,
                part.target_obs,
                part.k,
                target_encoder=run.target_encoder,
                mask_generator=run.generators["masker"],
                loss_generator=loss_generator,
                step=step,
                actions=part.actions,
                action_mask=part.action_mask,
            )
        shares = gradient_shares(step_loss, run.model) if log_step and last else {}
        weight = part.k.shape[0] / batch.k.shape[0]
        scaled = step_loss.total * weight
        with distributed.no_sync(step_module, skip=last):
            (scaled if scaler is None else scaler.scale(scaled)).backward()
        total = total + weight * step_loss.total.detach()  # the whole batch's loss
    if scaler is not None:
        scaler.unscale_(run.optimizer)  # the norm and the clipping see true gradients
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm before clipping
    bad = ~(torch.isfinite(total) & torch.isfinite(grad_norm))
    clipped = grad_norm > max_norm
    # a fill, not a host -> device copy of a Python float
    stop_flag = torch.full((), float(stop.requested), device=bad.device)
    flags = distributed.any_flag(torch.stack([bad.float(), stop_flag]))  # no host read
    bad, ok = flags[0] > 0, flags[0] == 0

    momentum = ema_momentum(
        step,
        base=recipe.target.momentum,
        final=recipe.target.momentum_final,
        total_steps=run.total_steps,
    )
    lr = run.scheduler.get_last_lr()[0]  # the lr of this step
    masked_step(run.optimizer, bad)  # a skipped step never reaches the weights
    if scaler is not None:
        scaler.update()  # backs off after an overflow, grows after growth_interval good steps
    if run.target_encoder is not None and run.recipe.target.mode == "ema":  # not "frozen"
        ema_update(run.target_encoder, run.model.context_encoder, momentum, apply=ok)
    run.counters.update(
        bad, clipped, step=step, limit=t.max_nonfinite_steps, loss=total, grad_norm=grad_norm
    )
    run.counters.stop = flags[1] if run.dist.enabled else None
    metrics = {**_step_metrics(step_loss, outputs, grad_norm, clipped), **shares}
    weights = run.model.current_weights()  # adaptive under train.loss_weighting
    metrics.update(effective_weights(run.model.labels, weights, step_loss.metrics))
    metrics.update(loss_weight_metrics(run.model.labels, run.model.loss_weighting))
    advance_schedule(run.scheduler, skipped=True)  # no warning if a fallback did not step
    state.step += 1
    state.samples_seen += run.world_batch
    stop_now = stop.requested and not run.dist.enabled  # under DDP: agreed at the next read
    if log_step or state.step % t.steps_per_epoch == 0:  # the host learns what the steps did
        read = settle(run)
        stop_now = stop_now or read["stop"]
        metrics = None if read["streak"] > 0 else metrics  # this step was skipped
    return StepResult(
        lr=lr, momentum=momentum, stop_requested=stop_now, metrics=metrics, applied=ok
    )


def _step_metrics(
    step_loss: StepLoss, outputs: StepOutputs, grad_norm: torch.Tensor, clipped: torch.Tensor
) -> dict[str, Any]:
    """The figures of a step for the log window (0-d tensors or floats, no host sync)."""
    metrics = {
        artifacts.LOSS_TOTAL: step_loss.total,
        **{f"{artifacts.LOSS_PREFIX}{k}": v for k, v in step_loss.parts.items()},
        **{f"{artifacts.LOSS_PREFIX}{k}": v for k, v in step_loss.metrics.items()},
        artifacts.GRAD_NORM: grad_norm,
        artifacts.CLIP_FRACTION: clipped.float(),
    }
    if outputs.quantizer_output is not None:
        quantizer = outputs.quantizer_output.metrics
        metrics.update({f"{artifacts.QUANTIZER_PREFIX}{k}": v for k, v in quantizer.items()})
    return metrics


def log_window(
    run: Run,
    window: LogWindow,
    last: StepResult,
    epoch: int,
    log: MetricsLog,
    bar: Callable[..., None],
) -> dict[str, Any]:
    """The ``train`` record of the steps in ``window`` (means, skipped steps excluded; ``lr``
    and ``ema_momentum`` of ``last``, the latest step) to metrics.jsonl / tensorboardX, and the
    progress bar; then ``window`` starts again. Returns the record."""
    state = run.state
    record = window.means.pop()
    elapsed = max(1e-9, time.perf_counter() - window.started)
    record.update(
        {
            artifacts.STEP: state.step,
            artifacts.EPOCH: epoch,
            artifacts.SPLIT: "train",
            artifacts.LR: last.lr,
            artifacts.EMA_MOMENTUM: last.momentum if run.target_encoder is not None else None,
            artifacts.SAMPLES_PER_S: window.steps * run.world_batch / elapsed,
            artifacts.NONFINITE_STEPS: state.nonfinite_total,
        }
    )
    log.write({k: v for k, v in record.items() if v is not None})
    window.steps, window.started = 0, time.perf_counter()
    bar(
        completed=state.step,
        epoch=epoch,
        loss=record.get(artifacts.LOSS_TOTAL, float("nan")),
        rate=record[artifacts.SAMPLES_PER_S],
    )
    return record


def end_of_epoch(
    run: Run, val_batches: list[Batch], epoch: int, log: MetricsLog
) -> tuple[dict[str, float], bool]:
    """Validate, write the ``val`` record, ``last.pt`` and, when the monitored figure improved,
    ``best.pt``. Returns the validation figures and whether to stop early (``train.patience``
    epochs without improvement, before the last step).

    Rank 0's monitored figure is broadcast, so every rank takes the same decision (ranks that
    stopped at different steps would hang in the next collective).
    """
    t, state = run.recipe.train, run.state
    report = validate(run, val_batches)
    monitored = distributed.broadcast_object(report[artifacts.monitored_key(t.monitor)])
    improved = state.update_best(monitored, epoch, min_delta=t.min_delta)
    run.warn_if_not_finite(monitored, epoch)
    log.write(
        {
            artifacts.STEP: state.step,
            artifacts.EPOCH: epoch,
            artifacts.SPLIT: "val",
            **report,
            artifacts.BEST: improved,
            artifacts.BEST_VAL: state.best_val,
            artifacts.EPOCHS_WITHOUT_IMPROVEMENT: state.epochs_without_improvement,
        }
    )
    if run.checkpoints is not None:
        run.save(run.checkpoints / artifacts.LAST_CHECKPOINT)
        if improved:
            run.save(run.checkpoints / artifacts.BEST_CHECKPOINT)
    stop = (
        t.patience > 0
        and state.epochs_without_improvement >= t.patience
        and state.step < run.total_steps
    )
    return report, stop
