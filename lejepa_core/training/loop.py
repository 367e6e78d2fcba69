"""The training loop: one readable function, ``train(recipe)``.

    data (generated if missing) -> train/val episode split -> WindowSampler batches
    -> JEPAModel step (masked context, EMA or shared target, k-conditioned predictor, losses)
    -> skip non-finite steps -> pre-clip gradient norm -> clip -> AdamW -> EMA update
    -> every log.every steps: metrics.jsonl + tensorboardX (rank 0)
    -> every epoch: validation on fixed held-out batches, last/best checkpoints, early stopping

Everything a bit-exact resume needs is in the checkpoint (see ``checkpoint_state``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lejepa_core.data.prepare import open_data
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.errors import TrainingError, UserInputError
from lejepa_core.recipe import Recipe
from lejepa_core.training import distributed
from lejepa_core.training.diagnostics import MetricsLog, RunningMeans, to_float
from lejepa_core.training.run import Run, build_run, prepare_run_dir, resume_run
from lejepa_core.training.runtime import StopFlag, autocast, derive_seed, resolve_device
from lejepa_core.training.target import ema_momentum, ema_update
from lejepa_core.training.validate import validate


@attrs.define
class TrainResult:
    run_dir: Path | None
    status: str  # finished | early_stopped | interrupted | stopped
    step: int
    epoch: int
    summary: dict[str, Any]


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
) -> TrainResult:
    """Train ``recipe``; returns how it ended. ``resume``: a run directory to continue.

    stop_at_step: stop (saving ``last.pt``) once this global step is reached, as if
    interrupted; on_step: called after every optimisation step (tests, tools);
    data: an opened ``TrajectoryData`` to use instead of ``recipe.data.path``.
    """
    torch_device = resolve_device(device or recipe.train.device)
    dist_info = distributed.env_info()
    if dist_info.enabled and torch_device.type == "cuda":
        torch_device = torch.device("cuda", dist_info.local_rank)
    elif torch_device.type == "cuda" and torch_device.index is None:
        torch_device = torch.device("cuda", torch.cuda.current_device())
    dist_info = distributed.setup(torch_device)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    t = recipe.train
    show_progress = recipe.log.progress and dist_info.is_main and sys.stderr.isatty()

    run_dir = prepare_run_dir(recipe, out=out, resume=resume, is_main=dist_info.is_main)

    # data
    if data is None:
        data = open_data(recipe, torch_device, is_main=dist_info.is_main, progress=show_progress)
    train_episodes, val_episodes = data.episode_split(
        recipe.data.val_fraction, recipe.data.split_seed
    )
    if len(val_episodes) == 0:
        raise UserInputError(
            "data.val_fraction: no validation episodes (too few episodes in the file)"
        )
    sampler_kwargs = dict(
        context_frames=recipe.data.context_frames,
        horizons=tuple(recipe.data.horizons),
        device=torch_device,
    )
    train_sampler = WindowSampler(data, train_episodes, **sampler_kwargs)
    val_sampler = WindowSampler(data, val_episodes, **sampler_kwargs)
    val_batches = val_sampler.fixed_batches(
        t.batch_size, t.val_batches, derive_seed(recipe.data.split_seed, "validation") % (2**31)
    )

    # model, target encoder, optimizer
    run = build_run(recipe, data, torch_device, dist_info, run_dir)
    model, target_encoder, total_steps = run.model, run.target_encoder, run.total_steps
    if resume is not None:
        resume_run(run, run_dir)

    # wrappers: compile, DDP
    if compile if compile is not None else t.compile:
        model.context_encoder.compile()
        model.predictor.compile()
        if target_encoder is not None:
            target_encoder.compile()
    step_module: nn.Module = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(
            model, device_ids=[torch_device.index] if torch_device.type == "cuda" else None
        )

    log = MetricsLog(run_dir, tensorboard=recipe.log.tensorboard, enabled=dist_info.is_main)
    result = None
    try:
        with StopFlag() as stop, _progress(show_progress, total_steps, run.state.step) as bar:
            result = _loop(
                run,
                step_module,
                train_sampler,
                val_batches,
                log,
                stop,
                bar,
                run_dir,
                stop_at_step,
                on_step,
            )
    finally:
        log.close()
    distributed.barrier()
    return result


def _loop(
    run: Run,
    step_module: nn.Module,
    sampler: Any,
    val_batches: list[Any],
    log: MetricsLog,
    stop: StopFlag,
    bar: Any,
    run_dir: Path | None,
    stop_at_step: int | None,
    on_step: Callable[[Run], None] | None,
) -> TrainResult:
    recipe, t, state, model = run.recipe, run.recipe.train, run.state, run.model
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = t.grad_clip if t.grad_clip is not None else math.inf
    loss_generator = torch.Generator(device=run.device)
    window = RunningMeans()
    world_batch = t.batch_size * run.dist.world_size
    last_val: dict[str, float] = {}
    status = "finished"
    checkpoints = None if run_dir is None else run_dir / "checkpoints"
    window_start, window_steps = time.perf_counter(), 0
    started = time.perf_counter()
    start_step = state.step
    model.train()

    while state.step < run.total_steps:
        step = state.step
        batch = sampler.sample(t.batch_size, run.generators["sampler"])
        loss_generator.manual_seed(derive_seed(t.seed, "loss", step))
        with autocast(run.device, t.precision):
            step_loss, outputs = step_module(
                batch.context_obs,
                batch.target_obs,
                batch.k,
                target_encoder=run.target_encoder,
                mask_generator=run.generators["masker"],
                loss_generator=loss_generator,
                step=step,
            )
        run.optimizer.zero_grad(set_to_none=True)
        step_loss.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            params, max_norm
        )  # returns the norm before clipping
        bad = ~(torch.isfinite(step_loss.total) & torch.isfinite(grad_norm))
        flags = distributed.any_flag(
            torch.stack([bad.float(), torch.tensor(float(stop.requested), device=bad.device)])
        )
        nonfinite, stop_now = (bool(v) for v in flags.tolist())  # the one host sync per step

        momentum = ema_momentum(
            step,
            base=recipe.target.momentum,
            final=recipe.target.momentum_final,
            total_steps=run.total_steps,
        )
        if nonfinite:  # never reaches the weights
            run.optimizer.zero_grad(set_to_none=True)
            state.nonfinite_consecutive += 1
            state.nonfinite_total += 1
            if state.nonfinite_consecutive >= t.max_nonfinite_steps:
                raise TrainingError(
                    f"{state.nonfinite_consecutive} consecutive non-finite losses or gradients at step {step} "
                    f"(loss {to_float(step_loss.total)}, gradient norm {to_float(grad_norm)}); the last good "
                    f"checkpoint is {checkpoints / 'last.pt' if checkpoints else 'not saved'}. Lower train.lr or check the data."
                )
        else:
            run.optimizer.step()
            if run.target_encoder is not None:
                ema_update(run.target_encoder, model.context_encoder, momentum)
            state.nonfinite_consecutive = 0
            clipped = grad_norm > max_norm
            state.clipped_total += int(
                clipped
            )  # grad_norm is already on the host side after the sync above
            window.add(
                {
                    "loss/total": step_loss.total,
                    **{f"loss/{k}": v for k, v in step_loss.parts.items()},
                    **{f"loss/{k}": v for k, v in step_loss.metrics.items()},
                    "grad_norm": grad_norm,
                    "clip_fraction": clipped.float(),
                }
            )
            if outputs.quantizer_output is not None:
                window.add(
                    {f"quantizer/{k}": v for k, v in outputs.quantizer_output.metrics.items()}
                )
        lr = run.scheduler.lr
        run.scheduler.step()
        state.step += 1
        state.samples_seen += world_batch
        window_steps += 1
        epoch = (state.step - 1) // t.steps_per_epoch  # 0-based epoch this step belongs to

        if state.step % recipe.log.every == 0 or state.step == run.total_steps:
            record = window.pop()
            elapsed = max(1e-9, time.perf_counter() - window_start)
            record.update(
                {
                    "step": state.step,
                    "epoch": epoch,
                    "split": "train",
                    "lr": lr,
                    "ema_momentum": momentum if run.target_encoder is not None else None,
                    "samples_per_s": window_steps * world_batch / elapsed,
                    "nonfinite_steps": state.nonfinite_total,
                }
            )
            log.write({k: v for k, v in record.items() if v is not None})
            window_start, window_steps = time.perf_counter(), 0
            bar(
                completed=state.step,
                epoch=epoch,
                loss=record.get("loss/total", float("nan")),
                rate=record["samples_per_s"],
            )

        if state.step % t.steps_per_epoch == 0:
            last_val = validate(run, val_batches)
            monitored = last_val["err_signal" if t.monitor == "err_signal" else "loss/total"]
            improved = monitored < state.best_val - t.min_delta
            if improved:
                state.best_val, state.best_epoch, state.epochs_without_improvement = (
                    monitored,
                    epoch,
                    0,
                )
            else:
                state.epochs_without_improvement += 1
            log.write(
                {
                    "step": state.step,
                    "epoch": epoch,
                    "split": "val",
                    **last_val,
                    "best": improved,
                    "best_val": state.best_val,
                    "epochs_without_improvement": state.epochs_without_improvement,
                }
            )
            if checkpoints is not None:
                run.save(checkpoints / "last.pt")
                if improved:
                    run.save(checkpoints / "best.pt")
            if (
                t.patience
                and state.epochs_without_improvement >= t.patience
                and state.step < run.total_steps
            ):
                status = "early_stopped"
                break
        if on_step is not None:
            on_step(run)
        if stop_now or (stop_at_step is not None and state.step >= stop_at_step):
            status = "interrupted" if stop_now else "stopped"
            if checkpoints is not None and state.step % t.steps_per_epoch != 0:
                run.save(checkpoints / "last.pt")
            break

    wall = time.perf_counter() - started
    summary = {
        "status": status,
        "step": state.step,
        "epochs_completed": state.step // t.steps_per_epoch,
        "total_steps": run.total_steps,
        "monitor": t.monitor,
        "best_val": state.best_val if math.isfinite(state.best_val) else None,
        "best_epoch": state.best_epoch,
        "nonfinite_steps": state.nonfinite_total,
        "clip_fraction": state.clipped_total / max(1, state.step - state.nonfinite_total),
        "wall_seconds": wall,
        "samples_per_s": (state.step - start_step) * world_batch / max(1e-9, wall),
        "device": str(run.device),
        "world_size": run.dist.world_size,
        "recipe_hash": run.recipe.hash(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_validation": last_val,
    }
    if run_dir is not None and run.dist.is_main:
        (run_dir / "summary.json").write_text(
            json.dumps(summary, indent=2, default=str), encoding="utf-8"
        )
    return TrainResult(
        run_dir=run_dir,
        status=status,
        step=state.step,
        epoch=summary["epochs_completed"],
        summary=summary,
    )


def _progress(enabled: bool, total: int, start: int):
    """The training bar: epoch, step, loss of the last log window, samples/s."""
    from lejepa_core.progress import progress_bar

    return progress_bar(
        enabled,
        total,
        label="train",
        start=start,
        fields={
            "epoch": (0, "epoch {}"),
            "loss": (float("nan"), "loss {:.4f}"),
            "rate": (0.0, "{:.0f} samples/s"),
        },
    )
