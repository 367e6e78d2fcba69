"""Observation statistics over chosen episodes (the training split), resident or streamed.

``TrajectoryData.episode_stats(episodes)`` is the way in: training standardises observations
with the mean/std of its *training* episodes only (``prepare.open_data``), so nothing of the
validation episodes leaks into the model's input. The file's own ``mean``/``std`` attributes
cover every episode and stay what ``lejepa inspect`` shows.

The figures are those of the writer (``RunningStats``: float64, Chan's parallel merge, the
same layout: a list over the last axis for vector observations, one value over all elements
for images and grids), read in chunks of about 64 MiB of observations: from the tensor when
the data is resident, from the file when it is streamed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lejepa_core.data import schema
from lejepa_core.data.writer import RunningStats

CHUNK_BYTES = 64 * 2**20


def episode_rows(offsets: torch.Tensor | np.ndarray, episodes: Any) -> np.ndarray:
    """[R] int64 sorted rows of ``episodes`` (any int indices; repeats count once)."""
    offsets = np.asarray(offsets, np.int64)
    chosen = np.unique(np.asarray(episodes, np.int64).reshape(-1))
    if len(chosen) == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(offsets[e], offsets[e + 1]) for e in chosen])


def observation_stats(data: Any, episodes: Any) -> dict[str, Any]:
    """mean/std (population)/min/max of the raw observations of ``episodes`` of ``data`` (an
    open ``TrajectoryData``), in the layout of the file's statistics."""
    per_feature = schema.per_feature_stats(data.obs_shape, tuple(data.feature_names))
    total = RunningStats(per_feature, data.obs_shape[-1] if data.obs_shape else 1)
    rows = episode_rows(data.episode_offsets, episodes)
    if len(rows) == 0:
        raise ValueError("no episode to compute statistics over")
    row_bytes = max(1, int(np.prod(data.obs_shape, dtype=np.int64)) * 8)
    step = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, len(rows), step):
        total.update(data.raw_observations(rows[start : start + step]))
    return total.as_attrs()


def episode_end_counts(f: Any) -> dict[str, int] | None:
    """How many episodes of an open file ended how (``/episode_ends``), None when unknown."""
    if schema.EPISODE_ENDS not in f:
        return None
    counts = np.bincount(f[schema.EPISODE_ENDS][...].astype(np.int64), minlength=4).tolist()
    return dict(zip(("cut", "terminated", "truncated", "both"), counts, strict=True))
