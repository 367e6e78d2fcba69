"""The trained model on validation episodes: latent PCA, 2-D position rollouts, grids.

Everything env-specific comes from the run's ``EnvInfo`` (``loaded.spec.env``, the metadata
the env published into the data file), never from an env's name:

- rollouts: the state features named by ``env.positions`` (none: no rollout picture), drawn
  in ``env.box`` (else the extent of the drawn positions);
- grids: ``env.cell_values`` (else the values the file holds, ``LoadedRun.cell_values()``),
  cropped to the cells that are not ``env.pad_value`` (none: not cropped), coloured by
  ``env.palette`` (else matplotlib's qualitative ``tab10`` / ``tab20``).

Shape legend: ``T`` frames of an episode, ``W`` context frames, ``K`` horizons drawn,
``D`` latent_dim, ``N`` points (balls, objects) per frame, ``H x W`` a grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from lejepa_core import artifacts
from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.evaluate import recorded_probe_fit
from lejepa_core.eval.load import LoadedRun, load_run
from lejepa_core.eval.probe import Probe
from lejepa_core.report.canvas import NotDrawn, new_figure
from lejepa_core.report.grid_views import PAD_GREY, crop, grid_colours, grid_figure
from lejepa_core.report.run_files import RunFiles

__all__ = ["PAD_GREY", "crop", "grid_colours", "grid_figure"]  # grid pictures: grid_views


@attrs.define
class EpisodeView:
    """One validation episode and the model's predictions from its last context frame t0."""

    episode: int
    obs: torch.Tensor  # [T, *obs] as the model sees them
    states: torch.Tensor | None  # [T, *state] raw, None when the file has no state
    t0: int
    ks: torch.Tensor  # [K] = 1..K
    predicted: torch.Tensor  # [K, D]


@attrs.define
class ModelViews:
    """What the model pictures draw: the loaded run and its chosen validation episodes."""

    loaded: LoadedRun
    episodes: list[EpisodeView]
    probe_fit: dict[str, Any] = attrs.field(factory=dict)  # fit_probe's arguments
    _probe: Probe | None = None

    @property
    def env(self) -> EnvInfo:
        return self.loaded.spec.env

    @property
    def context_frames(self) -> int:
        return self.loaded.recipe.data.context_frames

    def probe(self) -> Probe:
        """The run's probe (``LoadedRun.fit_probe`` with eval.json's recorded arguments: the
        probe eval.json used), fitted once."""
        if self._probe is None:
            self._probe = self.loaded.fit_probe(**self.probe_fit)
        return self._probe


def _episode_frames(data: Any, episode: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(observations [T, *obs] as the model sees them, raw states [T, *state] or None)."""
    start, end = int(data.episode_offsets[episode]), int(data.episode_offsets[episode + 1])
    return data.rows(np.arange(start, end))


@torch.no_grad()
def choose_episodes(loaded: LoadedRun, *, episodes: int, max_k: int) -> list[EpisodeView]:
    """The first ``episodes`` validation episodes longer than W frames, with t0 in the middle
    so that t0 + K stays inside, and the predicted latents for k = 1..K (``JEPAModel.predict``:
    the training path without the masker)."""
    d = loaded.recipe.data
    w = d.context_frames
    _, val_eps = loaded.data.episode_split(d.val_fraction, d.split_seed)
    chosen = []
    for e in val_eps.tolist():
        obs, states = _episode_frames(loaded.data, e)
        k_max = min(max_k, len(obs) - w)
        if k_max < 1:
            continue
        t0 = w - 1 + (len(obs) - w - k_max) // 2
        obs = obs.to(loaded.device)
        ks = torch.arange(1, k_max + 1, device=loaded.device)
        context = obs[t0 - w + 1 : t0 + 1]  # [W, *obs]
        batch = context.unsqueeze(0).expand(len(ks), *context.shape)  # [K, W, *obs]
        predicted = loaded.model.predict(batch, ks).float()  # [K, D]
        chosen.append(EpisodeView(e, obs, states, t0, ks, predicted))
        if len(chosen) == episodes:
            break
    return chosen


def load_views(
    run: RunFiles, *, device: str = "cpu", episodes: int = 3, max_k: int = 10
) -> ModelViews:
    """Load ``best.pt`` (else ``last.pt``) and the run's data file (never generated when
    missing); ``NotDrawn`` says why not. Close with ``views.loaded.data.close()``."""
    if not run.checkpoint_exists():
        raise NotDrawn(f"no {artifacts.CHECKPOINTS}/best.pt or last.pt")
    data_path = Path(run.recipe.get("data", {}).get("path", ""))
    if not data_path.is_file():
        raise NotDrawn(
            f"data file {data_path} not found "
            "(a relative data.path is read from the current directory)"
        )
    loaded = load_run(run.path, device=device)
    try:
        chosen = choose_episodes(loaded, episodes=episodes, max_k=max_k)
        if not chosen:
            w = loaded.recipe.data.context_frames
            raise NotDrawn(f"no validation episode has more than {w} frames")
    except BaseException:
        loaded.data.close()
        raise
    return ModelViews(loaded, chosen, probe_fit=recorded_probe_fit(run.evaluation))


# ----------------------------------------------------------------------------- latent PCA
@torch.no_grad()
def latent_figure(views: ModelViews) -> Figure:
    """PCA of the target latents of each episode, coloured by time, with the predictions
    for k = 1..K and the true target latents they should land on."""
    paths = [views.loaded.target_encoder(ep.obs).float() for ep in views.episodes]  # [T, D]
    everything = torch.cat(paths)
    mean = everything.mean(0)
    _, singular, vh = torch.linalg.svd(everything - mean, full_matrices=False)
    variance = singular.square() / singular.square().sum().clamp_min(1e-12)
    basis = vh[:2].T  # [D, 2]
    explained = (float(variance[0]), float(variance[1]) if len(variance) > 1 else 0.0)

    figure, axes = new_figure(len(views.episodes), width=5.0, height=4.4)
    scatter = None
    for ax, ep, latents in zip(axes, views.episodes, paths, strict=True):
        path = ((latents - mean) @ basis).cpu().numpy()  # [T, 2]
        predicted = ((ep.predicted - mean) @ basis).cpu().numpy()  # [K, 2]
        t0, ks = ep.t0, ep.ks.tolist()
        ax.plot(path[:, 0], path[:, 1], color="0.75", linewidth=0.8, zorder=1)
        scatter = ax.scatter(
            path[:, 0], path[:, 1], c=np.arange(len(path)), cmap="viridis", s=14, zorder=2
        )
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
        ax.set_title(f"validation episode {ep.episode}", fontsize=11)
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


# ----------------------------------------------------------------------------- rollouts
def position_indices(env: EnvInfo) -> list[int] | None:
    """Indices of the two ``env.positions`` features in the probed state's last axis."""
    names = env.state_names()
    if len(env.positions) != 2 or not all(p in names for p in env.positions):
        return None
    return [names.index(p) for p in env.positions]


@torch.no_grad()
def rollout_figure(views: ModelViews) -> Figure | None:
    """True 2-D positions against the probe-decoded positions of the predicted latents.

    None for grid runs; ``NotDrawn`` when the env names no positions or the file no state.
    """
    if views.loaded.cell_values() is not None:
        return None
    env, w = views.env, views.context_frames
    pos = position_indices(env)
    if pos is None:
        raise NotDrawn("the env publishes no 2-D `positions` among its state features")
    if views.episodes[0].states is None:
        raise NotDrawn("the data file holds no state to decode positions into")
    probe = views.probe()
    rollouts = []
    for ep in views.episodes:
        decoded = probe.decode(ep.predicted)  # [K, *state]
        true = ep.states[ep.t0 - w + 1 : ep.t0 + len(ep.ks) + 1].float()  # [W + K, *state]
        rollouts.append(
            {
                "ep": ep,
                "true": true[..., pos].reshape(len(true), -1, 2).cpu().numpy(),  # [W + K, N, 2]
                "decoded": decoded[..., pos].reshape(len(ep.ks), -1, 2).cpu().numpy(),  # [K, N, 2]
            }
        )
    if env.box is not None:
        low, high = np.zeros(2), np.asarray(env.box)
    else:  # the extent of the drawn true positions
        every = np.concatenate([r["true"].reshape(-1, 2) for r in rollouts])
        low, high = every.min(0), every.max(0)
    area = "the box (env metadata)" if env.box is not None else "the extent of the drawn paths"
    x_name, y_name = env.positions

    figure, axes = new_figure(len(rollouts), width=4.6, height=4.8)
    for ax, r in zip(axes, rollouts, strict=True):
        ep, true, decoded = r["ep"], r["true"], r["decoded"]
        ax.add_patch(
            Rectangle(tuple(low), *(high - low), fill=False, edgecolor="black", linewidth=1.5)
        )
        for point in range(true.shape[1]):
            color = f"C{point % 10}"
            ax.plot(
                true[:, point, 0],
                true[:, point, 1],
                color=color,
                marker=".",
                markersize=5,
                linewidth=1.3,
            )
            ax.plot(
                true[w - 1, point, 0],
                true[w - 1, point, 1],
                marker="s",
                color=color,
                markeredgecolor="black",
                markersize=7,
                linestyle="none",
            )
            ax.plot(
                decoded[:, point, 0],
                decoded[:, point, 1],
                color=color,
                marker="x",
                markersize=6,
                linestyle="--",
                linewidth=1.0,
            )
        ks = ep.ks.tolist()
        ax.set_title(
            f"validation episode {ep.episode}, t0={ep.t0}, k={ks[0]}..{ks[-1]}", fontsize=10
        )
        # decoded points may leave the area: widen the axes to show them
        margin = 0.05 * max(high - low)
        drawn = np.concatenate([true, decoded]).reshape(-1, 2)
        ax.set_xlim(
            min(drawn[:, 0].min(), low[0]) - margin, max(drawn[:, 0].max(), high[0]) + margin
        )
        ax.set_ylim(
            min(drawn[:, 1].min(), low[1]) - margin, max(drawn[:, 1].max(), high[1]) + margin
        )
        ax.set_aspect("equal")
        ax.set_xlabel(f"{x_name} (state units)")
        ax.set_ylabel(f"{y_name} (state units)")
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
    figure.suptitle(f"Positions ({x_name}, {y_name}) in {area}, one colour per object")
    return figure
