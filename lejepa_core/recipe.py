"""TOML recipes -> validated attrs classes.

A recipe has one table per component and a few plain tables::

    [model]      latent_dim
    [encoder]    name = "mlp", then that encoder's parameters
    [predictor]  name + parameters
    [quantizer]  optional: name + parameters
    [masker]     name + parameters (default: "none")
    [[losses]]   name, weight, optional label, then that loss's parameters
    [target]     mode = "ema" | "shared", momentum, momentum_final
    [data] [train] [log] [health]

Loading is two-phase for component tables: read ``name``, look the component up in the
registry, then structure the remaining keys into that component's ``Params`` class. Every
problem is collected and reported as one ``path: message`` line. Components are chosen by
registered name only, never by import path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import attrs

from lejepa_core.data import curriculum_keys
from lejepa_core.errors import RecipeError, UnknownComponentError
from lejepa_core.overrides import apply_overrides
from lejepa_core.params import (
    below_one,
    each,
    file_path,
    in_range,
    non_empty,
    non_negative,
    one_of,
    param,
    positive,
    registered_env_id,
)
from lejepa_core.recipe_file import read_recipe_data, replaced_keys, tomllib  # noqa: F401
from lejepa_core.structure import structure_attrs, structure_value, unstructure
from lejepa_core.training.health import HealthConfig  # next to the checks that read it
from lejepa_core.training.weighting_mode import loss_weighting_mode


@attrs.frozen(kw_only=True)
class ComponentConfig:
    """A chosen component: registered ``name`` and an instance of its ``Params`` class."""

    name: str
    params: Any


@attrs.frozen(kw_only=True)
class LossConfig(ComponentConfig):
    """One ``[[losses]]`` entry; ``label`` names it in logs (default: ``name``)."""

    weight: float = 1.0
    label: str = ""


@attrs.frozen(kw_only=True)
class ModelConfig:
    latent_dim: int = param(64, "dimension D of every latent", positive)
    latent_grid: tuple[int, ...] = param(
        (),
        "[rows, cols]: the latent is a grid of latent_dim / (rows * cols) features per location "
        "(row-major, channels last; docs/grids.md); [] (default): one vector",
        each(positive),
    )
    latent_patch: int = param(
        1, "observation cells per side of one latent_grid location, from the top-left", positive
    )

    def __attrs_post_init__(self) -> None:
        if self.latent_grid:
            if len(self.latent_grid) != 2:
                raise ValueError(
                    f"latent_grid: expected [rows, cols] or [], got {list(self.latent_grid)}"
                )
            rows, cols = self.latent_grid
            if self.latent_dim % (rows * cols):
                raise ValueError(
                    f"latent_dim: expected a multiple of latent_grid's {rows} x {cols} = "
                    f"{rows * cols} locations, got {self.latent_dim}"
                )


@attrs.frozen(kw_only=True)
class TargetConfig:
    mode: Literal["ema", "shared", "frozen"] = param(
        "ema",
        "'ema': a slowly updated copy of the context encoder; 'shared': the context "
        "encoder itself, gradients flowing (LeJEPA style, SIGReg prevents collapse); "
        "'frozen': the context encoder's initial copy, never updated (embedding data)",
    )
    momentum: float = param(0.995, "EMA momentum at the start of training", in_range(0.0, 1.0))
    momentum_final: float | None = param(
        None, "if set, momentum follows a cosine schedule to this value", in_range(0.0, 1.0)
    )


@attrs.frozen(kw_only=True)
class DataConfig:
    path: str = param(
        "data/bouncing_balls.h5",
        "HDF5 trajectory file (relative to the working directory); generated first if missing",
        file_path,
    )
    env_id: str = param(
        "lejepa/BouncingBalls-v0",
        "gymnasium id used to generate the file when it is missing",
        registered_env_id,
    )
    env_kwargs: dict[str, Any] = param({}, "keyword arguments of the environment")
    episodes: int = param(200, "episodes to generate when the file is missing", positive)
    steps: int = param(100, "steps per generated episode", positive)
    seed: int = param(0, "generation seed", non_negative)
    workers: int = param(1, "generation worker processes", positive)
    policy: str = param("auto", "generated actions", one_of(("auto", "random", "noop")))
    order: Literal["seeded", "sweep"] = param(
        "seeded", "seeded or sweep episode resets (docs/data.md)"
    )
    context_frames: int = param(4, "W: context frames fed to the predictor", positive)
    horizons: tuple[int, ...] = param(
        (1, 2, 4, 8, 10), "k values, drawn uniformly per sample", non_empty, each(positive)
    )
    val_fraction: float = param(
        0.1, "fraction of episodes held out for validation", in_range(0.0, 0.9)
    )
    split_seed: int = param(0, "seed of the train/validation episode split", non_negative)
    normalize: bool = param(
        True, "standardise float observations with the training episodes' per-feature mean/std"
    )
    on_device: Literal["auto", "always", "never"] = param(
        "auto", "hold the dataset on the training device ('auto': when it fits)"
    )
    augment: tuple[str, ...] = param(
        (),
        "transforms of each training window of integer grids: 'colours' (permute the values "
        "other than pad and background), 'dihedral' (rotate / reflect the content region); "
        "[] (default): none (docs/data.md)",
        each(one_of(("colours", "dihedral"))),
    )
    curriculum: Literal["none", "competence"] = curriculum_keys.curriculum()
    curriculum_start: float = curriculum_keys.curriculum_start()
    curriculum_steps: int = curriculum_keys.curriculum_steps()


@attrs.frozen(kw_only=True)
class TrainConfig:
    seed: int = param(0, "seed of weights, sampling and masking", non_negative)
    epochs: int = param(20, "maximum number of epochs", positive)
    steps_per_epoch: int = param(200, "optimisation steps per epoch", positive)
    batch_size: int = param(256, "samples per step (per rank under DDP)", positive)
    accumulate: int = param(
        1, "micro-batches per step: batch_size split in N forward/backward passes", positive
    )
    lr: float = param(1e-3, "peak learning rate (AdamW)", positive)
    weight_decay: float = param(0.01, "AdamW weight decay", non_negative)
    betas: tuple[float, float] = param((0.9, 0.999), "AdamW betas", each(below_one))
    warmup_steps: int = param(200, "linear warm-up steps before the cosine decay", non_negative)
    min_lr_ratio: float = param(0.05, "final learning rate as a fraction of lr", in_range(0.0, 1.0))
    grad_clip: float | None = param(
        1.0, "clip the global gradient norm to this value (none: no clipping)", positive
    )
    val_windows: int = param(
        4096,
        "validation windows of held-out episodes, the same whatever batch_size (drawn once with "
        "a fixed seed, validated in chunks of at most batch_size)",
        positive,
    )
    patience: int = param(
        5, "epochs without improvement before early stopping (0: never stop early)", non_negative
    )
    monitor: Literal["err_signal", "loss"] = param(
        "err_signal",
        "validation figure for best.pt and early stopping: 'err_signal' (scale-free "
        "error-to-signal ratio of the predictions) or 'loss' (total loss, not comparable across "
        "epochs when the latents change scale)",
    )
    min_delta: float = param(
        1e-4,
        "minimum decrease of the monitored validation figure that counts as improvement",
        non_negative,
    )
    mask_frames: Literal["per_frame", "shared"] = param(
        "per_frame",
        "masking of the W context frames of a window: 'shared' hides the same elements in all "
        "W frames (the masker's random draws repeated per frame), 'per_frame' draws a mask per "
        "frame (a feature hidden in one frame is visible in its neighbours)",
    )
    max_nonfinite_steps: int = param(
        10, "stop after this many consecutive non-finite losses", positive
    )
    device: str = param(
        "auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ..."
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = param(
        "auto",
        "'auto': bf16 autocast on CUDA if supported, else fp16 + GradScaler; fp32 (TF32 on "
        "CUDA) on CPU; 'bf16'; 'fp16' (with a GradScaler); 'fp32'",
    )
    compile: bool = param(False, "wrap the models in torch.compile")
    threads: int = param(0, "CPU threads for torch (0: torch's default)", in_range(0, 4096))
    loss_weighting: str = param(
        "fixed",
        "'fixed' (the [[losses]] weights), 'uncertainty' (learned log-variances), 'gradnorm' "
        "(GradNorm, alpha 1.5) or 'gradnorm:A' (alpha A, e.g. 'gradnorm:0.5'); docs/training.md",
        loss_weighting_mode,
    )


@attrs.frozen(kw_only=True)
class LogConfig:
    every: int = param(50, "log training metrics every N steps", positive)
    tensorboard: bool = param(True, "write tensorboardX event files")
    progress: bool = param(True, "show a progress bar")
    runs_dir: str = param("runs", "parent of run directories when --out is not given", file_path)
    diagnostics_every: int = param(
        0,
        "validation diagnostics (val record, health checks) every N steps; 0: once per epoch. "
        "best.pt and early stopping stay per epoch",
        non_negative,
    )


@attrs.frozen(kw_only=True)
class Recipe:
    model: ModelConfig
    encoder: ComponentConfig
    predictor: ComponentConfig
    masker: ComponentConfig
    losses: tuple[LossConfig, ...]
    quantizer: ComponentConfig | None = None
    target: TargetConfig = attrs.field(factory=TargetConfig)
    data: DataConfig = attrs.field(factory=DataConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    health: HealthConfig = attrs.field(factory=HealthConfig)
    source: str = ""

    @property
    def name(self) -> str:
        return Path(self.source).stem if self.source else "recipe"

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``recipe_from_dict`` turns back into an equal recipe."""
        out: dict[str, Any] = {"model": unstructure(self.model)}
        for kind in ("encoder", "predictor", "quantizer", "masker"):
            comp = getattr(self, kind)
            if comp is not None:
                out[kind] = {"name": comp.name, **unstructure(comp.params)}
        out["losses"] = [
            {
                "name": c.name,
                "weight": c.weight,
                **({"label": c.label} if c.label else {}),
                **unstructure(c.params),
            }
            for c in self.losses
        ]
        for table in ("target", "data", "train", "log", "health"):
            out[table] = _drop_none(unstructure(getattr(self, table)))
        return _drop_none(out)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def hash(self) -> str:
        """Stable short hash of the resolved recipe (stored in checkpoints)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def loss_labels(self) -> list[str]:
        """Unique log label of each loss (``label`` or ``name`` without a ``dist-name:``
        qualifier, numbered on repeats)."""
        labels, seen = [], {}
        for c in self.losses:
            base = c.label or c.name.rpartition(":")[2]
            seen[base] = seen.get(base, 0) + 1
            labels.append(base if seen[base] == 1 else f"{base}{seen[base]}")
        return labels


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data


_PLAIN_TABLES = {
    "model": ModelConfig,
    "target": TargetConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "log": LogConfig,
    "health": HealthConfig,
}
_COMPONENT_TABLES = ("encoder", "predictor", "quantizer", "masker")
_TOP_KEYS = (*_PLAIN_TABLES, *_COMPONENT_TABLES, "losses")


def _component(
    kind: str, table: Any, path: str, errors: list[str], registry: Any, *, loss: bool = False
) -> Any:
    """One component table: look ``name`` up, structure the rest into its ``Params`` class.

    A ``[[losses]]`` table (``loss=True``) also takes ``weight`` and ``label``."""
    if not isinstance(table, dict):
        errors.append(f"{path}: expected a table, got {table!r}")
        return None
    name = table.get("name")
    if not isinstance(name, str):
        errors.append(
            f"{path}.name: expected the registered name of a {kind} (a string), got {name!r}"
        )
        return None
    try:
        cls = registry.get(kind, name)
    except UnknownComponentError as exc:
        errors.append(f"{path}.name: {exc}")
        return None
    extra_keys = ("name", "weight", "label") if loss else ("name",)
    params = structure_attrs(table, cls.Params, path, errors, skip=extra_keys)
    if params is None:
        return None
    if loss:
        weight = structure_value(table.get("weight", 1.0), float, f"{path}.weight", errors)
        label = structure_value(table.get("label", ""), str, f"{path}.label", errors)
        if weight is None or label is None:
            return None
        if not (math.isfinite(weight) and weight >= 0):
            errors.append(f"{path}.weight: expected a finite number >= 0, got {weight!r}")
            return None
        return LossConfig(name=name, params=params, weight=weight, label=label)
    return ComponentConfig(name=name, params=params)


def recipe_from_dict(data: dict[str, Any], *, source: str = "", registry: Any = None) -> Recipe:
    """Validate plain data (parsed TOML) into a ``Recipe``; raises ``RecipeError``."""
    if registry is None:
        from lejepa_core.registry import get_registry

        registry = get_registry()
    errors: list[str] = []
    for key in data:
        if key not in _TOP_KEYS:
            close = difflib.get_close_matches(key, _TOP_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(f"{key}: unknown table{hint}; known tables: {', '.join(_TOP_KEYS)}")
    kwargs: dict[str, Any] = {}
    data = replaced_keys(data, errors, default_batch_size=TrainConfig().batch_size)
    for table, cls in _PLAIN_TABLES.items():
        if table in data:
            value = structure_value(data[table], cls, table, errors)
            if value is not None:
                kwargs[table] = value
    for kind in ("encoder", "predictor"):
        if kind not in data:
            errors.append(f'{kind}: required table is missing (e.g. [{kind}] name = "...")')
    defaults = {"masker": {"name": "none"}}
    for kind in _COMPONENT_TABLES:
        table = data.get(kind, defaults.get(kind))
        if table is not None:
            kwargs[kind] = _component(kind, table, kind, errors, registry)
    losses = data.get("losses")
    if not isinstance(losses, list) or not losses:
        errors.append('losses: expected at least one [[losses]] table (e.g. name = "l1")')
    else:
        kwargs["losses"] = tuple(
            _component("loss", t, f"losses[{i}]", errors, registry, loss=True)
            for i, t in enumerate(losses)
        )
        weights = [c.weight for c in kwargs["losses"] if c is not None]
        if len(weights) == len(losses) and not any(w > 0 for w in weights):
            errors.append("losses: every loss has weight 0; give at least one a positive weight")
    kwargs.setdefault("model", ModelConfig())
    if errors:
        raise RecipeError(errors, source=source or None)
    return Recipe(**kwargs, source=source)


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, registry: Any = None
) -> Recipe:
    """Read, override and validate a recipe file."""
    data = apply_overrides(read_recipe_data(path), list(overrides))
    return recipe_from_dict(data, source=str(path), registry=registry)
