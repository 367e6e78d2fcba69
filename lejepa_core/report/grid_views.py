"""The grid picture: context, truth, the model's decoded prediction and the baselines.

Everything env-specific comes from the run's ``EnvInfo``: ``cell_values`` (else the values
the file holds), the crop to the cells that are not ``pad_value``, the colours of
``palette`` (else matplotlib's qualitative ``tab10`` / ``tab20``), and the env's grid rules
(objects, the constant-velocity baseline: ``eval.grid.rules_for``).

Shape legend: ``H x W`` a grid.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.grid import fit_grid_probe, rules_for
from lejepa_core.eval.grid_metrics import grid_figures
from lejepa_core.eval.load import PROBE_BATCHES, PROBE_SEED

PAD_GREY = (0.9, 0.9, 0.9)


def grid_colours(env: EnvInfo, cell_values: int) -> ListedColormap:
    """One colour per cell value: ``env.palette`` (RGB 0..255), light grey for
    ``env.pad_value``, matplotlib's tab10 (tab20 past 10 values) for the rest."""
    count = max(cell_values, (env.pad_value or 0) + 1)
    default = matplotlib.colormaps["tab10" if count <= 10 else "tab20"].colors
    colours = []
    for value in range(count):
        if value < len(env.palette):
            colours.append(tuple(c / 255 for c in env.palette[value]))
        elif value == env.pad_value:
            colours.append(PAD_GREY)
        else:
            colours.append(default[value % len(default)])
    return ListedColormap(colours)


def crop(grids: list[torch.Tensor], pad_value: int | None) -> tuple[slice, slice]:
    """Rows and columns that hold a value other than ``pad_value`` in any of the [H, W]
    grids; everything when there is no pad value or nothing but padding."""
    if pad_value is None:
        return slice(None), slice(None)
    used = sum((g != pad_value).long() for g in grids) > 0
    rows, cols = used.any(1).nonzero().flatten(), used.any(0).nonzero().flatten()
    if len(rows) == 0:
        return slice(None), slice(None)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _label(
    name: str, rules: Any, grid: torch.Tensor, truth: torch.Tensor, last: torch.Tensor
) -> str:
    """A panel title with the sample's active-cell accuracy and object recall."""
    figures = grid_figures(rules, grid[None], truth[None], last[None])
    return (
        f"{name}\nactive acc {figures['active_accuracy']:.2f}, "
        f"obj recall {figures['object_recall']:.2f}"
    )


@torch.no_grad()
def grid_figure(views: Any) -> Figure | None:
    """Per episode (``report.views.ModelViews``): the last context grid, the true grid at
    t0+1, the grid the grid probe decodes from the predicted latent for k = 1, the
    constant-velocity and copy-last grids, each with its active-cell accuracy and object
    recall. None unless the observations are grids."""
    cell_values = views.loaded.cell_values()
    if cell_values is None:
        return None
    env = views.env
    cmap = grid_colours(env, cell_values)
    rules = rules_for(env, cell_values)
    fit = views.probe_fit
    probe = fit_grid_probe(
        views.loaded,
        rules,
        batches=fit.get("batches", PROBE_BATCHES),
        seed=fit.get("seed", PROBE_SEED),
    )
    columns = 5
    figure = Figure(figsize=(3.3 * columns, 3.7 * len(views.episodes)), layout="constrained")
    axes = figure.subplots(len(views.episodes), columns, squeeze=False)
    for row_axes, ep in zip(axes, views.episodes, strict=True):
        decoded = probe.decode(ep.predicted[:1])[0].cpu()  # [H, W]
        obs = ep.obs.long().cpu()
        context, truth = obs[max(0, ep.t0 - 1) : ep.t0 + 1], obs[ep.t0 + 1]
        last = context[-1]
        velocity = rules.constant_velocity(context[None], torch.ones(1, dtype=torch.long))[0]
        r, c = crop([last, truth], env.pad_value)
        panels = (
            (last, f"context, last frame (t={ep.t0})"),
            (truth, "true grid at t+1"),
            (decoded, _label("model, k=1 (grid probe)", rules, decoded, truth, last)),
            (velocity, _label("constant velocity", rules, velocity, truth, last)),
            (last, _label("copy last grid", rules, last, truth, last)),
        )
        for ax, (grid, title) in zip(row_axes, panels, strict=True):
            grid = grid[r, c].numpy()
            ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, interpolation="nearest")
            ax.set_xticks(np.arange(-0.5, grid.shape[1], 1), minor=True)
            ax.set_yticks(np.arange(-0.5, grid.shape[0], 1), minor=True)
            ax.grid(which="minor", color="0.35", linewidth=0.4)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.set_title(title, fontsize=9)
        row_axes[0].set_ylabel(f"validation episode {ep.episode}")
    palette = "the env's palette" if env.palette else "matplotlib's qualitative palette"
    padding = ", light grey: padding" if env.pad_value is not None else ""
    figure.suptitle(f"Grids in {palette} ({cell_values} cell values{padding})")
    return figure
