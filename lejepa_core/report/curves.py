"""Training-curve figures of ``lejepa report`` and ``lejepa compare`` (from ``metrics.jsonl``).

Every function takes a list of ``Curves`` (one per run) and returns a matplotlib ``Figure``,
or None when the runs logged nothing it could draw. One run colours each series; several
runs (``lejepa compare``) colour each run and tell the series apart by line style, so the
same code draws the report and the comparison. Titles and captions: ``figures.FIGURES``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lejepa_core import artifacts as keys
from lejepa_core.report.canvas import finish, new_figure
from lejepa_core.report.run_files import (
    COPY_LAST_CONTEXT_PREFIX,
    NULL_LEVEL,
    NULL_LEVEL_EFFECTIVE,
    RunFiles,
)

LINESTYLES = ("-", "--", ":", "-.")


@attrs.define
class Curves:
    """The logged records of one run. train / val: ``metrics.jsonl`` records of that split,
    one per step (sorted); grad_clip: ``train.grad_clip`` of the resolved recipe (or None);
    latent_dim: ``model.latent_dim``; codebook_size: as the quantizer logged it."""

    name: str
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    grad_clip: float | None = None
    latent_dim: int | None = None
    codebook_size: int | None = None

    @classmethod
    def of(cls, run: RunFiles, name: str | None = None) -> Curves:
        """The curves of a run directory, named ``name`` (default: the directory's name)."""
        return cls(
            name=name or run.name,
            train=run.train,
            val=run.val,
            grad_clip=run.recipe.get("train", {}).get("grad_clip"),
            latent_dim=run.recipe.get("model", {}).get("latent_dim"),
            codebook_size=run.codebook_size(),
        )

    def records(self, split: str) -> list[dict[str, Any]]:
        return self.train if split == "train" else self.val


@attrs.frozen
class Series:
    """One line: ``key`` of the records of ``split`` against ``x`` ("step" or "epoch")."""

    key: str
    label: str
    split: str = "train"
    x: str = "step"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _points(records: list[dict[str, Any]], key: str, x: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[key]) for r in records if _number(r.get(key)) and _number(r.get(x))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _keys(runs: Sequence[Curves], split: str) -> set[str]:
    return {key for run in runs for record in run.records(split) for key in record}


def run_colour(runs: Sequence[Curves], r: int, single: str = "C3") -> tuple[str, str]:
    """(colour, legend prefix) of run ``r``'s marks: ``single`` when it is the only run."""
    if len(runs) == 1:
        return single, ""
    return f"C{r % 10}", f"{runs[r].name}: "


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
            if single:
                color, style = f"C{s}", ("--" if mixed and line.split == "val" else "-")
                label = line.label
            else:
                color, style = f"C{r % 10}", LINESTYLES[s % len(LINESTYLES)]
                label = f"{run.name}: {line.label}"
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


def max_line(ax: Any, value: float, label: str) -> None:
    """A dotted grey reference line (a ceiling, a threshold) at ``value``."""
    ax.axhline(value, color="grey", linestyle=":", linewidth=1.2, label=label)


def found_keys(runs: Sequence[Curves]) -> set[str]:
    """Every key of every train and val record of the runs."""
    return _keys(runs, "train") | _keys(runs, "val")


def last_value(runs: Sequence[Curves], key: str) -> float | None:
    """The last finite value of ``key`` logged by any of the runs (train, then val records)."""
    values = [r[key] for run in runs for r in run.train + run.val if _number(r.get(key))]
    return values[-1] if values else None


def note(ax: Any, text: str) -> None:
    """A note inside a panel: what it does not show, and why."""
    ax.text(
        0.02,
        0.02,
        text,
        transform=ax.transAxes,
        fontsize=8,
        color="#8a5a00",
        va="bottom",
        wrap=True,
    )


def copy_last_labels(found: set[str]) -> tuple[str, str]:
    """Legend names of ``baseline/copy_last/*`` and ``baseline/copy_last_context/*``: when the
    context-encoder variant is logged beside it, copy-last is the target encoder's (issue 10);
    alone it is the run's copy-last, whichever encoder that run used."""
    if any(key.startswith(COPY_LAST_CONTEXT_PREFIX) for key in found):
        return "copy-last latent (target encoder)", "copy-last latent (context encoder)"
    return "copy-last latent", "copy-last latent (context encoder)"


def null_level_lines(ax: Any, runs: Sequence[Curves], label: str) -> str:
    """SIGReg's reference levels on the panel of ``loss/<label>`` when the loss logs them:
    ``null_level`` (isotropic Gaussian latents) and, when logged, ``null_level_effective``
    (the level for what is fed in, e.g. W correlated frames); returns a title suffix naming
    the level that applies ("" when the loss logs neither)."""
    prefix = f"{keys.LOSS_PREFIX}{label}/"
    null = last_value(runs, prefix + NULL_LEVEL)
    effective = last_value(runs, prefix + NULL_LEVEL_EFFECTIVE)
    if null is None and effective is None:
        return ""
    if null is not None:
        applies = " (applies)" if effective is None else ""
        max_line(ax, null, f"null level, Gaussian latents = {null:.3g}{applies}")
    if effective is not None:
        ax.axhline(
            effective,
            color="black",
            linestyle="-.",
            linewidth=1.2,
            label=f"null level for what is fed in = {effective:.3g} (applies)",
        )
    return f"; null level {effective if effective is not None else null:.3g}"


# ----------------------------------------------------------------------------- figures
def loss_figure(runs: Sequence[Curves]) -> Figure | None:
    """One panel per loss part (``loss/<label>``, unweighted, and the weighted total):
    training means between log points (solid) and validation (dashed), against steps."""
    found = found_keys(runs)
    parts = sorted(
        k
        for k in found
        if k.startswith(keys.LOSS_PREFIX) and k.count("/") == 1 and k != keys.LOSS_TOTAL
    )
    names = ([keys.LOSS_TOTAL] if keys.LOSS_TOTAL in found else []) + parts
    if not names:
        return None
    figure, axes = new_figure(len(names))
    for ax, key in zip(axes, names, strict=True):
        label = key.split("/", 1)[1]
        series = [Series(key, f"train {label}"), Series(key, f"validation {label}", split="val")]
        draw_series(ax, runs, series, positive=True)
        what = "weighted sum of the parts" if key == keys.LOSS_TOTAL else "unweighted"
        null = "" if key == keys.LOSS_TOTAL else null_level_lines(ax, runs, label)
        finish(ax, f"{key} ({what}{null})", "step", "loss")
    figure.suptitle("Losses")
    return figure


def _best(run: Curves) -> dict[str, Any] | None:
    best = [r for r in run.val if r.get(keys.BEST) is True and _number(r.get(keys.LOSS_TOTAL))]
    return best[-1] if best else None


def validation_loss_figure(runs: Sequence[Curves]) -> Figure | None:
    """Validation total loss per epoch; the best epoch (lowest, the one in best.pt) starred."""
    figure, (ax,) = new_figure(1, width=7.0)
    series = [Series(keys.LOSS_TOTAL, "validation loss", split="val", x="epoch")]
    if not draw_series(ax, runs, series, positive=True):
        return None
    for r, run in enumerate(runs):
        best = _best(run)
        if best is None:
            continue
        color, prefix = run_colour(runs, r)
        value = best[keys.LOSS_TOTAL]
        ax.plot(
            [best["epoch"]],
            [value],
            marker="*",
            markersize=16,
            color=color,
            linestyle="none",
            markeredgecolor="black",
            label=f"{prefix}best epoch {best['epoch']} ({value:.4g})",
        )
    finish(
        ax,
        "Validation loss (best epoch starred: checkpoints/best.pt)",
        "epoch (0-based, as logged)",
        "loss",
    )
    return figure


def prediction_figure(runs: Sequence[Curves]) -> Figure | None:
    """Error-to-signal ratio and cosine of the predictions against the baselines, per epoch:
    copy-last (and its context-encoder variant when logged) and the mean target."""
    figure, axes = new_figure(2, width=6.0)
    copy_last, copy_last_context = copy_last_labels(found_keys(runs))
    drew = False
    panels = (
        (
            keys.ERR_SIGNAL,
            "ratio (mean |error| / std of targets)",
            "Error-to-signal ratio (lower is better)",
        ),
        (keys.COSINE, "cosine similarity", "Cosine similarity (higher is better)"),
    )
    for ax, (metric, ylabel, name) in zip(axes, panels, strict=True):
        series = [
            Series(metric, "model", "val", "epoch"),
            Series(f"{keys.COPY_LAST_PREFIX}{metric}", copy_last, "val", "epoch"),
            Series(f"{COPY_LAST_CONTEXT_PREFIX}{metric}", copy_last_context, "val", "epoch"),
            Series(f"{keys.MEAN_PREFIX}{metric}", "mean target", "val", "epoch"),
        ]
        drew |= draw_series(ax, runs, series)
        finish(ax, f"{name}, all k", "epoch", ylabel)
    return figure if drew else None


def rank_figure(runs: Sequence[Curves]) -> Figure | None:
    """Effective rank of context and target latents per epoch, with latent_dim as its ceiling."""
    figure, (ax,) = new_figure(1, width=7.0)
    series = [
        Series("rank/context", "context latents", "val", "epoch"),
        Series("rank/target", "target latents", "val", "epoch"),
    ]
    if not draw_series(ax, runs, series):
        return None
    for dim in sorted({run.latent_dim for run in runs if run.latent_dim}):
        max_line(ax, dim, f"latent_dim = {dim} (maximum)")
    finish(
        ax,
        "Effective rank of the latents (collapse: falls towards 1)",
        "epoch",
        "effective rank (dimensions)",
    )
    return figure
