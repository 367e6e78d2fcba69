"""The data of a recipe, ready to sample: ``open_data(recipe, device)``.

Generates ``data.path`` from the recipe's ``[data]`` table when it is missing (under torchrun
on every node's local rank 0, so nodes with their own disks each get the file; the other ranks
wait; the file appears atomically, and generation is seeded, so nodes sharing a filesystem
write the same file), opens it with ``TrajectoryData`` and checks that it was generated
from the recipe's env id and kwargs. With ``data.normalize``, observations are standardised
with the statistics of the *training* episodes only (``data.val_fraction``/``split_seed``),
or with the statistics a trained run stored (``stats``). A ``data.path`` that is a symbolic
link which does not resolve (an unmounted volume, a loop) is an error, never a missing file to
generate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import DatasetError
from lejepa_core.files import destination
from lejepa_core.recipe import Recipe
from lejepa_core.training import distributed


def open_data(
    recipe: Recipe,
    device: torch.device,
    *,
    is_main: bool = True,
    progress: bool = True,
    generate: bool = True,
    stats: Mapping | Callable[[TrajectoryData], Mapping] | None = None,
) -> TrajectoryData:
    """Open ``data.path`` on ``device``, generating it first when missing and ``generate``.

    stats: the ``mean``/``std`` to standardise with (a run's stored ones), or a function of the
    raw data returning them (``TrajectoryData.open``); default: those of the recipe's
    training episodes. is_main: this process generates a missing file; under torchrun the
    node's local rank 0 does instead (``LOCAL_RANK``), whatever ``is_main`` says.

    Raises ``DatasetError`` when the file is missing and ``generate`` is false, or when it was
    generated from another env id or other env kwargs than the recipe's.
    """
    d = recipe.data
    path = Path(d.path)
    destination(path)  # a dangling link, a link loop, a NUL byte: an error, never regenerated
    if not path.exists():
        if not generate:
            raise DatasetError(
                f"{path}: no such file (data.path), and it is not generated here; "
                "`lejepa run` generates it from the recipe, or use `lejepa generate`"
            )
        info = distributed.env_info()
        if info.local_rank == 0 if info.enabled else is_main:
            generate_dataset(
                d.env_id,
                episodes=d.episodes,
                steps=d.steps,
                out=path,
                seed=d.seed,
                workers=d.workers,
                policy=d.policy,
                env_kwargs=dict(d.env_kwargs),
                progress=progress,
                order=d.order,
            )
    distributed.barrier()
    data = TrajectoryData.open(
        path,
        device=str(device),
        on_device=d.on_device,
        normalize=d.normalize,
        stats=stats if stats is not None else _training_stats(d.val_fraction, d.split_seed),
    )
    try:  # never train silently on a file of another env/kwargs
        data.check_source(d.env_id, dict(d.env_kwargs))
    except BaseException:
        data.close()
        raise
    return data


def _training_stats(val_fraction: float, split_seed: int):
    """The statistics of the training episodes of the recipe's split, for ``open(stats=...)``."""
    return lambda data: data.episode_stats(data.episode_split(val_fraction, split_seed)[0])
