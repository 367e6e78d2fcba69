"""Training-curve figures of a quantizer's codebook: usage (per batch, over the running window,
and relative to what one batch can reach), perplexity, and the codes re-initialised per step.

Functions take a list of ``curves.Curves`` like every curve figure. A run without a quantizer
gets neither picture (None); keys a quantizer did not log are noted or leave their picture out.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from lejepa_core import artifacts as keys
from lejepa_core.report.canvas import NotDrawn, finish, new_figure
from lejepa_core.report.curves import Curves, Series, draw_series, found_keys, max_line, note
from lejepa_core.report.run_files import REPLACED_CODES, USAGE_RELATIVE

REFRESH_WARNING = 0.10
"""One step re-initialising more than this fraction of the codebook is a refresh discontinuity
(issue 10, item 9: the training log warns after warm-up)."""


def _has_quantizer(runs: Sequence[Curves]) -> bool:
    return any(key.startswith(keys.QUANTIZER_PREFIX) for key in found_keys(runs))


def quantizer_figure(runs: Sequence[Curves]) -> Figure | None:
    """Codebook usage (per batch, over the running window, and relative to what a batch can
    reach when logged) and perplexity, against steps; the codebook size (logged as
    ``quantizer/codebook_size``) is the perplexity's ceiling."""
    if not _has_quantizer(runs):
        return None
    q = keys.QUANTIZER_PREFIX
    relative = USAGE_RELATIVE in found_keys(runs)
    figure, axes = new_figure(3 if relative else 2, width=5.4)
    usage = [
        Series(f"{q}usage", "train, per batch"),
        Series(f"{q}usage_window", "train, running window"),
        Series(f"{q}usage", "validation", "val"),
    ]
    draw_series(axes[0], runs, usage)
    axes[0].set_ylim(bottom=0)
    if not relative:
        note(axes[0], "usage_relative not logged: per-batch usage is capped at batch / codebook")
    finish(axes[0], "Codebook usage (codes used / codebook size)", "step", "fraction of codes")
    if relative:
        reach = [Series(USAGE_RELATIVE, "train"), Series(USAGE_RELATIVE, "validation", "val")]
        draw_series(axes[1], runs, reach)
        max_line(axes[1], 1.0, "every code a batch can reach")
        axes[1].set_ylim(bottom=0)
        finish(axes[1], "Usage relative to what a batch can reach", "step", "fraction of reachable")
    ax = axes[-1]
    perplexity = [Series(f"{q}perplexity", "train"), Series(f"{q}perplexity", "validation", "val")]
    draw_series(ax, runs, perplexity, positive=True)
    for size in sorted({run.codebook_size for run in runs if run.codebook_size}):
        max_line(ax, size, f"codebook size {size} (maximum)")
        # perplexity >= 1; collapse (near 1) stays visible below the maximum
        ax.set_yscale("log")
    finish(ax, "Code perplexity (exp entropy of the histogram)", "step", "perplexity (codes)")
    return figure


def replaced_codes_figure(runs: Sequence[Curves]) -> Figure | None:
    """``quantizer/replaced_codes`` (codes re-initialised per step, the mean over each log
    window as train records hold it) against steps, with 10 % of the codebook dotted."""
    if not _has_quantizer(runs):
        return None
    if REPLACED_CODES not in found_keys(runs):
        raise NotDrawn(
            f"the quantizer logged no {REPLACED_CODES} (only codebooks that re-initialise dead "
            "codes, e.g. vq, do)"
        )
    figure, (ax,) = new_figure(1, width=8.0, height=4.0)
    draw_series(ax, runs, [Series(REPLACED_CODES, "codes re-initialised per step (window mean)")])
    for size in sorted({run.codebook_size for run in runs if run.codebook_size}):
        max_line(ax, REFRESH_WARNING * size, f"10 % of the codebook ({size} codes)")
    ax.set_ylim(bottom=0)
    finish(ax, "Codebook refresh: codes re-initialised", "step", "codes per step")
    return figure
