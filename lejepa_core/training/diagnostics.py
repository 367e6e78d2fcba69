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
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import torch
from tensorboardX import SummaryWriter

from lejepa_core import artifacts
from lejepa_core import metrics as M
from lejepa_core.errors import StorageError
from lejepa_core.files import write_failure


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
    copy_last: torch.Tensor,
    last_context: torch.Tensor,
    k: torch.Tensor,
    horizons: tuple[int, ...],
) -> dict[str, float]:
    """Model and baseline figures on the same validation samples.

    prediction, target: [N, D]; copy_last: the *target* encoder's latent of the last (unmasked)
    context frame, [N, D]; last_context: the context encoder's latent of that frame, [N, D];
    k: [N]. Baselines, all against the same targets and σ:

    - ``baseline/copy_last``: "nothing moves" in the target's space (``copy_last``), so the gap
      between the context and the EMA target encoder does not count as dynamics;
    - ``baseline/copy_last_context``: the context encoder's latent (what the residual predictor
      starts from); equal to ``copy_last`` with a shared target encoder;
    - ``baseline/mean``: the mean validation target (about 0.8 for Gaussian latents:
      E|x - μ| / σ = sqrt(2/π)).
    """
    sigma = target.float().std().clamp_min(1e-12)
    out = prediction_report(prediction, target, k, horizons, sigma=sigma)
    baselines = {
        artifacts.COPY_LAST_PREFIX: copy_last,
        artifacts.COPY_LAST_CONTEXT_PREFIX: last_context,
        artifacts.MEAN_PREFIX: target.float().mean(dim=0, keepdim=True).expand_as(target),
    }
    for prefix, estimate in baselines.items():
        out.update(prediction_report(estimate, target, k, horizons, prefix, sigma=sigma))
    out[artifacts.TARGET_STD] = to_float(sigma)
    out.update(latent_report(last_context, "context"))
    out.update(latent_report(target, "target"))
    return out


class RunningMeans:
    """Means of scalar metrics between two log points (values kept as tensors: no sync).

    ``add(values, weight=n)`` counts the values ``n`` times (validation weights each batch by
    its number of windows, so a shorter last batch is not over-counted). For the keys in
    ``max_of`` the maximum is kept too (a running 0-d tensor, no sync) and ``pop`` reports it
    as ``artifacts.max_key(key)`` (``grad_norm_max``): a spike a mean would flatten.
    """

    def __init__(self, max_of: tuple[str, ...] = ()) -> None:
        self.max_of = frozenset(max_of)
        self.sums: dict[str, Any] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.maxima: dict[str, Any] = {}

    def add(
        self, values: dict[str, Any], weight: float = 1.0, mask: torch.Tensor | None = None
    ) -> None:
        """mask: a 0-d bool device tensor; when False the values do not count (a skipped step:
        selected with ``torch.where``, so NaN values do not leak, and no host sync)."""
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            if mask is not None:
                value = torch.where(mask, value, 0.0)  # a float stays a scalar: no copy
            self.sums[key] = self.sums[key] + weight * value
            self.counts[key] = self.counts[key] + (weight if mask is None else weight * mask)
            if key in self.max_of:
                if mask is not None:
                    value = torch.where(mask, value, -math.inf)
                seen = self.maxima.get(key)
                self.maxima[key] = (
                    value
                    if seen is None
                    else torch.maximum(torch.as_tensor(seen), torch.as_tensor(value))
                )

    def pop(self) -> dict[str, float]:
        """Means (and maxima) of the counted values; keys no value counted for are left out."""
        counts = {key: to_float(count) for key, count in self.counts.items()}
        out = {key: to_float(self.sums[key]) / counts[key] for key in self.sums if counts[key]}
        out.update({artifacts.max_key(k): to_float(m) for k, m in self.maxima.items() if counts[k]})
        self.sums.clear()
        self.counts.clear()
        self.maxima.clear()
        return out


@attrs.define
class LogWindow:
    """The steps since the last ``train`` record: means of their figures (and the maximum of
    ``grad_norm`` and ``quantizer/replaced_codes``), count, start time."""

    means: RunningMeans = attrs.field(
        factory=lambda: RunningMeans(max_of=(artifacts.GRAD_NORM, artifacts.REPLACED_CODES))
    )
    steps: int = 0
    started: float = attrs.field(factory=time.perf_counter)

    def add(self, metrics: dict[str, Any] | None, applied: torch.Tensor | None = None) -> None:
        """One step's figures; None for a skipped (non-finite) step: counted, not averaged.
        applied: 0-d bool device tensor, False for a skipped step (averaged out on the device)."""
        self.steps += 1
        if metrics is not None:
            self.means.add(metrics, mask=applied)


def effective_weights(
    labels: list[str], weights: list[float], loss_metrics: dict[str, Any]
) -> dict[str, Any]:
    """``loss/<label>/effective_weight`` = weight x the loss's ``weight_scale`` metric (from
    ``StepLoss.metrics``, ``<label>/<metric>``), for the losses that report one. SIGReg's value
    is weight_scale x a divergence (weight_scale = N unless normalised), so a weight that
    silently grows with the batch shows in the log. Values stay tensors (no sync)."""
    out = {}
    for label, weight in zip(labels, weights, strict=True):
        scale = loss_metrics.get(f"{label}/{artifacts.WEIGHT_SCALE}")
        if scale is not None:
            out[f"{artifacts.LOSS_PREFIX}{label}/{artifacts.EFFECTIVE_WEIGHT}"] = weight * scale
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
        try:
            self.file.write(json.dumps(clean) + "\n")
            self.file.flush()
        except OSError as exc:  # a full disk: one line naming the file (lejepa_core.files)
            raise StorageError(write_failure(self.file.name, exc)) from None
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
        """Close both, each even when the other fails; a failure to write their last bytes (a
        full disk) is a ``StorageError`` naming the file."""
        failure = None
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError as exc:
                failure = write_failure(file.name, exc)
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except OSError as exc:
                _abandon_events(writer)
                failure = failure or write_failure(f"{writer.logdir}/events.out.tfevents.*", exc)
        if failure:
            raise StorageError(failure)


def _abandon_events(writer: SummaryWriter) -> None:
    """After tensorboardX failed to close (a full disk): stop its thread and mark it closed,
    or it retries at exit and prints a traceback."""
    events = getattr(getattr(writer, "file_writer", None), "event_writer", None)
    if events is None:
        return
    events._closed = True
    try:
        events._worker.stop()
    except Exception:  # noqa: BLE001 - the thread may be gone already
        pass


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
