"""Diagnostics of a run and where they go (``metrics.jsonl`` + tensorboardX).

Shape legend: ``N`` validation samples, ``D`` latent_dim. Every key is documented in
``docs/training.md``. Error-to-signal ratios are ``mean |prediction - target| / std(target)``
with the std taken over all elements of *all* validation targets, also for the per-k values,
so the per-k numbers share one denominator and can be compared with each other.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tensorboardX import SummaryWriter

from lejepa_core import artifacts
from lejepa_core import metrics as M


def to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


def prediction_report(
    prediction: torch.Tensor,
    target: torch.Tensor,
    k: torch.Tensor,
    horizons: tuple[int, ...],
    prefix: str = "",
    sigma: torch.Tensor | None = None,
) -> dict[str, float]:
    """``{prefix}err_signal``, ``{prefix}cosine`` overall and ``/k{k}`` for every horizon.

    prediction, target: [N, D]; k: [N]; sigma: the std of the targets (default: of ``target``).
    """
    prediction, target = prediction.float(), target.float()
    sigma = target.std().clamp_min(1e-12) if sigma is None else sigma
    abs_err = (prediction - target).abs().mean(dim=1)  # [N]
    cos = torch.nn.functional.cosine_similarity(prediction, target, dim=-1, eps=1e-8)  # [N]
    err_signal, cosine = prefix + artifacts.ERR_SIGNAL, prefix + artifacts.COSINE
    out = {err_signal: to_float(abs_err.mean() / sigma), cosine: to_float(cos.mean())}
    for h in horizons:
        sel = k == h
        if bool(sel.any()):
            out[artifacts.per_k(err_signal, h)] = to_float(abs_err[sel].mean() / sigma)
            out[artifacts.per_k(cosine, h)] = to_float(cos[sel].mean())
    return out


def latent_report(z: torch.Tensor, name: str) -> dict[str, float]:
    """Collapse diagnostics of latents ``z: [N, D]``: ``rank/{name}`` (effective rank),
    ``variance/{name}/min`` and ``/mean`` (per-dimension variance), ``isotropy/{name}``."""
    variance = M.per_dimension_variance(z)
    return {
        f"{artifacts.RANK_PREFIX}{name}": to_float(M.effective_rank(z)),
        f"variance/{name}/min": to_float(variance.min()),
        f"variance/{name}/mean": to_float(variance.mean()),
        f"isotropy/{name}": to_float(M.isotropy(z)),
    }


def validation_report(
    *,
    prediction: torch.Tensor,
    target: torch.Tensor,
    last_context: torch.Tensor,
    k: torch.Tensor,
    horizons: tuple[int, ...],
) -> dict[str, float]:
    """Model and baseline figures on the same validation samples.

    prediction, target, last_context (context-encoder latent of the last, unmasked, context
    frame): [N, D]; k: [N]. Baselines: ``baseline/copy_last`` predicts ``last_context`` (what
    the residual predictor starts from); ``baseline/mean`` predicts the mean validation target.
    """
    sigma = target.float().std().clamp_min(1e-12)
    out = prediction_report(prediction, target, k, horizons, sigma=sigma)
    out.update(
        prediction_report(
            last_context, target, k, horizons, artifacts.COPY_LAST_PREFIX, sigma=sigma
        )
    )
    mean = target.float().mean(dim=0, keepdim=True).expand_as(target)
    out.update(prediction_report(mean, target, k, horizons, artifacts.MEAN_PREFIX, sigma=sigma))
    out[artifacts.TARGET_STD] = to_float(sigma)
    out.update(latent_report(last_context, "context"))
    out.update(latent_report(target, "target"))
    return out


class RunningMeans:
    """Means of scalar metrics between two log points (values kept as tensors: no sync)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self.sums[key] = self.sums[key] + value
            self.counts[key] += 1

    def pop(self) -> dict[str, float]:
        out = {key: to_float(self.sums[key]) / self.counts[key] for key in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and tensorboardX scalars ``<split>/<key>``.

    Non-finite floats are written as ``null`` (JSON has no NaN). A no-op when ``enabled`` is
    false (ranks other than 0).

    resume_step: the step of the checkpoint a resumed run continues from: ``metrics.jsonl``
    loses its records after it (steps replayed after the checkpoint, a torn last line), and
    TensorBoard is told to drop its events from ``resume_step + 1`` on (``purge_step``), so no
    step appears twice. recipe: a new run's resolved recipe, written to TensorBoard as text
    (``recipe``) and hyperparameters (the hparams plugin: every scalar recipe value, against
    ``val/err_signal`` and ``val/loss/total``).
    """

    def __init__(
        self,
        run_dir: Path | None,
        *,
        tensorboard: bool,
        enabled: bool = True,
        resume_step: int | None = None,
        recipe: Any = None,
    ):
        self.enabled = enabled and run_dir is not None
        self.file = None
        self.writer = None
        if not self.enabled:
            return
        path = Path(run_dir) / artifacts.METRICS
        if resume_step is not None:
            truncate_metrics(path, resume_step)
        self.file = open(path, "a", encoding="utf-8")
        if tensorboard:
            purge = None if resume_step is None else resume_step + 1
            # a session's own events file, after the earlier ones in name order (the order
            # TensorBoard reads them in), also when a resume starts within the same second
            suffix = f".{resume_step or 0:012d}.{os.getpid()}"
            self.writer = SummaryWriter(
                logdir=str(run_dir), purge_step=purge, filename_suffix=suffix
            )
            if recipe is not None and resume_step is None:
                write_recipe(self.writer, recipe)

    def write(self, record: dict[str, Any]) -> None:
        """record: must hold ``step``, ``epoch`` and ``split``; other values are scalars."""
        if not self.enabled:
            return
        clean = {key: _json_value(value) for key, value in record.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.writer is not None:
            split, step = record[artifacts.SPLIT], int(record[artifacts.STEP])
            for key, value in clean.items():
                if (
                    key not in (artifacts.STEP, artifacts.EPOCH, artifacts.SPLIT)
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the records of ``path`` up to ``step`` (and no torn line); returns how many went.

    Rewritten atomically (temporary file + ``os.replace``)."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and int(record.get(artifacts.STEP, step + 1)) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


def recipe_hparams(recipe: Any) -> dict[str, str | int | float | bool]:
    """The recipe's values as flat ``table.key`` hyperparameters (lists as JSON strings)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                walk(f"{prefix}.{i}", item)
        elif isinstance(value, (list, tuple)):
            out[prefix] = json.dumps(list(value))
        elif isinstance(value, (str, bool, int, float)):
            out[prefix] = value

    walk("", recipe.to_dict())
    return out


def write_recipe(writer: SummaryWriter, recipe: Any) -> None:
    """The resolved recipe as TensorBoard text and hparams (``MetricsLog``)."""
    from tensorboardX.summary import hparams

    toml = recipe.to_toml()
    writer.add_text("recipe", "\n".join("    " + line for line in toml.splitlines()), 0)
    metrics = {f"val/{artifacts.ERR_SIGNAL}": 0.0, f"val/{artifacts.LOSS_TOTAL}": 0.0}
    experiment, session_start, _ = hparams(recipe_hparams(recipe), metrics)
    file_writer = writer._get_file_writer()
    file_writer.add_summary(experiment)
    file_writer.add_summary(session_start)


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = to_float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
