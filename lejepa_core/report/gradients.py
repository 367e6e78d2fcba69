"""Training-curve figures of the optimisation: the gradient norm (window mean and maximum)
with the clip threshold, the learning rate, and each loss's share of the gradient.

Functions take a list of ``curves.Curves`` like every curve figure (``lejepa compare`` passes
several). Keys a run did not log are left out with a note (older runs) or, for the gradient
shares, the picture is not drawn and the page says why.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from lejepa_core import artifacts as keys
from lejepa_core.report.canvas import NotDrawn, finish, new_figure
from lejepa_core.report.curves import Curves, Series, draw_series, found_keys, note, run_colour
from lejepa_core.report.run_files import GRAD_NORM_MAX, GRAD_SHARE_PREFIX


def optimisation_figure(runs: Sequence[Curves]) -> Figure | None:
    """Gradient norm before clipping, the mean (``grad_norm``) and the maximum
    (``grad_norm_max``, when logged) of each log window, with the clip threshold; and the
    learning rate."""
    figure, axes = new_figure(2, width=6.0)
    series = [
        Series(keys.GRAD_NORM, "mean over the log window"),
        Series(GRAD_NORM_MAX, "maximum of the log window"),
    ]
    drew = draw_series(axes[0], runs, series, positive=True)
    for r, run in enumerate(runs):
        if run.grad_clip is not None and drew:
            color, prefix = run_colour(runs, r)
            axes[0].axhline(
                run.grad_clip,
                color=color,
                linestyle=":",
                linewidth=1.5,
                label=f"{prefix}clip threshold (train.grad_clip = {run.grad_clip:g})",
            )
    if drew and GRAD_NORM_MAX not in found_keys(runs):
        note(axes[0], "grad_norm_max not logged (an older run): window means hide spikes")
    finish(axes[0], "Global gradient norm before clipping", "step", "L2 norm")
    drew_lr = draw_series(axes[1], runs, [Series(keys.LR, "learning rate")])
    finish(axes[1], "Learning rate (warm-up, cosine decay)", "step", "learning rate")
    return figure if drew or drew_lr else None


def gradient_share_figure(runs: Sequence[Curves]) -> Figure:
    """One line per loss: its share of the gradient norm on the shared parameters
    (``grad_share/<loss label>`` train records), against steps."""
    shares = sorted(
        key for key in found_keys(runs) if key.startswith(GRAD_SHARE_PREFIX) and key.count("/") == 1
    )
    if not shares:
        raise NotDrawn(
            f"metrics.jsonl has no {GRAD_SHARE_PREFIX}<loss> records (runs from before the "
            "gradient shares were logged)"
        )
    figure, (ax,) = new_figure(1, width=8.0, height=4.0)
    series = [Series(key, key.removeprefix(GRAD_SHARE_PREFIX)) for key in shares]
    draw_series(ax, runs, series)
    ax.set_ylim(bottom=0)
    finish(
        ax,
        "Each loss's share of the gradient norm on the shared parameters",
        "step",
        "share of the gradient norm",
    )
    return figure
