"""The figures of ``lejepa report`` and ``lejepa compare`` (matplotlib, Agg, no pyplot).

Every function returns a ``matplotlib.figure.Figure`` (or None when the run logged nothing it
could draw). Figures are built with the object-oriented API and rendered by the Agg canvas
(``figure_png``): no pyplot, no global backend switch, no GUI, no server, nothing to close.

Curves take a list of ``Curves`` (one per run): one run colours each series; several runs
(``lejepa compare``) colour each run and tell the series apart by line style, so the same
code draws the report and the comparison.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

LINESTYLES = ("-", "--", ":", "-.")
DPI = 100


@attrs.define
class Curves:
    """The logged records of one run. train / val: ``metrics.jsonl`` records of that split,
    one per step (sorted); grad_clip: ``train.grad_clip`` of the resolved recipe (or None);
    latent_dim: ``model.latent_dim``; codebook_size: the quantizer's, when known."""

    name: str
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    grad_clip: float | None = None
    latent_dim: int | None = None
    codebook_size: int | None = None

    def records(self, split: str) -> list[dict[str, Any]]:
        return self.train if split == "train" else self.val


@attrs.frozen
class Series:
    """One line: ``key`` of the records of ``split`` against ``x`` ("step" or "epoch")."""

    key: str
    label: str
    split: str = "train"
    x: str = "step"


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _points(records: list[dict[str, Any]], key: str, x: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[key]) for r in records if _number(r.get(key)) and _number(r.get(x))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _new_figure(
    panels: int, *, width: float = 5.0, height: float = 3.6
) -> tuple[Figure, list[Any]]:
    columns = 2 if panels == 4 else min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, list(axes[:panels])


def draw_series(
    ax: Any, runs: Sequence[Curves], series: Sequence[Series], *, positive: bool = False
) -> bool:
    """Draw every series of every run on ``ax``; True when at least one point was drawn.

    One run: colour per series (line style from the split: train solid, val dashed with
    markers). Several runs: colour per run, line style per series. ``positive``: a log y
    axis when all drawn values are > 0 and span more than a factor 50.
    """
    drawn: list[float] = []
    single = len(runs) == 1
    mixed = len({line.split for line in series}) > 1  # train and val on one panel: val dashed
    for r, run in enumerate(runs):
        for s, line in enumerate(series):
            xs, ys = _points(run.records(line.split), line.key, line.x)
            if not xs:
                continue
            color = f"C{s}" if single else f"C{r % 10}"
            style = (
                ("--" if mixed and line.split == "val" else "-")
                if single
                else LINESTYLES[s % len(LINESTYLES)]
            )
            label = line.label if single else f"{run.name}: {line.label}"
            marker = "o" if line.split == "val" and len(xs) <= 60 else None
            ax.plot(
                xs,
                ys,
                color=color,
                linestyle=style,
                marker=marker,
                markersize=4,
                linewidth=1.4,
                label=label,
            )
            drawn += ys
    if not drawn:
        return False
    if positive and min(drawn) > 0 and max(drawn) / min(drawn) > 50:
        ax.set_yscale("log")
    if all(line.x == "epoch" for line in series):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return True


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    labels = ax.get_legend_handles_labels()[1]
    if len(labels) > 5:  # many lines (compare): the legend beside the panel, off the data
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif labels:
        ax.legend(fontsize=8, loc="best")


def _keys(runs: Sequence[Curves], split: str) -> set[str]:
    return {key for run in runs for record in run.records(split) for key in record}


# ----------------------------------------------------------------------------- curves
def loss_figure(runs: Sequence[Curves]) -> Figure | None:
    """One panel per loss part (``loss/<label>``, unweighted, and the weighted total):
    training means between log points (solid) and validation (dashed), against steps."""
    keys = _keys(runs, "train") | _keys(runs, "val")
    parts = sorted(
        k for k in keys if k.startswith("loss/") and k.count("/") == 1 and k != "loss/total"
    )
    names = (["loss/total"] if "loss/total" in keys else []) + parts
    if not names:
        return None
    figure, axes = _new_figure(len(names))
    for ax, key in zip(axes, names, strict=True):
        label = key.split("/", 1)[1]
        series = [Series(key, f"train {label}"), Series(key, f"validation {label}", split="val")]
        draw_series(ax, runs, series, positive=True)
        what = "weighted sum of the parts" if key == "loss/total" else "unweighted"
        _finish(ax, f"{key} ({what})", "step", "loss")
    figure.suptitle("Losses")
    return figure


def _best(run: Curves) -> dict[str, Any] | None:
    best = [r for r in run.val if r.get("best") is True and _number(r.get("loss/total"))]
    return best[-1] if best else None


def validation_loss_figure(runs: Sequence[Curves]) -> Figure | None:
    """Validation total loss per epoch; the best epoch (lowest, the one in best.pt) starred."""
    figure, (ax,) = _new_figure(1, width=7.0)
    if not draw_series(
        ax, runs, [Series("loss/total", "validation loss", split="val", x="epoch")], positive=True
    ):
        return None
    for r, run in enumerate(runs):
        best = _best(run)
        if best is None:
            continue
        color = "C3" if len(runs) == 1 else f"C{r % 10}"
        prefix = "" if len(runs) == 1 else f"{run.name}: "
        ax.plot(
            [best["epoch"]],
            [best["loss/total"]],
            marker="*",
            markersize=16,
            color=color,
            linestyle="none",
            markeredgecolor="black",
            label=f"{prefix}best epoch {best['epoch']} ({best['loss/total']:.4g})",
        )
    _finish(
        ax,
        "Validation loss (best epoch starred: checkpoints/best.pt)",
        "epoch (0-based, as logged)",
        "loss",
    )
    return figure


def prediction_figure(runs: Sequence[Curves]) -> Figure | None:
    """Error-to-signal ratio and cosine of the predictions against both baselines, per epoch."""
    figure, axes = _new_figure(2, width=6.0)
    drew = False
    for ax, metric, ylabel in zip(
        axes,
        ("err_signal", "cosine"),
        ("ratio (mean |error| / std of targets)", "cosine similarity"),
        strict=True,
    ):
        series = [
            Series(metric, "model", "val", "epoch"),
            Series(f"baseline/copy_last/{metric}", "copy-last latent", "val", "epoch"),
            Series(f"baseline/mean/{metric}", "mean target", "val", "epoch"),
        ]
        drew |= draw_series(ax, runs, series)
        name = (
            "Error-to-signal ratio (lower is better)"
            if metric == "err_signal"
            else "Cosine similarity (higher is better)"
        )
        _finish(ax, f"{name}, all k", "epoch", ylabel)
    return figure if drew else None


def rank_figure(runs: Sequence[Curves]) -> Figure | None:
    """Effective rank of context and target latents per epoch, with latent_dim as its ceiling."""
    figure, (ax,) = _new_figure(1, width=7.0)
    series = [
        Series("rank/context", "context latents", "val", "epoch"),
        Series("rank/target", "target latents", "val", "epoch"),
    ]
    if not draw_series(ax, runs, series):
        return None
    for dim in sorted({run.latent_dim for run in runs if run.latent_dim}):
        ax.axhline(
            dim, color="grey", linestyle=":", linewidth=1.2, label=f"latent_dim = {dim} (maximum)"
        )
    _finish(
        ax,
        "Effective rank of the latents (collapse: falls towards 1)",
        "epoch",
        "effective rank (dimensions)",
    )
    return figure


def quantizer_figure(runs: Sequence[Curves]) -> Figure | None:
    """Codebook usage (per batch and over the running window) and perplexity, against steps."""
    keys = _keys(runs, "train") | _keys(runs, "val")
    if not any(k.startswith("quantizer/") for k in keys):
        return None
    figure, axes = _new_figure(2, width=6.0)
    usage = [
        Series("quantizer/usage", "train, per batch"),
        Series("quantizer/usage_window", "train, running window"),
        Series("quantizer/usage", "validation", "val"),
    ]
    draw_series(axes[0], runs, usage)
    axes[0].set_ylim(bottom=0)
    _finish(axes[0], "Codebook usage (codes used / codebook size)", "step", "fraction of codes")
    draw_series(
        axes[1],
        runs,
        [
            Series("quantizer/perplexity", "train"),
            Series("quantizer/perplexity", "validation", "val"),
        ],
        positive=True,
    )
    for size in sorted({run.codebook_size for run in runs if run.codebook_size}):
        axes[1].axhline(
            size,
            color="grey",
            linestyle=":",
            linewidth=1.2,
            label=f"codebook size {size} (maximum)",
        )
        axes[1].set_yscale(
            "log"
        )  # perplexity >= 1; collapse (near 1) stays visible below the maximum
    _finish(axes[1], "Code perplexity (exp entropy of the histogram)", "step", "perplexity (codes)")
    return figure


def optimisation_figure(runs: Sequence[Curves]) -> Figure | None:
    """Gradient norm before clipping with the clip threshold, and the learning rate."""
    figure, axes = _new_figure(2, width=6.0)
    drew = draw_series(
        axes[0], runs, [Series("grad_norm", "gradient norm (before clipping)")], positive=True
    )
    for r, run in enumerate(runs):
        if run.grad_clip is not None and drew:
            color = "C3" if len(runs) == 1 else f"C{r % 10}"
            prefix = "" if len(runs) == 1 else f"{run.name}: "
            axes[0].axhline(
                run.grad_clip,
                color=color,
                linestyle=":",
                linewidth=1.5,
                label=f"{prefix}clip threshold (train.grad_clip = {run.grad_clip:g})",
            )
    _finish(axes[0], "Global gradient norm before clipping", "step", "L2 norm")
    drew_lr = draw_series(axes[1], runs, [Series("lr", "learning rate")])
    _finish(axes[1], "Learning rate (warm-up, cosine decay)", "step", "learning rate")
    return figure if drew or drew_lr else None


CURVE_FIGURES = (
    ("losses", "Losses", loss_figure),
    ("validation_loss", "Validation loss", validation_loss_figure),
    ("prediction", "Prediction quality against the baselines", prediction_figure),
    ("effective_rank", "Effective rank", rank_figure),
    ("quantizer", "Quantizer", quantizer_figure),
    ("optimisation", "Gradient norm and learning rate", optimisation_figure),
)
"""(file stem, title, function) of every curve figure, in report order."""


# ----------------------------------------------------------------------------- per k
def per_k_figure(
    ks: list[int], panels: list[tuple[str, str, dict[str, list[float]]]]
) -> Figure | None:
    """Grouped bars per horizon. panels: (title, y label, {estimator: [value per k]})."""
    panels = [p for p in panels if p[2]]
    if not panels or not ks:
        return None
    figure, axes = _new_figure(len(panels), width=5.2)
    positions = np.arange(len(ks))
    for ax, (title, ylabel, bars) in zip(axes, panels, strict=True):
        width = 0.8 / len(bars)
        for i, (name, values) in enumerate(bars.items()):
            heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
            ax.bar(
                positions + (i - (len(bars) - 1) / 2) * width,
                heights,
                width,
                label=name,
                color=f"C{i}",
            )
        ax.set_xticks(positions, [str(k) for k in ks])
        ax.grid(axis="y", alpha=0.3)
        _finish(ax, title, "horizon k (steps ahead)", ylabel)
    return figure


# ----------------------------------------------------------------------------- model views
def latent_figure(episodes: list[dict[str, Any]], explained: tuple[float, float]) -> Figure | None:
    """PCA of target latents per episode, coloured by time, with predictions for k = 1..K.

    episodes: dicts with ``episode`` (index), ``path`` [T, 2] (projected target latents of
    every frame), ``t0`` (last context frame), ``ks`` [K], ``predicted`` [K, 2].
    """
    if not episodes:
        return None
    figure, axes = _new_figure(len(episodes), width=5.0, height=4.4)
    scatter = None
    for ax, ep in zip(axes, episodes, strict=True):
        path, t0, ks, predicted = ep["path"], ep["t0"], ep["ks"], ep["predicted"]
        times = np.arange(len(path))
        ax.plot(path[:, 0], path[:, 1], color="0.75", linewidth=0.8, zorder=1)
        scatter = ax.scatter(path[:, 0], path[:, 1], c=times, cmap="viridis", s=14, zorder=2)
        truth = path[t0 + np.asarray(ks)]
        ax.scatter(
            truth[:, 0],
            truth[:, 1],
            s=60,
            facecolors="none",
            edgecolors="black",
            linewidths=1.0,
            zorder=3,
            label=f"true target latent, t0+k (k={ks[0]}..{ks[-1]})",
        )
        line = np.concatenate([path[t0 : t0 + 1], predicted])
        ax.plot(line[:, 0], line[:, 1], color="C3", linestyle="--", linewidth=1.0, zorder=4)
        ax.scatter(
            predicted[:, 0],
            predicted[:, 1],
            marker="x",
            color="C3",
            s=40,
            zorder=5,
            label="predicted latent, k steps ahead",
        )
        ax.scatter(
            path[t0, 0],
            path[t0, 1],
            marker="s",
            color="C1",
            edgecolors="black",
            s=50,
            zorder=6,
            label=f"last context frame t0={t0}",
        )
        for k, point in zip(ks, predicted, strict=True):
            ax.annotate(
                str(k), point, textcoords="offset points", xytext=(3, 3), fontsize=7, color="C3"
            )
        ax.set_title(f"validation episode {ep['episode']}", fontsize=11)
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)")
        ax.grid(alpha=0.3)
    figure.legend(
        *axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=9
    )
    if scatter is not None:
        figure.colorbar(scatter, ax=axes, label="time step within the episode", shrink=0.8)
    figure.suptitle("Target latents (PCA, 2 components) with the model's predictions")
    return figure


def rollout_figure(episodes: list[dict[str, Any]], box: tuple[float, float]) -> Figure | None:
    """True ball positions against probe-decoded predicted positions in the box.

    episodes: dicts with ``episode``, ``t0``, ``ks`` [K], ``true`` [T', N, 2] (positions of the
    context frames and of t0+1..t0+K), ``context`` [W, N, 2], ``decoded`` [K, N, 2].
    """
    if not episodes:
        return None
    figure, axes = _new_figure(len(episodes), width=4.6, height=4.8)
    for ax, ep in zip(axes, episodes, strict=True):
        ax.add_patch(
            Rectangle((0, 0), box[0], box[1], fill=False, edgecolor="black", linewidth=1.5)
        )
        true, decoded, context = ep["true"], ep["decoded"], ep["context"]
        for ball in range(true.shape[1]):
            color = f"C{ball % 10}"
            ax.plot(
                true[:, ball, 0],
                true[:, ball, 1],
                color=color,
                marker=".",
                markersize=5,
                linewidth=1.3,
                label="true path" if ball == 0 else None,
            )
            ax.plot(
                context[-1, ball, 0],
                context[-1, ball, 1],
                marker="s",
                color=color,
                markeredgecolor="black",
                markersize=7,
                linestyle="none",
                label="last context frame" if ball == 0 else None,
            )
            ax.plot(
                decoded[:, ball, 0],
                decoded[:, ball, 1],
                color=color,
                marker="x",
                markersize=6,
                linestyle="--",
                linewidth=1.0,
                label="probe-decoded prediction" if ball == 0 else None,
            )
        ks = ep["ks"]
        ax.set_title(
            f"validation episode {ep['episode']}, t0={ep['t0']}, k={ks[0]}..{ks[-1]}", fontsize=10
        )
        margin = 0.05 * max(box)
        low = (
            np.minimum(np.concatenate([true, decoded]).reshape(-1, 2).min(0), 0.0) - margin
        )  # decoded points may
        high = (
            np.maximum(np.concatenate([true, decoded]).reshape(-1, 2).max(0), box) + margin
        )  # leave the box: show them
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_aspect("equal")
        ax.set_xlabel("x (box units)")
        ax.set_ylabel("y (box units)")
    handles = [
        Line2D([], [], color="0.3", marker=".", label="true path"),
        Line2D(
            [],
            [],
            color="0.3",
            marker="s",
            markeredgecolor="black",
            linestyle="none",
            label="last context frame",
        ),
        Line2D(
            [],
            [],
            color="0.3",
            marker="x",
            linestyle="--",
            label="probe-decoded prediction, k = 1..K",
        ),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
    figure.suptitle("Ball positions in the box, one colour per ball")
    return figure


def arc_colormap(palette: Sequence[tuple[int, int, int]]) -> ListedColormap:
    """The ARC palette (colours 0..9) plus a light grey for the padding value 10."""
    colours = [tuple(c / 255 for c in rgb) for rgb in palette] + [(0.9, 0.9, 0.9)]
    return ListedColormap(colours)


def grid_figure(
    rows: list[dict[str, Any]], palette: Sequence[tuple[int, int, int]]
) -> Figure | None:
    """ARC grids per validation episode: context, true next grid, probe-decoded prediction.

    rows: dicts with ``episode``, ``t0``, ``k``, ``context`` / ``truth`` / ``decoded`` [H, W]
    int grids (already cropped to the true size), ``accuracy`` (cell accuracy of decoded).
    """
    if not rows:
        return None
    cmap = arc_colormap(palette)
    figure = Figure(figsize=(10.5, 3.6 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row_axes, row in zip(axes, rows, strict=True):
        titles = (
            f"context, last frame (t={row['t0']})",
            f"true grid at t+{row['k']}",
            f"probe-decoded prediction, k={row['k']}\n(cell accuracy {row['accuracy']:.2f})",
        )
        for ax, grid, title in zip(
            row_axes, (row["context"], row["truth"], row["decoded"]), titles, strict=True
        ):
            ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(palette) + 0.5, interpolation="nearest")
            ax.set_xticks(np.arange(-0.5, grid.shape[1], 1), minor=True)
            ax.set_yticks(np.arange(-0.5, grid.shape[0], 1), minor=True)
            ax.grid(which="minor", color="0.35", linewidth=0.4)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.set_title(title, fontsize=10)
        row_axes[0].set_ylabel(f"validation episode {row['episode']}")
    figure.suptitle("ARC grids in the ARC palette (light grey: padding)")
    return figure
