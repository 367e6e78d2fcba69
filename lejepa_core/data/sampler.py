"""Training windows drawn from a ``TrajectoryData`` by index arithmetic alone.

A window is (episode e, last context step t, horizon k): context frames ``t-W+1 .. t`` and
the target frame ``t+k``, all inside episode e. For each k the valid windows of all episodes
are laid end to end; a draw picks k uniformly from the horizons, then one window uniformly
among the valid windows for that k (so longer episodes give proportionally more windows).

Shape legend: ``B`` batch, ``W`` context frames, ``*obs`` one observation.
"""

from __future__ import annotations

import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
import h5py
import numpy as np
import torch

from lejepa_core.data.masked_windows import allowed_windows
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import DatasetError


@attrs.frozen(kw_only=True)
class Batch:
    """context_obs: [B, W, *obs_shape]; target_obs: [B, *obs_shape]; k: [B] int64.

    context_state / target_state: [B, W, *state_shape] / [B, *state_shape] raw state for
    probes (None when the file has neither /states nor float observations).
    episode: [B] int64 episode index in the file; t: [B] int64 step (within its episode) of the
    last context frame, so the target is step ``t + k``.
    actions: [B, K, *action_shape] the actions taken after the last context frame (action j
    moves step ``t + j`` to ``t + j + 1``), ``K = max(horizons)`` (or the fixed k); action_mask:
    [B, K] bool, True for ``j < k`` (the actions that lead to the target; the rest are zeros).
    Both None when the data file has no ``/actions``.
    """

    context_obs: torch.Tensor
    target_obs: torch.Tensor
    k: torch.Tensor
    context_state: torch.Tensor | None
    target_state: torch.Tensor | None
    episode: torch.Tensor
    t: torch.Tensor
    actions: torch.Tensor | None = None
    action_mask: torch.Tensor | None = None


_ACTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def file_actions(data: TrajectoryData) -> torch.Tensor | None:
    """The data file's ``/actions`` [T, *action_shape] (int64 or float32) on the CPU, read once
    per ``data``; None when ``data`` has no file or the file no ``/actions``."""
    try:
        if data in _ACTIONS:
            return _ACTIONS[data]
    except TypeError:  # not weak-referenceable
        pass
    path = getattr(data, "path", None)
    actions = None
    if path is not None:
        try:
            with h5py.File(path, "r") as f:
                if "actions" in f:
                    array = np.asarray(f["actions"][()])
                    floating = np.issubdtype(array.dtype, np.floating)
                    actions = torch.from_numpy(
                        array.astype(np.float32 if floating else np.int64, copy=False)
                    )
        except OSError:
            actions = None
    try:
        _ACTIONS[data] = actions
    except TypeError:  # not weak-referenceable
        pass
    return actions


class WindowSampler:
    """Uniform windows over ``episodes`` (a [E'] int tensor of episode indices of ``data``).

    Rows come from ``data.rows`` (a gather on the data's device when resident, one read of
    the sorted unique rows when streamed) and are moved to ``device``.

    prefetch: when the data is streamed (default: on exactly then), ``sample`` also draws the
    next batch's windows from a copy of the generator and reads their rows on a background
    thread while the caller's step runs (two buffers: the batch in use and the next one, pinned
    when ``device`` is CUDA). The caller's generator advances exactly as without prefetch, and
    a prefetched batch is used only when the generator's state matches the one it was drawn
    from, so the same seed gives the same batches with and without prefetch.

    augment: a ``data.augment.WindowAugment`` (or None): ``sample`` draws its random numbers
    from the generator right after the windows' and transforms the batch; ``fixed_batches``
    (validation, evaluation) never augments.
    """

    def __init__(
        self,
        data: TrajectoryData,
        episodes: torch.Tensor,
        *,
        context_frames: int,
        horizons: tuple[int, ...],
        device: str | torch.device = "cpu",
        prefetch: bool | None = None,
        augment: Any = None,
    ):
        if context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {context_frames}")
        horizons = tuple(int(k) for k in horizons)
        if not horizons or min(horizons) < 1:
            raise ValueError(f"horizons must be a non-empty tuple of ints >= 1, got {horizons}")
        self.data = data
        self.augment = augment
        self.context_frames = context_frames
        self.horizons = horizons
        self.device = torch.device(device)
        episodes = torch.as_tensor(episodes, dtype=torch.int64).reshape(-1).cpu()
        if len(episodes) == 0:
            raise DatasetError(f"{data.path}: no episodes to sample from")
        if int(episodes.min()) < 0 or int(episodes.max()) >= data.num_episodes:
            raise ValueError(
                f"episode indices must lie in [0, {data.num_episodes}), got {episodes.min()}..{episodes.max()}"
            )
        starts = data.episode_offsets[episodes]  # [E'] first row of each episode
        lengths = data.episode_offsets[episodes + 1] - starts  # [E']
        max_k, w = max(horizons), context_frames
        if int((lengths - max_k - w + 1).clamp(min=0).sum()) == 0:
            raise DatasetError(
                f"{data.path}: no window fits: context_frames={w} + max horizon {max_k} needs "
                f"episodes of at least {w + max_k} steps, the longest of the {len(episodes)} "
                f"episodes has {int(lengths.max())}"
            )
        # counts[h, e] = valid windows of episode e for horizon h; laid end to end per h and
        # then h after h, `ends` is one non-decreasing [H * E'] sequence to searchsorted in.
        k_tensor = torch.tensor(horizons, dtype=torch.int64)
        counts = (lengths[None, :] - k_tensor[:, None] - w + 1).clamp(min=0)  # [H, E']
        ends = counts.reshape(-1).cumsum(0)  # [H*E'] inclusive ends
        per_k = counts.sum(1)  # [H]
        base = torch.cat([torch.zeros(1, dtype=torch.int64), per_k.cumsum(0)[:-1]])  # [H]
        index_device = data.device  # where the data's rows live
        # (local [N], t [N]) of the windows whose target the data allows, horizon after horizon
        self._windows: tuple[torch.Tensor, torch.Tensor] | None = None
        if data.target_allowed is not None:
            per_k, self._windows = self._allowed(data, episodes, horizons, index_device)
            base = torch.cat([torch.zeros(1, dtype=torch.int64), per_k.cumsum(0)[:-1]])
        self.num_windows = {k: int(n) for k, n in zip(horizons, per_k.tolist(), strict=True)}
        self._index_device = index_device
        self._k = k_tensor.to(index_device)
        self._per_k = per_k.to(index_device)
        self._base = base.to(index_device)
        self._ends = ends.to(index_device)
        self._episodes = episodes.to(index_device)
        self._starts = starts.to(index_device)
        self._num_local = len(episodes)
        self._frame_offsets = torch.arange(-w + 1, 1, device=index_device)  # [W]
        self.prefetch = (not data.resident) if prefetch is None else bool(prefetch)
        self._actions = file_actions(data)  # [T, *action_shape] on index_device, or None
        if self._actions is not None:
            self._actions = self._actions.to(index_device)
        self._executor: ThreadPoolExecutor | None = None
        # (batch_size, generator state it was drawn from, future of its rows)
        self._pending: tuple[int, torch.Tensor, Future] | None = None

    def _allowed(self, data: TrajectoryData, episodes, horizons, device):
        """Per-horizon counts [H] and the (local, t) table of windows with an allowed target."""
        parts = [
            allowed_windows(
                data.episode_offsets, data.target_allowed, episodes, self.context_frames, k
            )
            for k in horizons
        ]
        per_k = torch.tensor([len(local) for local, _ in parts], dtype=torch.int64)
        for k, n in zip(horizons, per_k.tolist(), strict=True):
            if n == 0:
                raise DatasetError(
                    f"{data.path}: no window of horizon k={k} with context_frames="
                    f"{self.context_frames} has a target the data allows (/target_allowed)"
                )
        return per_k, tuple(torch.cat(column).to(device) for column in zip(*parts, strict=True))

    # ----------------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` windows; random numbers from ``generator`` (on any device)."""
        if not self.prefetch:
            batch = self._sample(batch_size, generator, None)
            return self._augmented(batch, batch_size, generator)
        state = generator.get_state()
        drawn = self._draw(batch_size, generator, None)
        choices = None if self.augment is None else self.augment.draw(batch_size, generator)
        pending, self._pending = self._pending, None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="lejepa-prefetch")
        if pending is not None and pending[0] == batch_size and torch.equal(pending[1], state):
            rows = pending[2]
        else:  # first call, or the generator moved: read this batch now
            rows = self._executor.submit(self._read, self._rows_of(drawn))
        ahead = torch.Generator(device=generator.device)
        ahead.set_state(generator.get_state())
        next_rows = self._rows_of(self._draw(batch_size, ahead, None))
        self._pending = (
            batch_size,
            generator.get_state(),
            self._executor.submit(self._read, next_rows),
        )
        batch = self._assemble(batch_size, drawn, rows.result())
        return batch if choices is None else self.augment.apply(batch, choices)

    def _augmented(self, batch: Batch, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch`` through ``augment`` (its random numbers drawn now), or as it is."""
        if self.augment is None:
            return batch
        return self.augment.apply(batch, self.augment.draw(batch_size, generator))

    def close(self) -> None:
        """Stop the prefetch thread (a later ``sample`` starts it again)."""
        self._pending = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @staticmethod
    def _rows_of(drawn) -> torch.Tensor:
        """Rows to read for drawn windows: [B*W] context rows, then [B] target rows."""
        _, _, _, context_rows, target_rows = drawn
        return torch.cat([context_rows.reshape(-1), target_rows])

    def _read(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``data.rows(rows)``, pinned when the batch goes to CUDA (prefetch thread)."""
        obs, states = self.data.rows(rows)
        if self.device.type == "cuda" and obs.device.type == "cpu":
            obs = obs.pin_memory()
            states = None if states is None else states.pin_memory()
        return obs, states

    def fixed_batches(
        self, batch_size: int, num_batches: int, seed: int, k: int | None = None
    ) -> list[Batch]:
        """The same ``num_batches`` batches for the same arguments (validation, evaluation).

        With ``k`` every window has horizon ``k`` (any k that fits, not only ``horizons``).
        """
        generator = torch.Generator().manual_seed(int(seed))
        return [self._sample(batch_size, generator, k) for _ in range(num_batches)]

    def _layout(self, k: int) -> tuple[torch.Tensor | tuple, int, int]:
        """(ends, base, total) of the windows of one horizon ``k``; with an allowed-target
        mask, the (local, t) table in place of ``ends``."""
        if k in self.horizons:
            h = self.horizons.index(k)
            table = self._ends if self._windows is None else self._windows
            return table, int(self._base[h]), int(self._per_k[h])
        if self._windows is not None:
            episodes, offsets = self._episodes.cpu(), self.data.episode_offsets
            local, t = allowed_windows(
                offsets, self.data.target_allowed, episodes, self.context_frames, k
            )
            table = (local.to(self._index_device), t.to(self._index_device))
            return table, 0, len(local)
        lengths = self.data.episode_offsets[self._episodes.cpu() + 1] - self._starts.cpu()
        counts = (lengths - k - self.context_frames + 1).clamp(min=0)
        return counts.cumsum(0).to(self._index_device), 0, int(counts.sum())

    def _draw(self, batch_size: int, generator: torch.Generator, k: int | None):
        """Index arithmetic only: k [B], episode [B], t [B], context rows [B, W], target rows [B]."""
        gdev, idev = generator.device, self._index_device
        if k is None:
            h = torch.randint(len(self.horizons), (batch_size,), generator=generator, device=gdev)
            h = h.to(idev)
            ends, k_b, base, total = self._ends, self._k[h], self._base[h], self._per_k[h]
            ends = ends if self._windows is None else self._windows
        else:
            ends, base_k, total_k = self._layout(int(k))
            if total_k == 0:
                raise DatasetError(
                    f"{self.data.path}: no window fits horizon k={k} with "
                    f"context_frames={self.context_frames}"
                )
            k_b = torch.full((batch_size,), int(k), dtype=torch.int64, device=idev)
            base = torch.full_like(k_b, base_k)
            total = torch.full_like(k_b, total_k)
        # a uniform integer in [0, total) per sample (modulo bias below total / 2**62)
        r = torch.randint(0, 2**62, (batch_size,), generator=generator, device=gdev)
        j = base + r.to(idev) % total  # [B] window number in the laid-out sequence
        if isinstance(ends, tuple):  # windows with an allowed target, listed one by one
            local, t = ends[0][j], ends[1][j]
        else:
            pos = torch.searchsorted(ends, j, right=True)  # [B] (horizon, episode) slot
            before = torch.where(pos > 0, ends[(pos - 1).clamp(min=0)], 0)  # windows before it
            local = pos % self._num_local  # [B] position in self._episodes
            t = self.context_frames - 1 + (j - before)  # [B] last context step in the episode
        row_t = self._starts[local] + t  # [B] its row in the file
        context_rows = row_t[:, None] + self._frame_offsets  # [B, W]
        return k_b, self._episodes[local], t, context_rows, row_t + k_b

    def _sample(self, batch_size: int, generator: torch.Generator, k: int | None) -> Batch:
        drawn = self._draw(batch_size, generator, k)
        rows = self.data.rows(self._rows_of(drawn))
        return self._assemble(batch_size, drawn, rows, max(self.horizons + (k or 1,)))

    def _assemble(self, batch_size: int, drawn, rows, width: int | None = None) -> Batch:
        """The ``Batch`` of drawn windows from their rows (``_rows_of`` order) on ``device``."""
        k_b, episode, t, _, _ = drawn
        n_context = batch_size * self.context_frames
        obs, states = rows

        def split(rows: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            """[B*W + B, *row] -> context [B, W, *row] and target [B, *row] on ``self.device``."""
            if rows is None:
                return None, None
            rows = rows.to(self.device, non_blocking=True)
            context = rows[:n_context].reshape(batch_size, self.context_frames, *rows.shape[1:])
            return context, rows[n_context:]

        context_obs, target_obs = split(obs)
        context_state, target_state = split(states)
        move = lambda x: x.to(self.device, non_blocking=True)  # noqa: E731
        actions, action_mask = self._window_actions(drawn, width or max(self.horizons))
        return Batch(
            context_obs=context_obs,
            target_obs=target_obs,
            k=move(k_b),
            context_state=context_state,
            target_state=target_state,
            episode=move(episode),
            t=move(t),
            actions=None if actions is None else move(actions),
            action_mask=None if action_mask is None else move(action_mask),
        )

    def _window_actions(self, drawn, width: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """actions [B, K=width, *action_shape] after each window's last context row, mask [B, K]."""
        if self._actions is None:
            return None, None
        k_b, _, _, context_rows, _ = drawn
        steps = torch.arange(width, device=k_b.device)  # [K]
        mask = steps[None, :] < k_b[:, None]  # [B, K]
        # rows t .. t + k - 1 are inside the episode; past them repeat the last valid one
        rows = context_rows[:, -1:] + torch.minimum(steps[None, :], k_b[:, None] - 1)
        actions = self._actions[rows]  # [B, K, *action_shape]
        fill = mask.reshape(*mask.shape, *([1] * (actions.dim() - 2)))
        return torch.where(fill, actions, torch.zeros_like(actions)), mask
