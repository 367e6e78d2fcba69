"""Competence-based curriculum over episodes of stored difficulty (Platanios et al. 2019).

``[data] curriculum = "competence"``: at training step ``t`` windows are drawn only from the
easiest ``ceil(c(t) * n)`` of the ``n`` training episodes, with the competence

    c(t) = min(1, sqrt(t * (1 - c0**2) / T + c0**2))      c0 = curriculum_start, T = curriculum_steps

Episodes are sorted by the file's per-episode ``/episode_keys/difficulty`` (floats in [0, 1],
stored by the generator for an env that lists a ``difficulty`` reset-info entry in
``metadata["episode_keys"]``; docs/data.md), ties by episode index: no random numbers, so the
same seed draws the same windows. The step is read from the run (it travels in the
checkpoint), so a resumed run continues at the same competence. Validation is never
restricted. A file without stored difficulty is refused with one line (no fallback: a
made-up difficulty would order the episodes by something the env did not say).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lejepa_core.data.sampler import Batch, WindowSampler
from lejepa_core.errors import DatasetError

DIFFICULTY_KEY = "difficulty"
"""The episode key (``/episode_keys/difficulty``) the curriculum sorts by."""
COMPETENCE = "data/competence"
"""Train-record key: the fraction of training episodes available (mean over the log window)."""


def competence(step: int, start: float, steps: int) -> float:
    """c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)); 1 when ``steps`` (T) is 0."""
    if steps <= 0:
        return 1.0
    return min(1.0, math.sqrt(step * (1.0 - start**2) / steps + start**2))


def available(num_episodes: int, fraction: float) -> int:
    """How many of ``num_episodes`` a competence ``fraction`` allows: ceil(c n), at least 1."""
    # 1e-9: c(T) computed as 0.9999999999 still allows all of them
    return max(1, min(num_episodes, math.ceil(fraction * num_episodes - 1e-9)))


def easiest_first(episodes: torch.Tensor, difficulty: np.ndarray) -> torch.Tensor:
    """``episodes`` [E'] (indices into the file) sorted by ``difficulty`` [E] (of every
    episode of the file), ties by episode index: [E']."""
    episodes = torch.as_tensor(episodes, dtype=torch.int64).cpu()
    ids = episodes.numpy()
    order = np.lexsort((ids, difficulty[ids]))  # last key first: difficulty, then index
    return episodes[torch.from_numpy(order)]


def read_difficulty(data: Any) -> np.ndarray:
    """``[E]`` float64 per-episode difficulty of ``data`` (a ``TrajectoryData``).

    Raises ``DatasetError`` (exit 2) naming the file when it stores none or a bad one."""
    keys = getattr(data, "episode_keys", {}) or {}
    values = keys.get(DIFFICULTY_KEY)
    if values is None:
        raise DatasetError(
            f"{data.path}: data.curriculum = 'competence' needs a per-episode difficulty "
            f"(/episode_keys/{DIFFICULTY_KEY}), which this file does not store; generate it from "
            "an env whose metadata['episode_keys'] lists a float 'difficulty' (docs/data.md) or "
            "set data.curriculum = 'none'"
        )
    values = np.asarray(values)
    if values.dtype.kind not in "iuf" or not np.all((values >= 0) & (values <= 1)):
        raise DatasetError(
            f"{data.path}: /episode_keys/{DIFFICULTY_KEY} must hold numbers in [0, 1] "
            f"(the per-episode difficulty), got dtype {values.dtype}"
        )
    return values.astype(np.float64)


class CurriculumSampler:
    """A ``WindowSampler`` over the easiest episodes the competence at the current step allows.

    ``sample`` is ``WindowSampler.sample`` on the first ``available(n, c(step()))`` episodes of
    ``order`` (rebuilt when that count changes: at most ``n`` times); ``fixed_batches`` and
    every other attribute are the full sampler's.
    """

    def __init__(
        self,
        full: WindowSampler,
        order: torch.Tensor,
        *,
        start: float,
        steps: int,
        step: Callable[[], int],
    ):
        self.full = full
        self.order = order  # [n] episode indices, easiest first
        self.start, self.steps, self.step = float(start), int(steps), step
        self._count = 0
        self._sampler: WindowSampler | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.full, name)

    @property
    def fraction(self) -> float:
        """The fraction of training episodes the last ``sample`` drew from."""
        return self._count / len(self.order)

    def _competence(self) -> float:
        return competence(self.step(), self.start, self.steps)

    def current(self) -> WindowSampler:
        """The sampler of the episodes available now."""
        count = available(len(self.order), self._competence())
        if count == len(self.order):
            sampler = self.full
        elif count == self._count and self._sampler is not None:
            sampler = self._sampler
        else:
            full = self.full
            sampler = WindowSampler(
                full.data,
                self.order[:count],
                context_frames=full.context_frames,
                horizons=full.horizons,
                device=full.device,
                prefetch=full.prefetch,
                augment=full.augment,
            )
        if sampler is not self._sampler and self._sampler not in (None, self.full):
            self._sampler.close()
        self._count, self._sampler = count, sampler
        return sampler

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` windows of the episodes available at the current step."""
        return self.current().sample(batch_size, generator)

    def close(self) -> None:
        if self._sampler is not None and self._sampler is not self.full:
            self._sampler.close()
        self.full.close()


def wrap(sampler: WindowSampler, data_config: Any, step: Callable[[], int]) -> Any:
    """``sampler`` (of the training episodes) under ``data_config.curriculum``: itself for
    ``"none"``, else a ``CurriculumSampler`` reading the training step from ``step()``."""
    if getattr(data_config, "curriculum", "none") == "none":
        return sampler
    difficulty = read_difficulty(sampler.data)
    order = easiest_first(sampler._episodes, difficulty)
    return CurriculumSampler(
        sampler,
        order,
        start=data_config.curriculum_start,
        steps=data_config.curriculum_steps,
        step=step,
    )


def with_competence(metrics: dict[str, Any] | None, sampler: Any) -> dict[str, Any] | None:
    """A step's ``metrics`` plus ``data/competence`` when ``sampler`` is a curriculum's."""
    if metrics is None or not isinstance(sampler, CurriculumSampler):
        return metrics
    return {**metrics, COMPETENCE: sampler.fraction}
