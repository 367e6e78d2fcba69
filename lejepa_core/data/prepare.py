"""The data of a recipe's run: ``data.path``, generated first when it is missing."""

from __future__ import annotations

from pathlib import Path

import torch

from lejepa_core.data.reader import TrajectoryData
from lejepa_core.recipe import Recipe
from lejepa_core.training import distributed


def open_data(recipe: Recipe, device: torch.device, *, is_main: bool = True, progress: bool = True):
    """Open ``data.path`` (generating it first when missing, on rank 0) on ``device``."""
    path = Path(recipe.data.path)
    if not path.exists() and is_main:
        from lejepa_core.generate import generate_dataset

        d = recipe.data
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_dataset(
            d.env_id,
            episodes=d.episodes,
            steps=d.steps,
            out=path,
            seed=d.seed,
            workers=d.workers,
            env_kwargs=dict(d.env_kwargs),
            progress=progress,
        )
    distributed.barrier()
    data = TrajectoryData.open(
        path, device=str(device), on_device=recipe.data.on_device, normalize=recipe.data.normalize
    )
    # never train silently on a file of another env or env_kwargs
    data.check_source(recipe.data.env_id, dict(recipe.data.env_kwargs))
    return data
