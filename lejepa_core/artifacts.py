"""The files of a run directory and the names inside them: written once, read everywhere.

Training writes ``summary.json`` through :class:`Summary` and ``metrics.jsonl`` records
whose keys are the constants below; the summary table, the report and ``lejepa compare`` read
them through the same names, so a renamed figure cannot silently become ``n/a``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs

# ----------------------------------------------------------------------------- file names
RESOLVED_RECIPE = "resolved_recipe.toml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EVAL = "eval.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"  # in CHECKPOINTS: the latest state (resume from it)
BEST_CHECKPOINT = "best.pt"  # in CHECKPOINTS: the best monitored validation figure
REPORT = "report.html"

# ----------------------------------------------------------------------------- metric keys
STEP, EPOCH, SPLIT = "step", "epoch", "split"
LOSS_TOTAL = "loss/total"
LOSS_PREFIX = "loss/"
WEIGHT_SCALE = "weight_scale"  # a loss metric: its value is weight_scale x a batch-free figure
EFFECTIVE_WEIGHT = "effective_weight"  # loss/<label>/effective_weight = weight x weight_scale
ERR_SIGNAL = "err_signal"
COSINE = "cosine"
COPY_LAST_PREFIX = "baseline/copy_last/"  # target encoder on the last context frame
COPY_LAST_CONTEXT_PREFIX = "baseline/copy_last_context/"  # context encoder on the same frame
MEAN_PREFIX = "baseline/mean/"
TARGET_STD = "target_std"
GRAD_NORM = "grad_norm"
GRAD_NORM_MAX = "grad_norm_max"  # max_key(GRAD_NORM): the largest pre-clip norm of a log window
CLIP_FRACTION = "clip_fraction"
LR = "lr"
EMA_MOMENTUM = "ema_momentum"
SAMPLES_PER_S = "samples_per_s"
NONFINITE_STEPS = "nonfinite_steps"
BEST = "best"
BEST_VAL = "best_val"
EPOCHS_WITHOUT_IMPROVEMENT = "epochs_without_improvement"
QUANTIZER_PREFIX = "quantizer/"
USAGE = "quantizer/usage"  # distinct codes in a batch / K
USAGE_RELATIVE = "quantizer/usage_relative"  # usage / what the batch can reach, min(1, N/K)
USAGE_WINDOW = "quantizer/usage_window"  # distinct codes over the running window / K
CODEBOOK_SIZE = "quantizer/codebook_size"
REPLACED_CODES = "quantizer/replaced_codes"  # vq: codes re-initialised in a step (and _max)
RANK_PREFIX = "rank/"  # effective rank of a latent set: rank/context, rank/target


def per_k(key: str, k: int) -> str:
    """The per-horizon variant of a figure: ``err_signal`` -> ``err_signal/k4``."""
    return f"{key}/k{k}"


def max_key(key: str) -> str:
    """The log window's maximum of a figure logged as a mean: ``grad_norm`` -> ``grad_norm_max``."""
    return f"{key}_max"


def monitored_key(monitor: str) -> str:
    """The validation key ``train.monitor`` selects (``err_signal`` or ``loss``)."""
    return ERR_SIGNAL if monitor == "err_signal" else LOSS_TOTAL


@attrs.define(kw_only=True)
class Summary:
    """``summary.json``: how a run ended and its key figures.

    best_val: the best monitored validation figure (``monitor``), None when never finite.
    final_validation: the last validation record (metric key -> value).
    health: the health checks that tripped (``lejepa_core.training.health``), in the order they
    started: ``{check, first_step, last_step, value, threshold, action}`` each; [] when none.
    """

    status: str  # finished | early_stopped | interrupted | stopped | health_stopped
    step: int
    epochs_completed: int
    total_steps: int
    monitor: str
    best_val: float | None
    best_epoch: int
    nonfinite_steps: int
    clip_fraction: float
    wall_seconds: float
    samples_per_s: float
    device: str
    world_size: int
    recipe_hash: str
    parameters: int
    final_validation: dict[str, Any] = attrs.field(factory=dict)
    health: list[dict[str, Any]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        if self.best_val is not None and not math.isfinite(self.best_val):
            self.best_val = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / SUMMARY
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Tolerant of keys added by later versions (ignored) and of missing optional ones."""
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def read(cls, run_dir: str | Path) -> Summary | None:
        """The run's summary, or None when it has none yet (a run still going, or killed)."""
        path = Path(run_dir) / SUMMARY
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
