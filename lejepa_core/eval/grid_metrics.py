"""Figures of decoded grids against the true ones, and of latents against their episodes.

Shape legend: ``N`` samples, ``H x W`` one grid, ``D`` latent_dim, ``T`` frames of an episode.
Every grid figure pools cells over all samples (a sum of hits over a sum of cells), so a
sample with more objects weighs more.
"""

from __future__ import annotations

import torch

from lejepa_core.eval.grid_rules import GridRules


def grid_figures(
    rules: GridRules, predicted: torch.Tensor, truth: torch.Tensor, last: torch.Tensor
) -> dict[str, float]:
    """``cell_accuracy``, ``active_accuracy``, ``object_recall``, ``exact_match`` of predicted
    grids [N, H, W] against ``truth`` [N, H, W]; ``last`` [N, H, W] the last context grids.

    - cell accuracy: equal cells / all cells (padding included);
    - active-cell accuracy: equal cells among the *active* ones, object cells of the true grid
      or of the last context grid (``rules.object_mask``): where something is or was;
    - object recall: object cells of the true grid that hold the true value / object cells of
      the true grid;
    - exact match: grids equal in every cell / grids.
    """
    predicted, truth = predicted.long().to(truth.device), truth.long()
    equal = predicted == truth  # [N, H, W]
    objects = rules.object_mask(truth)
    active = objects | rules.object_mask(last.long().to(truth.device))
    return {
        "cell_accuracy": float(equal.float().mean()),
        "active_accuracy": _share(equal, active),
        "object_recall": _share(equal, objects),
        "exact_match": float(equal.flatten(1).all(1).float().mean()),
    }


def _share(hits: torch.Tensor, where: torch.Tensor) -> float:
    """sum(hits & where) / sum(where); NaN when ``where`` is empty."""
    total = int(where.sum())
    return float((hits & where).sum()) / total if total else float("nan")


def retrieval(
    predicted: torch.Tensor,
    episode_latents: list[torch.Tensor],
    episode_of: torch.Tensor,
    true_index: torch.Tensor,
) -> float:
    """Frame retrieval: the fraction of predictions [N, D] whose nearest (Euclidean) latent
    among all frames of their own episode (``episode_latents[episode_of[i]]``: [T, D]) is the
    true frame ``true_index[i]``; a tie with the true frame counts as found (equal frames)."""
    hits = 0
    for e in episode_of.unique().tolist():
        rows = (episode_of == e).nonzero().flatten()
        frames = episode_latents[e].to(predicted.device).float()  # [T, D]
        dist = torch.cdist(predicted[rows].float(), frames)  # [n, T]
        true = dist.gather(1, true_index[rows].to(dist.device)[:, None]).squeeze(1)
        hits += int((true <= dist.min(1).values + 1e-6 * (1 + true)).sum())
    return hits / max(1, len(episode_of))


def retrieval_chance(episode_latents: list[torch.Tensor], episode_of: torch.Tensor) -> float:
    """Retrieval of a uniformly random frame: the mean of 1 / T over the samples' episodes."""
    lengths = torch.tensor(
        [len(episode_latents[e]) for e in episode_of.tolist()], dtype=torch.float64
    )
    return float((1.0 / lengths).mean()) if len(lengths) else float("nan")


def within_episode_share(episode_latents: list[torch.Tensor]) -> float:
    """The within-episode share of latent variance: sum over episodes and frames of
    |z - mean of its episode|^2 / sum of |z - mean of all frames|^2 (each [T, D]). Near 0:
    the latent mostly says which episode, not which moment (the identity shortcut)."""
    every = torch.cat([z.double() for z in episode_latents])
    total = (every - every.mean(0)).square().sum()
    within = sum((z.double() - z.double().mean(0)).square().sum() for z in episode_latents)
    return float(within / total.clamp_min(1e-300))
