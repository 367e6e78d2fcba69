"""The per-horizon table and bar chart: the last validation record's ``.../k<k>`` keys and,
after ``lejepa eval``, the probe-decoded errors of ``eval.json``, per horizon k."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from matplotlib.figure import Figure

from lejepa_core import artifacts as keys
from lejepa_core.report.canvas import finish, new_figure
from lejepa_core.report.run_files import RunFiles

LATENT_ESTIMATORS = (
    ("", "model"),
    (keys.COPY_LAST_PREFIX, "copy-last latent"),
    (keys.MEAN_PREFIX, "mean target"),
)
STATE_ESTIMATORS = (
    ("model", "model"),
    ("copy_last", "copy last state"),
    ("constant_velocity", "constant velocity"),
)
EVAL_FIGURES = (  # eval.json per_k key suffix, panel title, y label
    ("mae_positions", "Decoded position error", "mean |error| (state units)"),
    ("mae_velocities", "Decoded velocity error", "mean |error| (state units)"),
    ("cell_accuracy", "Decoded grid cell accuracy", "fraction of cells"),
)


@attrs.define
class Panel:
    """One panel of bars: {estimator: [value per k]} (None where a k has no value)."""

    title: str
    ylabel: str
    bars: dict[str, list[float | None]]


@attrs.define
class PerK:
    """The per-horizon figures of a run: the table (header, rows) and the bar-chart panels."""

    ks: list[int]
    header: list[str]
    rows: list[list[str]]
    panels: list[Panel]
    source: str


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: ``n/a`` for None, floats to ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def per_k(run: RunFiles) -> PerK | None:
    """The per-horizon figures of ``run``; None when it logged no per-k figure."""
    last = run.last_val
    prefix = f"{keys.ERR_SIGNAL}/k"
    ks = {int(key.rsplit("/k", 1)[1]) for key in last if key.startswith(prefix)}
    evaluation = run.evaluation or {}
    eval_rows = {int(row["k"]): row for row in evaluation.get("per_k", [])}
    ks = sorted(ks | set(eval_rows))
    if not ks:
        return None
    columns: list[tuple[str, list[Any]]] = []
    panels = []
    epoch = last.get(keys.EPOCH, "?")
    for metric, title, ylabel in (
        (keys.ERR_SIGNAL, "Error-to-signal ratio", "ratio"),
        (keys.COSINE, "Cosine similarity", "cosine"),
    ):
        bars = {}
        for key_prefix, name in LATENT_ESTIMATORS:
            key = f"{key_prefix}{metric}"
            if any(keys.per_k(key, k) in last for k in ks):
                bars[name] = [last.get(keys.per_k(key, k)) for k in ks]
                columns.append((f"{metric} {name}", bars[name]))
        panels.append(Panel(f"{title} (validation, epoch {epoch})", ylabel, bars))
    for suffix, title, ylabel in EVAL_FIGURES:
        bars = {}
        for estimator, name in STATE_ESTIMATORS:
            key = f"{estimator}/{suffix}"
            if any(key in row for row in eval_rows.values()):
                bars[name] = [eval_rows.get(k, {}).get(key) for k in ks]
                columns.append((f"{title.split()[1]} {suffix.split('_')[0]} {name}", bars[name]))
        if bars:
            panels.append(Panel(f"{title} ({keys.EVAL})", ylabel, bars))
    header = ["k"] + [name for name, _ in columns]
    rows = [[str(k)] + [fmt(values[i]) for _, values in columns] for i, k in enumerate(ks)]
    source = (
        f"err_signal and cosine: last validation record (step {last.get(keys.STEP, '?')}, "
        f"epoch {epoch}); "
    )
    source += (
        "decoded errors: eval.json."
        if eval_rows
        else "no eval.json: run `lejepa eval RUN_DIR` for the probe-decoded errors."
    )
    return PerK(ks=ks, header=header, rows=rows, panels=panels, source=source)


def per_k_figure(table: PerK) -> Figure | None:
    """Grouped bars per horizon, one panel per figure (estimators side by side)."""
    panels = [p for p in table.panels if p.bars]
    if not panels or not table.ks:
        return None
    figure, axes = new_figure(len(panels), width=5.2)
    positions = np.arange(len(table.ks))
    for ax, panel in zip(axes, panels, strict=True):
        width = 0.8 / len(panel.bars)
        for i, (name, values) in enumerate(panel.bars.items()):
            heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
            offset = (i - (len(panel.bars) - 1) / 2) * width
            ax.bar(positions + offset, heights, width, label=name, color=f"C{i}")
        ax.set_xticks(positions, [str(k) for k in table.ks])
        ax.grid(axis="y", alpha=0.3)
        finish(ax, panel.title, "horizon k (steps ahead)", panel.ylabel)
    return figure
