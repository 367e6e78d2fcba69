"""Health checks: the monitoring rules of the background documents as configurable checks over
the records of ``metrics.jsonl`` (plain dicts, no torch: tests feed hand-made records).

    readings(config, record)        one record -> a Reading (value, threshold, bad?) per check
                                    that applies to it
    HealthMonitor.observe(record)   readings -> trips: a bad streak that held long enough; one
                                    warning line per trip, and whether a stop rule tripped
    evaluate(config, records)       the trips of a whole list of records

| check | record | trips when (defaults of ``[health]``) |
|---|---|---|
| ``codebook_usage`` | train | ``quantizer/usage_window`` < 0.08 for 3 epochs |
| ``codebook_usage_critical`` | train | ``quantizer/usage_window`` < 0.05 for 1 epoch (the stop level) |
| ``codebook_refresh`` | train | after warm-up, ``quantizer/replaced_codes_max`` > 10 % of the codebook |
| ``grad_norm`` | train | ``grad_norm`` (pre-clip, window mean) > 30 for 10 log windows in a row |
| ``rank_context`` / ``rank_target`` | val | ``rank/context`` < 3 / ``rank/target`` < 5 |
| ``err_signal_failed`` | val | ``err_signal`` >= ``baseline/mean/err_signal`` (learned nothing) |
| ``err_signal_copy_last`` | val | ``err_signal`` >= ``baseline/copy_last/err_signal`` |
| ``cosine_consistency`` | val | ``err_signal`` <= 0.1 but ``cosine`` < 0.95 |

A streak starts at the first bad record and is measured from the check's last good record (or
step 0); a trip ends at the next good record, and a later streak is a new trip. Every trip is
an alert; a trip of a check named in ``stop_on`` stops the run (action ``stop``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from lejepa_core import artifacts
from lejepa_core.params import non_negative, param, positive

CHECKS = (
    "codebook_usage",
    "codebook_usage_critical",
    "codebook_refresh",
    "grad_norm",
    "rank_context",
    "rank_target",
    "err_signal_failed",
    "err_signal_copy_last",
    "cosine_consistency",
)


def _known_checks(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    unknown = [name for name in value if name not in CHECKS]
    if unknown:
        raise ValueError(
            f"{attribute.name}: unknown check {', '.join(map(repr, unknown))}; "
            f"known checks: {', '.join(CHECKS)}"
        )


@attrs.frozen(kw_only=True)
class HealthConfig:
    """The ``[health]`` table: thresholds of the checks and which of them stop the run."""

    enabled: bool = param(True, "run the health checks (warnings, summary.json 'health')")
    usage_alert: float = param(
        0.08,
        "check codebook_usage: quantizer/usage_window below this for usage_alert_epochs epochs",
        non_negative,
    )
    usage_alert_epochs: int = param(3, "epochs the codebook_usage check waits", non_negative)
    usage_stop: float = param(
        0.05,
        "check codebook_usage_critical (name it in stop_on to stop): quantizer/usage_window "
        "below this for usage_stop_epochs epochs",
        non_negative,
    )
    usage_stop_epochs: int = param(
        1, "epochs the codebook_usage_critical check waits", non_negative
    )
    replaced_fraction: float = param(
        0.1,
        "check codebook_refresh: one step re-initialises more than this fraction of the "
        "codebook after train.warmup_steps (quantizer/replaced_codes_max)",
        non_negative,
    )
    rank_context_min: float = param(
        3.0, "check rank_context: effective rank of the context latents below this", non_negative
    )
    rank_target_min: float = param(
        5.0, "check rank_target: effective rank of the target latents below this", non_negative
    )
    grad_norm_alert: float = param(
        30.0,
        "check grad_norm: pre-clip gradient norm (window mean) above this for "
        "grad_norm_windows log windows in a row",
        positive,
    )
    grad_norm_windows: int = param(10, "log windows in a row the grad_norm check waits", positive)
    err_signal_excellent: float = param(
        0.1,
        "check cosine_consistency: err/σ at or below this (excellent) expects a cosine of at "
        "least cosine_expected",
        non_negative,
    )
    cosine_expected: float = param(
        0.95, "the cosine expected in the excellent err/σ band", non_negative
    )
    stop_on: tuple[str, ...] = param(
        (),
        "checks whose trip ends the run with status health_stopped after saving last.pt, "
        "e.g. ['codebook_usage_critical']",
        _known_checks,
    )


@attrs.frozen
class Reading:
    """One check on one record: ``bad`` when ``value`` is on the wrong side of ``threshold``
    (below it when ``below``, else above it)."""

    check: str
    bad: bool
    value: float
    threshold: float
    below: bool


@attrs.define
class Trip:
    """A check that held: from ``first_step`` (its first bad record) to ``last_step`` (its latest);
    ``value`` the worst figure seen, ``action`` ``alert`` or ``stop``."""

    check: str
    first_step: int
    last_step: int
    value: float
    threshold: float
    action: str

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def err_signal_band(err_signal: float, mean_baseline: float | None = None) -> str:
    """The bands of ``l1-loss-interpretation``: ``failed`` (no better than predicting the mean:
    ``baseline/mean``, about 0.8 for Gaussian latents, 1.0 when unknown), ``weak`` (above 0.5),
    ``coarse`` (coarse structure, 0.1 to 0.5), ``excellent`` (at or below 0.1)."""
    if err_signal >= (1.0 if mean_baseline is None else mean_baseline):
        return "failed"
    if err_signal > 0.5:
        return "weak"
    return "coarse" if err_signal > 0.1 else "excellent"


def _number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def readings(
    config: HealthConfig, record: dict[str, Any], *, warmup_steps: int = 0
) -> list[Reading]:
    """The checks that apply to ``record`` (a ``train`` or ``val`` record of metrics.jsonl);
    a check whose figures are missing gives no reading, one that does not apply (warm-up, err/σ
    above the excellent band) a good one."""
    out: list[Reading] = []

    def add(check, key, threshold, *, below, or_equal=False, applies=True) -> None:
        """Bad when the figure ``key`` is below (or above) ``threshold`` (``or_equal``: or at)."""
        value = _number(record, key)
        if value is None or threshold is None:
            return
        if below:
            bad = value < threshold
        else:
            bad = value >= threshold if or_equal else value > threshold
        out.append(Reading(check, applies and bad, value, float(threshold), below))

    c = config
    if record.get(artifacts.SPLIT) == "train":
        add("codebook_usage", artifacts.USAGE_WINDOW, c.usage_alert, below=True)
        add("codebook_usage_critical", artifacts.USAGE_WINDOW, c.usage_stop, below=True)
        size = _number(record, artifacts.CODEBOOK_SIZE)
        add(
            "codebook_refresh",
            artifacts.max_key(artifacts.REPLACED_CODES),
            None if size is None else c.replaced_fraction * size,
            below=False,
            applies=record[artifacts.STEP] > warmup_steps,
        )
        add("grad_norm", artifacts.GRAD_NORM, c.grad_norm_alert, below=False)
        return out
    err = _number(record, artifacts.ERR_SIGNAL)
    add("rank_context", f"{artifacts.RANK_PREFIX}context", c.rank_context_min, below=True)
    add("rank_target", f"{artifacts.RANK_PREFIX}target", c.rank_target_min, below=True)
    mean = _number(record, artifacts.MEAN_PREFIX + artifacts.ERR_SIGNAL)
    copy_last = _number(record, artifacts.COPY_LAST_PREFIX + artifacts.ERR_SIGNAL)
    # at the baseline is no better than the baseline
    add("err_signal_failed", artifacts.ERR_SIGNAL, mean, below=False, or_equal=True)
    add("err_signal_copy_last", artifacts.ERR_SIGNAL, copy_last, below=False, or_equal=True)
    add(
        "cosine_consistency",
        artifacts.COSINE,
        c.cosine_expected,
        below=True,
        applies=err is not None and err <= c.err_signal_excellent,
    )
    return out


class HealthMonitor:
    """Feeds records to the checks in step order; keeps the streaks and the trips.

    warn: called with one line per new trip (rank 0 prints it; None: silent, as when replaying
    the records of a resumed run). agree: makes every rank take rank 0's stop decision
    (``distributed.broadcast_object``); called on every ``observe`` when ``stop_on`` is set.
    """

    def __init__(
        self,
        config: HealthConfig,
        *,
        steps_per_epoch: int,
        warmup_steps: int = 0,
        warn: Callable[[str], None] | None = None,
        agree: Callable[[bool], bool] | None = None,
    ):
        self.config = config
        self.warmup_steps = warmup_steps
        self.warn, self.agree = warn, agree
        self.trips: list[Trip] = []
        self.stopped = False  # a stop rule tripped (sticky)
        self._last_good: dict[str, int] = {}
        self._streaks: dict[str, dict[str, Any]] = {}  # check -> first, records, worst, trip
        self._durations = {  # check -> (bad records in a row, steps since the last good one)
            "codebook_usage": (1, config.usage_alert_epochs * steps_per_epoch),
            "codebook_usage_critical": (1, config.usage_stop_epochs * steps_per_epoch),
            "grad_norm": (config.grad_norm_windows, 0),
        }

    def observe(self, record: dict[str, Any]) -> bool:
        """Check ``record`` (it must hold ``step`` and ``split``); True when a stop rule tripped
        (on rank 0, when ``agree`` is set)."""
        new: list[Trip] = []
        if self.config.enabled:
            step = int(record[artifacts.STEP])
            for reading in readings(self.config, record, warmup_steps=self.warmup_steps):
                trip = self._advance(reading, step)
                if trip is not None:
                    new.append(trip)
        for trip in new:
            if self.warn is not None:
                self.warn(trip_message(trip, self.config))
        stop = any(trip.action == "stop" for trip in new)
        if self.config.stop_on and self.agree is not None:
            stop = bool(self.agree(stop))
        self.stopped |= stop
        return stop

    def _advance(self, reading: Reading, step: int) -> Trip | None:
        """Update ``reading.check``'s streak; the new trip when it starts now."""
        check = reading.check
        if not reading.bad:
            self._streaks.pop(check, None)
            self._last_good[check] = step
            return None
        worse = min if reading.below else max
        streak = self._streaks.setdefault(check, {"first": step, "records": 0, "trip": None})
        streak["records"] += 1
        streak["worst"] = worse(streak.get("worst", reading.value), reading.value)
        if streak["trip"] is not None:
            streak["trip"].last_step, streak["trip"].value = step, streak["worst"]
            return None
        min_records, min_steps = self._durations.get(check, (1, 0))
        held = step - self._last_good.get(check, 0)
        if streak["records"] < min_records or held < min_steps:
            return None
        action = "stop" if check in self.config.stop_on else "alert"
        trip = Trip(check, streak["first"], step, streak["worst"], reading.threshold, action)
        streak["trip"] = trip
        self.trips.append(trip)
        return trip

    def summary(self) -> list[dict[str, Any]]:
        """``summary.json``'s ``health``: every trip, in the order they started."""
        return [trip.to_dict() for trip in self.trips]


_WHAT = {
    "codebook_usage": "codebook usage over the running window below {threshold:.3g} for {epochs} epochs",
    "codebook_usage_critical": "codebook usage over the running window below the stop level {threshold:.3g}",
    "codebook_refresh": "one step re-initialised {value:.0f} codes (> {threshold:.0f}) after warm-up: a refresh discontinuity",
    "grad_norm": "pre-clip gradient norm above {threshold:.3g} for {windows} log windows",
    "rank_context": "effective rank of the context latents {value:.3g} below {threshold:.3g}",
    "rank_target": "effective rank of the target latents {value:.3g} below {threshold:.3g}",
    "err_signal_failed": "err/σ {value:.3g} no better than predicting the mean ({threshold:.3g}): nothing learned",
    "err_signal_copy_last": "err/σ {value:.3g} no better than copy-last in the target's space ({threshold:.3g})",
    "cosine_consistency": "err/σ in the excellent band but cosine {value:.3g} below {threshold:.3g}",
}


def trip_message(trip: Trip, config: HealthConfig | None = None) -> str:
    """The warning line of a trip."""
    config = config or HealthConfig()
    what = _WHAT[trip.check].format(
        value=trip.value,
        threshold=trip.threshold,
        epochs=config.usage_alert_epochs,
        windows=config.grad_norm_windows,
    )
    action = "stopping the run" if trip.action == "stop" else "alert"
    return f"warning: health check {trip.check} at step {trip.last_step}: {what} ({action})"


def run_monitor(
    recipe: Any,
    *,
    warn: Callable[[str], None] | None,
    agree: Callable[[bool], bool] | None,
    history: Iterable[dict[str, Any]] = (),
) -> HealthMonitor:
    """The monitor of a training run of ``recipe`` (its ``[health]``, ``train.steps_per_epoch``
    and ``warmup_steps``); ``history``: the records of a resumed run, replayed silently."""
    monitor = HealthMonitor(
        recipe.health,
        steps_per_epoch=recipe.train.steps_per_epoch,
        warmup_steps=recipe.train.warmup_steps,
    )
    for record in history:
        monitor.observe(record)
    monitor.warn, monitor.agree = warn, agree
    return monitor


def evaluate(
    config: HealthConfig,
    records: Iterable[dict[str, Any]],
    *,
    steps_per_epoch: int,
    warmup_steps: int = 0,
) -> list[Trip]:
    """The trips of ``records`` (in step order), as a run would have met them."""
    monitor = HealthMonitor(config, steps_per_epoch=steps_per_epoch, warmup_steps=warmup_steps)
    for record in records:
        monitor.observe(record)
    return monitor.trips


def read_records(run_dir: str | Path | None, *, up_to_step: int) -> list[dict[str, Any]]:
    """The ``train`` and ``val`` records of ``<run_dir>/metrics.jsonl`` up to ``up_to_step``
    (a resumed run replays them, so its streaks and trips continue); [] without the file."""
    path = None if run_dir is None else Path(run_dir) / artifacts.METRICS
    if path is None or not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in records if r.get(artifacts.STEP, math.inf) <= up_to_step]
