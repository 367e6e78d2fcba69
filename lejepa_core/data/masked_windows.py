"""Windows whose target frame the data allows (``/target_allowed``, ``episode_keys.py``).

Where a file marks the frames that may be prediction targets (an ARC task episode: only its
output grids), ``WindowSampler`` draws uniformly from the table ``allowed_windows`` lists
instead of from every window. Shape legend: ``E'`` episodes sampled, ``N`` allowed windows.
"""

from __future__ import annotations

import torch


def allowed_windows(
    offsets: torch.Tensor,
    allowed: torch.Tensor,
    episodes: torch.Tensor,
    context_frames: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of horizon ``k`` of ``episodes`` whose target frame is allowed.

    offsets: [E + 1] int64 episode offsets; allowed: [T] bool per row; episodes: [E'] int64.
    Returns (local [N] position in ``episodes``, t [N] step of the last context frame within
    its episode, so the target is step ``t + k``), ordered by episode then step.
    """
    episodes = episodes.cpu()
    starts = offsets[episodes]  # [E']
    lengths = offsets[episodes + 1] - starts  # [E']
    counts = (lengths - k - context_frames + 1).clamp(min=0)  # [E'] windows that fit
    local = torch.repeat_interleave(torch.arange(len(episodes)), counts)  # [n]
    first = counts.cumsum(0) - counts  # [E'] index of each episode's first window
    t = context_frames - 1 + torch.arange(int(counts.sum())) - first[local]  # [n]
    keep = allowed.cpu()[starts[local] + t + k]  # [n] bool
    return local[keep], t[keep]


def last_windows(
    offsets: torch.Tensor,
    allowed: torch.Tensor | None,
    episodes: torch.Tensor,
    context_frames: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last window of horizon ``k`` of each of ``episodes`` whose target is allowed (its
    last frame when ``allowed`` is None): an ARC task episode's test output.

    Returns (local [N], t [N]) like ``allowed_windows``; episodes without such a window are
    left out (``N <= E'``).
    """
    episodes = episodes.cpu()
    if allowed is None:
        allowed = torch.ones(int(offsets[-1]), dtype=torch.bool)
    local, t = allowed_windows(offsets, allowed, episodes, context_frames, k)
    last = torch.ones(len(local), dtype=torch.bool)
    last[:-1] = local[1:] != local[:-1]  # windows are ordered by episode, then step
    return local[last], t[last]
