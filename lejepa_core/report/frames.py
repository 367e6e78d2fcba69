"""Pictures of runs on image observations: the frames with decoded predictions drawn on them,
and the latent PCA coloured by position.

Drawn for float observations ``[C, H, W]`` or ``[H, W]`` (no named feature axis) whose env publishes ``positions`` and
``box`` (``EnvInfo``) and whose file holds the true state: a frame is drawn filling the box,
row 0 at the top (matplotlib's ``imshow`` with ``extent = (0, w, 0, h)``), so a position
``(x, y)`` of the state lands where the env rendered it. Channels get one colour each (tab10,
channel c in colour c: the colour of object c in the other pictures). Nothing here knows an env.

Shape legend: ``T`` frames of an episode, ``W`` context frames, ``K`` horizons drawn, ``D``
latent_dim, ``N`` objects, ``C`` channels, ``H x W`` pixels.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lejepa_core.report.canvas import NotDrawn
from lejepa_core.report.views import ModelViews, position_indices

FRAME_HORIZONS = (1, 2, 5, 10)
"""The k of the predicted frames drawn (those the episode reaches)."""


def _is_image_run(views: ModelViews) -> bool:
    """Float observations of 2 or 3 axes whose last axis is not named features (a state
    ``[N, F]`` names its features: ``spec.feature_names``)."""
    spec = views.loaded.spec
    images = len(spec.obs_shape) in (2, 3) and not spec.feature_names
    return views.loaded.cell_values() is None and images


def frame_rgb(frame: torch.Tensor, low: float, high: float) -> np.ndarray:
    """One frame ``[C, H, W]`` or ``[H, W]`` -> RGB ``[H, W, 3]`` in [0, 1]: channel c in
    tab10 colour c (one channel: grey), values scaled from ``[low, high]``."""
    x = ((frame.float().cpu() - low) / max(high - low, 1e-12)).clamp(0, 1).numpy()
    if x.ndim == 2:
        return np.repeat(x[..., None], 3, axis=-1)
    colours = np.asarray(matplotlib.colormaps["tab10"].colors)[np.arange(len(x)) % 10]  # [C, 3]
    return np.clip(np.einsum("chw,ck->hwk", x, colours), 0.0, 1.0)


def _positions_or_reason(views: ModelViews) -> list[int]:
    env = views.env
    pos = position_indices(env)
    if pos is None or env.box is None:
        raise NotDrawn("the env publishes no 2-D `positions` and `box` to place them on frames")
    if views.episodes[0].states is None:
        raise NotDrawn("the data file holds no state to decode positions into")
    return pos


@torch.no_grad()
def frames_figure(views: ModelViews) -> Figure | None:
    """Per validation episode (a row): the W context frames, then the true frame t0+k for
    several k with the true positions (circles) and the probe-decoded positions of the
    predicted latent (crosses) drawn on it. None for runs that are not on images."""
    if not _is_image_run(views):
        return None
    pos = _positions_or_reason(views)
    probe, w, (box_w, box_h) = views.probe(), views.context_frames, views.env.box
    episodes = views.episodes[:3]
    ks = [k for k in FRAME_HORIZONS if k <= len(episodes[0].ks)]
    columns = w + len(ks)
    figure = Figure(figsize=(2.0 * columns, 2.25 * len(episodes) + 0.6), layout="constrained")
    axes = figure.subplots(len(episodes), columns, squeeze=False)
    for row, ep in zip(axes, episodes, strict=True):
        low, high = float(ep.obs.min()), float(ep.obs.max())
        decoded = probe.decode(ep.predicted)[..., pos].reshape(len(ep.ks), -1, 2).cpu()  # [K, N, 2]
        true = ep.states[..., pos].reshape(len(ep.states), -1, 2).float().cpu()  # [T, N, 2]
        panels = [(ep.t0 - w + 1 + i, None) for i in range(w)] + [(ep.t0 + k, k) for k in ks]
        for ax, (t, k) in zip(row, panels, strict=True):
            ax.imshow(frame_rgb(ep.obs[t], low, high), extent=(0, box_w, 0, box_h))
            ax.set_xticks([])
            ax.set_yticks([])
            if k is None:
                ax.set_title(f"context t={t}", fontsize=9)
                continue
            ax.set_title(f"true frame t0+{k}", fontsize=9)
            for n in range(true.shape[1]):
                colour = f"C{n % 10}"
                ax.plot(*true[t, n], marker="o", markersize=9, fillstyle="none", color="white")
                ax.plot(*decoded[k - 1, n], marker="x", markersize=8, mew=2, color=colour)
            ax.set_xlim(0, box_w)
            ax.set_ylim(0, box_h)
        row[0].set_ylabel(f"episode {ep.episode}", fontsize=9)
    handles = [
        Line2D([], [], marker="o", fillstyle="none", color="0.4", ls="none", label="true position"),
        Line2D([], [], marker="x", mew=2, color="0.4", ls="none", label="probe-decoded prediction"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)
    figure.suptitle("Context frames, and the true frame k steps ahead with the decoded prediction")
    return figure


@torch.no_grad()
def latent_position_figure(views: ModelViews) -> Figure | None:
    """PCA (2 components) of the target latents of the drawn validation episodes, coloured by
    the x and the y of the first objects (a panel each). None for runs not on images."""
    if not _is_image_run(views):
        return None
    pos = _positions_or_reason(views)
    latents = torch.cat([views.loaded.target_encoder(ep.obs).float() for ep in views.episodes])
    states = torch.cat([ep.states.float() for ep in views.episodes])
    where = states[..., pos].reshape(len(states), -1, 2).cpu().numpy()  # [T, N, 2]
    centred = latents - latents.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    share = (singular.square() / singular.square().sum().clamp_min(1e-12)).tolist() + [0.0]
    points = (centred @ vh[:2].T).cpu().numpy()  # [T, 2]
    objects = min(where.shape[1], 2)
    names = views.env.positions
    figure = Figure(figsize=(4.2 * 2 * objects, 3.8), layout="constrained")
    axes = figure.subplots(1, 2 * objects, squeeze=False)[0]
    for i, ax in enumerate(axes):
        n, axis = divmod(i, 2)
        drawn = ax.scatter(points[:, 0], points[:, 1], c=where[:, n, axis], cmap="viridis", s=8)
        figure.colorbar(drawn, ax=ax, shrink=0.85, label=f"{names[axis]} of object {n}")
        ax.set_title(f"coloured by {names[axis]} of object {n}", fontsize=10)
        ax.set_xlabel(f"PC 1 ({100 * share[0]:.0f}%)")
        ax.set_ylabel(f"PC 2 ({100 * share[1]:.0f}%)")
    figure.suptitle(f"Target latents of {len(points)} validation frames (PCA) by position")
    return figure
