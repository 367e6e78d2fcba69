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
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lejepa_core.build import build_model, model_spec
from lejepa_core.data.prepare import open_data
from lejepa_core.errors import CheckpointError, TrainingError, UserInputError
from lejepa_core.recipe import Recipe
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training import distributed
from lejepa_core.training.diagnostics import MetricsLog, RunningMeans, to_float, validation_report
from lejepa_core.training.optim import WarmupCosine, build_optimizer
from lejepa_core.training.runtime import StopFlag, autocast, derive_seed, resolve_device
from lejepa_core.training.step import JEPAModel
from lejepa_core.training.target import ema_momentum, ema_update, make_ema_copy


# ----------------------------------------------------------------------------- set-up helpers
def new_run_dir(recipe: Recipe, out: str | Path | None) -> Path:
    """``--out`` (must not hold a run yet), else ``<runs_dir>/<recipe>-<YYYYmmdd-HHMMSS>``."""
    if out is not None:
        run_dir = Path(out)
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; use --resume {run_dir} to continue it"
            )
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(recipe.log.runs_dir) / f"{recipe.name}-{stamp}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path(recipe.log.runs_dir) / f"{recipe.name}-{stamp}-{suffix}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run_dir


@attrs.define
class TrainState:
    """Counters that travel with the checkpoint."""

    step: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    nonfinite_consecutive: int = 0
    nonfinite_total: int = 0
    clipped_total: int = 0
    samples_seen: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class TrainResult:
    run_dir: Path | None
    status: str  # finished | early_stopped | interrupted | stopped
    step: int
    epoch: int
    summary: dict[str, Any]


# ----------------------------------------------------------------------------- the run
@attrs.define
class Run:
    """Everything ``train`` builds; kept together so checkpoints read and write one object."""

    recipe: Recipe
    device: torch.device
    dist: distributed.DistInfo
    model: JEPAModel
    target_encoder: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    generators: dict[str, torch.Generator]
    state: TrainState
    total_steps: int

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "recipe_hash": self.recipe.hash(),
            "model": self.model.state_dict(),
            "target_encoder": None
            if self.target_encoder is None
            else self.target_encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.capture_rng_state(self.generators),
            "train_state": self.state.to_dict(),
            "world_size": self.dist.world_size,
        }

    def load(self, state: dict[str, Any], *, path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            if self.target_encoder is not None:
                if state.get("target_encoder") is None:
                    raise CheckpointError(
                        f"{path}: the checkpoint has no EMA target encoder (target.mode differs)"
                    )
                self.target_encoder.load_state_dict(state["target_encoder"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: does not match the recipe's model ({str(exc).splitlines()[0]})"
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("world_size", 1) == self.dist.world_size:
            ckpt.restore_rng_state(state["rng"], self.generators)
        self.state = TrainState(**state["train_state"])

    def save(self, path: Path) -> None:
        if not self.dist.is_main:
            return
        if not ckpt.all_finite({"model": self.model, "target": self.target_encoder}):
            raise TrainingError(f"refusing to overwrite {path} with non-finite weights")
        ckpt.save_atomic(self.checkpoint_state(), path)


@torch.no_grad()
def validate(run: Run, batches: list[Any]) -> dict[str, float]:
    """Validation loss (unmasked context, fixed loss seeds) and the diagnostics of
    ``validation_report`` on the fixed held-out batches; quantizer metrics averaged."""
    model, recipe = run.model, run.recipe
    target_encoder = run.target_encoder if run.target_encoder is not None else model.context_encoder
    was_training = model.training
    model.eval()
    losses = RunningMeans()
    quant = RunningMeans()
    collected: dict[str, list[torch.Tensor]] = {
        "prediction": [],
        "target": [],
        "last_context": [],
        "k": [],
    }
    loss_generator = torch.Generator(device=run.device)
    with (
        torch.random.fork_rng(devices=[run.device.index] if run.device.type == "cuda" else []),
        autocast(run.device, recipe.train.precision),
    ):
        for i, batch in enumerate(batches):
            loss_generator.manual_seed(derive_seed(recipe.train.seed, "validation-loss", i))
            step_loss, out = model(
                batch.context_obs,
                batch.target_obs,
                batch.k,
                target_encoder=target_encoder,
                mask_generator=None,
                loss_generator=loss_generator,
                step=run.state.step,
                apply_mask=False,
            )
            losses.add(
                {
                    "loss/total": step_loss.total,
                    **{f"loss/{k}": v for k, v in step_loss.parts.items()},
                }
            )
            if out.quantizer_output is not None:
                quant.add({f"quantizer/{k}": v for k, v in out.quantizer_output.metrics.items()})
            collected["last_context"].append(out.context[:, -1])
            collected["prediction"].append(out.prediction)
            collected["target"].append(out.target)
            collected["k"].append(batch.k)
    model.train(was_training)
    cat = {key: torch.cat(values) for key, values in collected.items()}
    report = losses.pop()
    report.update(quant.pop())
    report.update(validation_report(horizons=tuple(recipe.data.horizons), **cat))
    return report


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

    # run directory (rank 0 writes; other ranks never touch it)
    run_dir: Path | None = None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise CheckpointError(f"{run_dir}: no checkpoints/last.pt to resume from")
    elif dist_info.is_main:
        run_dir = new_run_dir(recipe, out)
    if dist_info.is_main and resume is None:
        (run_dir / "resolved_recipe.toml").write_text(recipe.to_toml(), encoding="utf-8")

    # data
    if data is None:
        data = open_data(recipe, torch_device, is_main=dist_info.is_main, progress=show_progress)
    from lejepa_core.data.sampler import WindowSampler

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
    torch.manual_seed(t.seed)
    model = build_model(recipe, model_spec(recipe, data)).to(torch_device)
    target_encoder = None
    if recipe.target.mode == "ema":
        target_encoder = make_ema_copy(model.context_encoder).eval()
    total_steps = t.epochs * t.steps_per_epoch
    optimizer = build_optimizer(
        [model], lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, device=torch_device
    )
    scheduler = WarmupCosine(
        optimizer,
        base_lr=t.lr,
        warmup_steps=t.warmup_steps,
        total_steps=total_steps,
        min_lr_ratio=t.min_lr_ratio,
    )
    sample_device = data.device
    generators = {
        "sampler": torch.Generator(device=sample_device).manual_seed(
            derive_seed(t.seed, "sampler", dist_info.rank)
        ),
        "masker": torch.Generator(device=torch_device).manual_seed(
            derive_seed(t.seed, "masker", dist_info.rank)
        ),
    }
    run = Run(
        recipe=recipe,
        device=torch_device,
        dist=dist_info,
        model=model,
        target_encoder=target_encoder,
        optimizer=optimizer,
        scheduler=scheduler,
        generators=generators,
        state=TrainState(),
        total_steps=total_steps,
    )
    if resume is not None:
        path = run_dir / "checkpoints" / "last.pt"
        saved = ckpt.load_checkpoint(path, map_location=torch_device)
        if saved["recipe_hash"] != recipe.hash():
            print(
                f"warning: resuming {run_dir} with a recipe that differs from its checkpoint's",
                file=sys.stderr,
            )
        run.load(saved, path=path)

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
