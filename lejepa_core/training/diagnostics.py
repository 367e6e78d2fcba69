"""Diagnostics of a run and where they go (``metrics.jsonl`` + tensorboardX).

Shape legend: ``N`` validation samples, ``D`` latent_dim. Every key is documented in
``docs/training.md``. Error-to-signal ratios are ``mean |prediction - target| / std(target)``
with the std taken over all elements of *all* validation targets, also for the per-k values,
so the per-k numbers share one denominator and can be compared with each other.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

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
    """

    def __init__(self, run_dir: Path | None, *, tensorboard: bool, enabled: bool = True):
        self.enabled = enabled and run_dir is not None
        self.file = None
        self.writer = None
        if not self.enabled:
            return
        self.file = open(Path(run_dir) / artifacts.METRICS, "a", encoding="utf-8")
        if tensorboard:
            self.writer = SummaryWriter(logdir=str(run_dir))

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


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = to_float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
