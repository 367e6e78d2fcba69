"""The matplotlib basics every report figure shares: the object-oriented API, no pyplot.

Figures are built as ``matplotlib.figure.Figure`` objects and rendered by the Agg canvas
(``figure_png``): no pyplot, no global backend switch, no GUI, no server, nothing to close.
"""

from __future__ import annotations

import io
import math
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


class NotDrawn(Exception):
    """Raised by a figure function that cannot draw for this run, with the reason to show."""


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def new_figure(panels: int, *, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Any]]:
    """A figure of ``panels`` axes, up to 3 per row (2 for 4 panels), each width x height inches."""
    columns = 2 if panels == 4 else min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, list(axes[:panels])


def finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels and a legend that stays off the data when it is long."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    labels = ax.get_legend_handles_labels()[1]
    if len(labels) > 5:  # many lines (compare): the legend beside the panel, off the data
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif labels:
        ax.legend(fontsize=8, loc="best")
