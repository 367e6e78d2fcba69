"""The model pictures of a run's report: latent PCA, ball rollouts, ARC grids.

Loads ``checkpoints/best.pt`` (else ``last.pt``) through ``evaluate.load_run`` and the run's
data file; never generates a missing data file. Shape legend: ``T`` frames of an episode,
``W`` context frames, ``K`` horizons drawn, ``D`` latent_dim, ``N`` balls.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lejepa_core.report import RunFiles


def env_box(data: Any, positions: Any) -> tuple[float, float]:
    """The box ``[0, w] x [0, h]`` of the file's environment (its ``config.box``); without
    one, the smallest box from 0 that holds every drawn position."""
    try:
        import gymnasium

        from lejepa_core.registry import ensure_envs_registered

        ensure_envs_registered()
        env = gymnasium.make(data.env_id, **dict(data.env_kwargs or {}))
        try:
            w, h = env.unwrapped.config.box
            return float(w), float(h)
        finally:
            env.close()
    except Exception:  # noqa: BLE001 - any env without a box: fall back to the data
        top = positions.reshape(-1, 2).max(0).values
        return float(max(1.0, top[0])), float(max(1.0, top[1]))


def episode_frames(data: Any, episode: int) -> tuple[Any, Any]:
    """(observations [T, *obs] as the model sees them, raw states [T, *state] or None)."""
    import numpy as np

    start, end = int(data.episode_offsets[episode]), int(data.episode_offsets[episode + 1])
    return data.rows(np.arange(start, end))


def predict_latents(model: Any, context_obs: Any, ks: Any) -> Any:
    """context_obs [W, *obs], ks [K] -> predicted latents [K, D] (the training path:
    unmasked context encoder, quantizer when the model has one, predictor)."""
    from lejepa_core.training.step import forward_context

    batch = context_obs.unsqueeze(0).expand(len(ks), *context_obs.shape)  # [K, W, *obs]
    context = forward_context(model.context_encoder, None, model.quantizer, batch, None)
    return model.predictor(context.context_quantized, ks).float()


def _fit_probe(
    recipe: Any, data: Any, target_encoder: Any, device: Any, one_hot: bool
) -> tuple[Any, Any]:
    """Ridge probe target latent -> raw state (or one-hot cells) on training episodes."""
    import torch

    from lejepa_core.data.sampler import WindowSampler
    from lejepa_core.evaluate import _one_hot_cells, ridge_fit

    train_eps, _ = data.episode_split(recipe.data.val_fraction, recipe.data.split_seed)
    sampler = WindowSampler(
        data,
        train_eps,
        context_frames=recipe.data.context_frames,
        horizons=tuple(recipe.data.horizons),
        device=device,
    )
    z, y = [], []
    for b in sampler.fixed_batches(min(recipe.train.batch_size, 256), 4, 1234):
        z.append(target_encoder(b.target_obs).float())
        state = b.target_state if b.target_state is not None else b.target_obs
        y.append(_one_hot_cells(state) if one_hot else state.flatten(1).float())
    return ridge_fit(torch.cat(z), torch.cat(y))


def _crop(*grids: Any) -> tuple[slice, slice]:
    """Rows and columns that hold a colour (not padding) in any of the [H, W] grids."""
    from lejepa_envs.arc_grid import PAD_VALUE

    used = sum((g != PAD_VALUE).long() for g in grids) > 0
    rows, cols = used.any(1).nonzero().flatten(), used.any(0).nonzero().flatten()
    if len(rows) == 0:
        return slice(None), slice(None)
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def model_figures(
    run: RunFiles, *, device: str = "cpu", episodes: int = 3, max_k: int = 10
) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """((stem, title, figure) of the model pictures, notes). Loads ``best.pt`` (else ``last.pt``)
    through ``evaluate.load_run``; never generates a missing data file."""
    import torch

    from lejepa_core import report_plots as plots
    from lejepa_core.evaluate import _decode_cells, feature_groups, load_run, ridge_predict

    checkpoints = run.path / "checkpoints"
    if not (checkpoints / "best.pt").is_file() and not (checkpoints / "last.pt").is_file():
        return [], ["latent and rollout pictures skipped: no checkpoints/best.pt or last.pt"]
    data_path = Path(run.recipe.get("data", {}).get("path", ""))
    if not data_path.is_file():
        return [], [
            f"latent and rollout pictures skipped: data file {data_path} not found "
            "(a relative data.path is read from the current directory)"
        ]
    recipe, data, model, target_encoder, torch_device = load_run(run.path, device=device)
    notes: list[str] = []
    try:
        with torch.no_grad():
            w = recipe.data.context_frames
            _, val_eps = data.episode_split(recipe.data.val_fraction, recipe.data.split_seed)
            grid = data.state_shape is None and not data.obs_dtype.startswith("float")
            chosen = []  # (episode, obs [T, *obs], states [T, *state] | None, t0, ks [K])
            for e in val_eps.tolist():
                obs, states = episode_frames(data, e)
                k_max = min(max_k, len(obs) - w)
                if k_max >= 1:
                    t0 = w - 1 + (len(obs) - w - k_max) // 2
                    chosen.append(
                        (
                            e,
                            obs.to(torch_device),
                            states,
                            t0,
                            torch.arange(1, k_max + 1, device=torch_device),
                        )
                    )
                if len(chosen) == episodes:
                    break
            if not chosen:
                return [], [
                    f"latent pictures skipped: no validation episode has more than {w} frames"
                ]
            paths = [target_encoder(obs).float() for _, obs, _, _, _ in chosen]  # [T, D] each
            predicted = [
                predict_latents(model, obs[t0 - w + 1 : t0 + 1], ks) for _, obs, _, t0, ks in chosen
            ]  # [K, D]
            everything = torch.cat(paths)
            mean = everything.mean(0)
            _, singular, vh = torch.linalg.svd(everything - mean, full_matrices=False)
            variance = singular.square() / singular.square().sum().clamp_min(1e-12)
            basis = vh[:2].T  # [D, 2]
            latent_eps = [
                {
                    "episode": e,
                    "path": ((p - mean) @ basis).cpu().numpy(),
                    "t0": t0,
                    "ks": ks.tolist(),
                    "predicted": ((z - mean) @ basis).cpu().numpy(),
                }
                for (e, _, _, t0, ks), p, z in zip(chosen, paths, predicted, strict=True)
            ]
            explained = (float(variance[0]), float(variance[1]) if len(variance) > 1 else 0.0)
            figures = [("latents", "Latent space", plots.latent_figure(latent_eps, explained))]

            weight, bias = _fit_probe(recipe, data, target_encoder, torch_device, one_hot=grid)
            if grid:
                from lejepa_envs.arc_grid import ARC_PALETTE

                rows = []
                for (e, obs, _, t0, _), z in zip(chosen, predicted, strict=True):
                    decoded = _decode_cells(
                        ridge_predict(z[:1], weight, bias), tuple(obs.shape[1:])
                    )[0].cpu()
                    context, truth = obs[t0].long().cpu(), obs[t0 + 1].long().cpu()
                    r, c = _crop(context, truth)
                    rows.append(
                        {
                            "episode": e,
                            "t0": t0,
                            "k": 1,
                            "context": context[r, c].numpy(),
                            "truth": truth[r, c].numpy(),
                            "decoded": decoded[r, c].numpy(),
                            "accuracy": float((decoded[r, c] == truth[r, c]).float().mean()),
                        }
                    )
                figures.append(("arc_grids", "ARC grids", plots.grid_figure(rows, ARC_PALETTE)))
            else:
                groups = feature_groups(tuple(data.state_feature_names or data.feature_names or ()))
                if "positions" not in groups or chosen[0][2] is None:
                    notes.append("rollout pictures skipped: the state has no x / y positions")
                else:
                    pos = groups["positions"]
                    rollouts = []
                    for (e, _, states, t0, ks), z in zip(chosen, predicted, strict=True):
                        decoded = ridge_predict(z, weight, bias).reshape(len(ks), *states.shape[1:])
                        true = states[t0 - w + 1 : t0 + len(ks) + 1].float()
                        rollouts.append(
                            {
                                "episode": e,
                                "t0": t0,
                                "ks": ks.tolist(),
                                "true": true[..., pos].reshape(len(true), -1, 2).cpu().numpy(),
                                "context": true[:w][..., pos].reshape(w, -1, 2).cpu().numpy(),
                                "decoded": decoded[..., pos].reshape(len(ks), -1, 2).cpu().numpy(),
                            }
                        )
                    box = env_box(data, torch.as_tensor(rollouts[0]["true"]))
                    figures.append(
                        ("rollouts", "Ball rollouts", plots.rollout_figure(rollouts, box))
                    )
    finally:
        data.close()
    return figures, notes
