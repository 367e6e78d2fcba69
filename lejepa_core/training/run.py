"""A training run: what ``train`` builds (``Run``), and its checkpoints.

    rank_device -> RunDirectory (run_dir.py: checked, locked) -> open_data -> build_samplers
    (train sampler, fixed validation batches) -> build_run (model, EMA target encoder, AdamW,
    lr schedule, generators; in that order: the order fixes the initial weights)
    -> RunDirectory.create / resume_run -> wrap_model (compile, DDP)

``Run.checkpoint_state`` is everything a bit-exact resume needs; ``Run.load`` restores it.
It also holds ``model_input`` (``lejepa_core.model_input``: observation shape and dtype,
names, env metadata, normalisation statistics, the data file), also written to
``RUN_DIR/model_input.json``: what loading the model needs, without the data.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from lejepa_core import artifacts
from lejepa_core.artifacts import Summary
from lejepa_core.build import build_model, check_memory, model_spec
from lejepa_core.data.augment import window_augment
from lejepa_core.data.prepare import open_data
from lejepa_core.data.sampler import Batch, WindowSampler
from lejepa_core.errors import CheckpointError, TrainingError, UserInputError
from lejepa_core.model_input import ModelInput
from lejepa_core.recipe import Recipe
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training import distributed
from lejepa_core.training.compiled import compile_per_mode
from lejepa_core.training.grad_paths import warn_gradient_paths
from lejepa_core.training.guard import StepCounters, settle
from lejepa_core.training.optim import build_optimizer, load_scheduler_state, warmup_cosine_lr
from lejepa_core.training.recipe_diff import _saved_recipe, recipe_changes
from lejepa_core.training.run_dir import RunDirectory
from lejepa_core.training.runtime import derive_seed, grad_scaler, resolve_device
from lejepa_core.training.step import JEPAModel
from lejepa_core.training.target import has_target_copy, make_ema_copy


def rank_device(name: str) -> torch.device:
    """The device of this process: under torchrun ``cuda:<LOCAL_RANK>``; a bare ``cuda`` is
    pinned to the current CUDA device."""
    device, info = resolve_device(name), distributed.env_info()
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def build_samplers(
    recipe: Recipe,
    data: Any,
    device: torch.device,
    dist_info: distributed.DistInfo | None = None,
) -> tuple[WindowSampler, list[Batch]]:
    """The sampler of the training episodes and the fixed validation batches: ``train.val_windows``
    windows of the held-out episodes (``data.val_fraction`` split by ``data.split_seed``), drawn
    in one draw from a seed of ``data.split_seed``, then cut into batches of at most
    ``train.batch_size`` (memory only: the windows do not depend on the batch size).

    Under DDP every batch is sharded over the ranks (``distributed.shard_rows``); ``validate``
    reduces, so the figures equal one process's (SIGReg's all-reduce sees the whole batch)."""
    d, t = recipe.data, recipe.train
    train_episodes, val_episodes = data.episode_split(d.val_fraction, d.split_seed)
    if len(val_episodes) == 0:
        raise UserInputError(
            "data.val_fraction: no validation episodes (too few episodes in the file)"
        )
    kwargs = dict(context_frames=d.context_frames, horizons=tuple(d.horizons), device=device)
    train_sampler = WindowSampler(
        data, train_episodes, augment=window_augment(d.augment, data), **kwargs
    )
    (windows,) = WindowSampler(data, val_episodes, **kwargs).fixed_batches(
        t.val_windows, 1, derive_seed(d.split_seed, "validation") % (2**31)
    )
    batches = split_batch(windows, t.batch_size)
    if dist_info is not None and dist_info.enabled:
        batches = distributed.shard_batches(
            batches, dist_info, f"train.val_windows {t.val_windows}"
        )
    return train_sampler, [compact(batch) for batch in batches]


def compact(batch: Batch) -> Batch:
    """``batch`` with every tensor copied into storage of its own (offset 0): a compiled
    encoder's validation graph then serves every batch (dynamo specialises on offsets 0 / 1)."""
    fields = attrs.asdict(batch, recurse=False)
    return Batch(**{k: None if v is None else v.clone() for k, v in fields.items()})


def split_batch(batch: Batch, size: int) -> list[Batch]:
    """``batch`` cut into consecutive batches of at most ``size`` windows (the same windows in
    the same order whatever ``size``: the validation sample does not depend on batch_size)."""
    fields = attrs.asdict(batch, recurse=False)  # name -> [N, ...] tensor or None

    def part(value: torch.Tensor | None, start: int) -> torch.Tensor | None:
        return None if value is None else value[start : start + size]

    return [
        Batch(**{name: part(value, start) for name, value in fields.items()})
        for start in range(0, batch.k.shape[0], size)
    ]


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

    def update_best(self, monitored: float, epoch: int, *, min_delta: float) -> bool:
        """True when ``monitored`` is below ``best_val - min_delta`` (it becomes the best, at
        ``epoch``); else one more epoch without improvement."""
        improved = monitored < self.best_val - min_delta
        if improved:
            self.best_val, self.best_epoch, self.epochs_without_improvement = monitored, epoch, 0
        else:
            self.epochs_without_improvement += 1
        return improved


@attrs.define
class Run:
    """Everything ``train`` builds; kept together so checkpoints read and write one object.

    run_dir: where rank 0 writes (the other ranks never do; None on them in a new run).
    """

    recipe: Recipe
    device: torch.device
    dist: distributed.DistInfo
    model: JEPAModel
    target_encoder: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR  # optim.warmup_cosine_lr
    generators: dict[str, torch.Generator]
    state: TrainState
    total_steps: int
    run_dir: Path | None = None
    model_input: ModelInput | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 autocast only (runtime.grad_scaler)
    counters: StepCounters | None = None  # guard.py: what the steps did, on the device

    @property
    def world_batch(self) -> int:
        """Samples per optimisation step over all ranks (``train.batch_size`` is per rank)."""
        return self.recipe.train.batch_size * self.dist.world_size

    @property
    def checkpoints(self) -> Path | None:
        """``<run_dir>/checkpoints``, None when this rank writes nothing."""
        return None if self.run_dir is None else self.run_dir / artifacts.CHECKPOINTS

    def checkpoint_state(self) -> dict[str, Any]:
        settle(self, check=False)  # the device counters into the train state
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
            "model_input": None if self.model_input is None else self.model_input.to_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load(self, state: dict[str, Any], *, path: Path) -> None:
        problem = ckpt.mismatch(self.model, state.get("model"))
        if problem is not None:  # one line, not torch's list of every key
            raise CheckpointError(f"{path}: a checkpoint of another model ({problem})")
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
        load_scheduler_state(self.scheduler, state["scheduler"])
        if state.get("world_size", 1) == self.dist.world_size:
            ckpt.restore_rng_state(state["rng"], self.generators)
        self.state = TrainState(**state["train_state"])
        self.counters = StepCounters.zeros(self.device, self.state.nonfinite_consecutive)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def summary(
        self,
        status: str,
        final_validation: dict[str, float],
        *,
        wall_seconds: float,
        start_step: int,
    ) -> Summary:
        """summary.json of the run as it stands; ``samples_per_s`` over the steps since
        ``start_step`` (this session), ``clip_fraction`` over the steps not skipped."""
        t, state = self.recipe.train, self.state
        settle(self, check=False)
        return Summary(
            status=status,
            step=state.step,
            epochs_completed=state.step // t.steps_per_epoch,
            total_steps=self.total_steps,
            monitor=t.monitor,
            best_val=state.best_val,  # Summary turns a never-finite best into None
            best_epoch=state.best_epoch,
            nonfinite_steps=state.nonfinite_total,
            clip_fraction=state.clipped_total / max(1, state.step - state.nonfinite_total),
            wall_seconds=wall_seconds,
            samples_per_s=(state.step - start_step) * self.world_batch / max(1e-9, wall_seconds),
            device=str(self.device),
            world_size=self.dist.world_size,
            recipe_hash=self.recipe.hash(),
            parameters=sum(p.numel() for p in self.model.parameters()),
            final_validation=final_validation,
        )

    def warn_if_not_finite(self, monitored: float, epoch: int) -> None:
        """A NaN/inf monitored validation figure never counts as best: say so (rank 0)."""
        if not math.isfinite(monitored) and self.dist.is_main:
            print(
                f"warning: validation {self.recipe.train.monitor} is {monitored} at epoch "
                f"{epoch}; best.pt is not updated",
                file=sys.stderr,
            )

    def never_finite_error(self) -> TrainingError | None:
        """The error of a run whose monitored validation figure was never finite (no best.pt
        can exist), None otherwise."""
        if math.isfinite(self.state.best_val):
            return None
        last = self.checkpoints / artifacts.LAST_CHECKPOINT if self.checkpoints else None
        return TrainingError(
            f"validation {self.recipe.train.monitor} was never finite (NaN or inf at every "
            f"epoch), so no best.pt was written; the last weights are in {last or 'no file'}; "
            "check the data and the losses, or lower train.lr"
        )

    def save(self, path: Path) -> None:
        if not self.dist.is_main:
            return
        if not ckpt.all_finite({"model": self.model, "target": self.target_encoder}):
            raise TrainingError(f"refusing to overwrite {path} with non-finite weights")
        ckpt.save_atomic(self.checkpoint_state(), path)


def build_run(
    recipe: Recipe,
    data: Any,
    device: torch.device,
    dist_info: distributed.DistInfo,
    run_dir: Path | None = None,
) -> Run:
    """The model (seeded by ``train.seed``), EMA target encoder, optimizer, schedule and the
    ``sampler`` / ``masker`` generators (seeded per rank) of a fresh run on ``data``."""
    t = recipe.train
    torch.manual_seed(t.seed)
    spec = model_spec(recipe, data)
    model = build_model(recipe, spec).to(device)
    model_input = ModelInput.from_data(data, spec)
    if run_dir is not None and dist_info.is_main:
        model_input.write(run_dir)
    target_encoder = None
    if has_target_copy(recipe.target.mode):
        target_encoder = make_ema_copy(model.context_encoder).eval()
    total_steps = t.epochs * t.steps_per_epoch
    optimizer = build_optimizer(
        [model], lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, device=device
    )
    scheduler = warmup_cosine_lr(
        optimizer,
        warmup_steps=t.warmup_steps,
        total_steps=total_steps,
        min_lr_ratio=t.min_lr_ratio,
    )
    sample_device = data.device
    generators = {
        "sampler": torch.Generator(device=sample_device).manual_seed(
            derive_seed(t.seed, "sampler", dist_info.rank)
        ),
        "masker": torch.Generator(device=device).manual_seed(
            derive_seed(t.seed, "masker", dist_info.rank)
        ),
    }
    return Run(
        recipe=recipe,
        device=device,
        dist=dist_info,
        model=model,
        target_encoder=target_encoder,
        optimizer=optimizer,
        scheduler=scheduler,
        generators=generators,
        state=TrainState(),
        total_steps=total_steps,
        run_dir=run_dir,
        model_input=model_input,
        scaler=grad_scaler(device, t.precision),
        counters=StepCounters.zeros(device),
    )


def start_run(
    recipe: Recipe,
    directory: RunDirectory,
    device: torch.device,
    dist_info: distributed.DistInfo,
    *,
    data: Any = None,
    progress: bool = False,
) -> tuple[Run, WindowSampler, list[Batch]]:
    """Everything before the first step, in order: the data (opened unless given), the memory
    check, the samplers, the run, its directory (created only now) and, when resuming, the
    checkpoint. Returns the run, the training sampler and the validation batches."""
    if data is None:
        data = open_data(recipe, device, is_main=dist_info.is_main, progress=progress)
    check_memory(recipe, model_spec(recipe, data), device)
    sampler, val_batches = build_samplers(recipe, data, device, dist_info)
    run = build_run(recipe, data, device, dist_info)
    warn_gradient_paths(recipe, data, device=device, show=dist_info.is_main)
    run.run_dir = directory.create()
    if run.run_dir is not None and dist_info.is_main:
        run.model_input.write(run.run_dir)
    if directory.resume is not None:
        resume_run(run, run.run_dir)
    return run, sampler, val_batches


def resume_run(run: Run, run_dir: Path) -> None:
    """Load ``<run_dir>/checkpoints/last.pt`` into ``run`` (a warning naming the keys when the
    recipe differs)."""
    path = run_dir / artifacts.CHECKPOINTS / artifacts.LAST_CHECKPOINT
    saved = ckpt.load_checkpoint(path, map_location=run.device)
    run.load(saved, path=path)  # a checkpoint of another model: its one error line, no warning
    if saved["recipe_hash"] != run.recipe.hash():
        changes = recipe_changes(_saved_recipe(saved, run_dir), run.recipe.to_dict())
        print(
            f"warning: resuming {run_dir} with a recipe that differs from its checkpoint's"
            + (f": {', '.join(changes)}" if changes else ""),
            file=sys.stderr,
        )


def wrap_model(run: Run, *, compile: bool, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` (``backend``) the encoders and predictor when asked, one compiled
    instance per mode (``compiled.compile_per_mode``: no recompiles between the training step's
    and validation's modes; state-dict keys unchanged); the module a step calls: ``run.model``,
    DDP-wrapped under torchrun."""
    model = run.model
    if compile:
        compile_per_mode(model.context_encoder, backend=backend)
        compile_per_mode(model.predictor, backend=backend)
        if run.target_encoder is not None:
            compile_per_mode(run.target_encoder, backend=backend)
    if not run.dist.enabled:
        return model
    return DistributedDataParallel(
        model, device_ids=[run.device.index] if run.device.type == "cuda" else None
    )
