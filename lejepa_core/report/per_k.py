"""The per-horizon table and pictures: the last validation record's ``.../k<k>`` keys and,
after ``lejepa eval``, ``eval.json``'s probe-decoded errors per horizon k (the direct prediction,
the rollout, the baselines and the probe floor, per feature group of the env) and its latent
err/σ of the direct prediction against the rollout (the drift)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from matplotlib.figure import Figure

from lejepa_core import artifacts as keys
from lejepa_core.report.canvas import NotDrawn, finish, new_figure
from lejepa_core.report.curves import copy_last_labels
from lejepa_core.report.run_files import COPY_LAST_CONTEXT_PREFIX, RunFiles

ESTIMATOR_NAMES = {  # eval.json estimators, in its order; names on the page
    "model": "model",
    "rollout": "rollout",
    "copy_last": "copy last state",
    "constant_velocity": "constant velocity",
    "probe_floor": "probe floor",
}
GRID_NAMES = {
    **ESTIMATOR_NAMES,
    "copy_last": "copy last grid",
    "blank": "blank grid",
    "chance": "chance",
}
LATENT_LINES = (  # eval.json ``latent`` key prefix, legend name, colour, style
    ("model", "direct prediction", "C0", "-"),
    ("rollout", "rollout", "C3", "--"),
    ("copy_last", "copy-last latent (target encoder)", "C1", ":"),
)


@attrs.define
class Panel:
    """One panel of bars: {estimator: [value per k]} (None where a k has no value)."""

    title: str
    ylabel: str
    bars: dict[str, list[float | None]]


@attrs.define
class PerK:
    """The per-horizon figures of a run: the table (header ``figure, k = 1, ...``; a row per
    figure, a column per horizon: many figures, few k), the bar-chart panels and eval.json's
    ``latent`` section (None without one)."""

    ks: list[int]
    header: list[str]
    rows: list[list[str]]
    panels: list[Panel]
    source: str
    latent: dict[str, Any] | None = None


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: ``n/a`` for None, floats to ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def _latent_panels(last: dict[str, Any], ks: list[int], columns: list) -> list[Panel]:
    """err/σ and cosine of the model and the baselines from the last validation record."""
    copy_last, copy_last_context = copy_last_labels(set(last))
    estimators = (
        ("", "model"),
        (keys.COPY_LAST_PREFIX, copy_last),
        (COPY_LAST_CONTEXT_PREFIX, copy_last_context),
        (keys.MEAN_PREFIX, "mean target"),
    )
    panels = []
    epoch = last.get(keys.EPOCH, "?")
    for metric, title, ylabel in (
        (keys.ERR_SIGNAL, "Error-to-signal ratio", "ratio"),
        (keys.COSINE, "Cosine similarity", "cosine"),
    ):
        bars = {}
        for key_prefix, name in estimators:
            key = f"{key_prefix}{metric}"
            if any(keys.per_k(key, k) in last for k in ks):
                bars[name] = [last.get(keys.per_k(key, k)) for k in ks]
                columns.append((f"{metric} {name}", bars[name]))
        panels.append(Panel(f"{title} (validation, epoch {epoch})", ylabel, bars))
    return panels


def _decoded_panels(evaluation: dict[str, Any], ks: list[int], columns: list) -> list[Panel]:
    """eval.json's decoded figures: a panel per feature group (MAE) or the grid's cell
    accuracy, a bar per estimator it holds (the probe floor included)."""
    rows = {int(row["k"]): row for row in evaluation.get("per_k", [])}
    if evaluation.get("kind") == "grid":
        figures = {
            "active_accuracy": ("Decoded grid active-cell accuracy", "fraction of active cells"),
            "object_recall": ("Decoded grid object recall", "fraction of true object cells"),
            "exact_match": ("Decoded grid exact match", "fraction of grids"),
            "cell_accuracy": ("Decoded grid cell accuracy", "fraction of cells"),
            "retrieval": ("Frame retrieval (latent, no decoder)", "fraction of predictions"),
        }
        columns_of = {
            "active_accuracy": "decoded active-cell accuracy",
            "object_recall": "decoded object recall",
            "exact_match": "decoded exact grid match",
            "cell_accuracy": "decoded cell accuracy",
            "retrieval": "frame retrieval",
        }
        names = GRID_NAMES
    else:
        groups = evaluation.get("groups") or {}
        figures = {
            f"mae_{group}": (f"Decoded {group} error", "mean |error| (state units)")
            for group in groups
        }
        columns_of = {f"mae_{group}": f"decoded {group} MAE" for group in groups}
        names = ESTIMATOR_NAMES
    estimators = evaluation.get("estimators") or list(names)
    if evaluation.get("kind") == "grid":
        estimators = [*estimators, "chance"]
    panels = []
    for figure, (title, ylabel) in figures.items():
        bars = {}
        for estimator in estimators:
            key = f"{estimator}/{figure}"
            if any(key in row for row in rows.values()):
                name = names.get(estimator, estimator)
                bars[name] = [rows.get(k, {}).get(key) for k in ks]
                columns.append((f"{columns_of[figure]} {name}", bars[name]))
        if bars:
            panels.append(Panel(f"{title} ({keys.EVAL})", ylabel, bars))
    return panels


def per_k(run: RunFiles) -> PerK | None:
    """The per-horizon figures of ``run``; None when it logged no per-k figure."""
    last = run.last_val
    prefix = f"{keys.ERR_SIGNAL}/k"
    ks = {int(key.rsplit("/k", 1)[1]) for key in last if key.startswith(prefix)}
    evaluation = run.evaluation or {}
    ks = sorted(ks | {int(row["k"]) for row in evaluation.get("per_k", [])})
    if not ks:
        return None
    columns: list[tuple[str, list[Any]]] = []
    panels = _latent_panels(last, ks, columns)
    panels += _decoded_panels(evaluation, ks, columns)
    latent = evaluation.get("latent")
    if latent:
        for name, label, _, _ in LATENT_LINES:
            values = [latent.get(f"{name}/err_signal/k{k}") for k in ks]
            if any(v is not None for v in values):
                columns.append((f"eval.json err_signal {label}", values))
    header = ["figure"] + [f"k = {k}" for k in ks]
    rows = [[name] + [fmt(value) for value in values] for name, values in columns]
    source = (
        f"err_signal and cosine: last validation record (step {last.get(keys.STEP, '?')}, "
        f"epoch {last.get(keys.EPOCH, '?')}); "
    )
    if not evaluation:
        source += "no eval.json: run `lejepa eval RUN_DIR` for the probe-decoded errors."
    else:
        source += (
            "decoded errors, the probe floor (the probe applied to the true target latents: its "
            "own error) and the rollout: eval.json."
        )
        if latent and latent.get("rollout_note"):
            source += f" Rollout: {latent['rollout_note']}."
    return PerK(
        ks=ks, header=header, rows=rows, panels=panels, source=source, latent=latent or None
    )


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
        ax.margins(y=0.08 * len(panel.bars))  # room above the bars for the legend
        ax.grid(axis="y", alpha=0.3)
        finish(ax, panel.title, "horizon k (steps ahead)", panel.ylabel)
    return figure


def drift_figure(table: PerK) -> Figure:
    """err/σ against k in latent space (eval.json's ``latent``): the direct prediction, the
    autoregressive rollout and copy-last through the target encoder, on the same samples."""
    latent = table.latent
    if latent is None:
        raise NotDrawn(
            "no rollout figures: run `lejepa eval RUN_DIR` (eval.json from before the rollout "
            "lacks them: run it again)"
        )
    figure, (ax,) = new_figure(1, width=7.0, height=4.2)
    for name, label, colour, style in LATENT_LINES:
        points = [
            (k, latent[f"{name}/err_signal/k{k}"])
            for k in table.ks
            if latent.get(f"{name}/err_signal/k{k}") is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=colour, linestyle=style, marker="o", label=label)
    step = latent.get("rollout_horizon", 1)
    ax.set_xticks(table.ks)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if latent.get("rollout_note"):
        ax.text(0.02, 0.98, latent["rollout_note"], transform=ax.transAxes, fontsize=7, va="top")
    finish(
        ax,
        f"Drift: direct prediction against the rollout (k = {step} applied repeatedly)",
        "horizon k (steps ahead)",
        f"err/σ (σ = {latent.get('target_std', float('nan')):.3g}, all target latents)",
    )
    return figure
