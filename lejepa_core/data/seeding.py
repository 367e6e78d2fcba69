"""Every seed ``generate`` uses, from one scheme: SplitMix64 of (run seed, stream, index).

Item ``i`` of stream ``s`` of a run with ``seed`` gets the 63-bit seed (fits int64 and any
``reset``)::

    splitmix64(splitmix64(seed) + s * 2**48 + i) >> 1

* stream 0, ``EPISODE_RESETS``: episode ``i`` is reset with ``episode_seeds(seed, i, i + 1)``;
* stream 1, ``BLOCK_RESETS``: a native vector env that takes only one integer seed is reset
  once per block with ``block_seed(seed, block)``;
* stream 2, ``BLOCK_ACTIONS``: the random actions of a block come from
  ``action_rng(seed, block)``, a ``numpy.random.default_rng`` seeded with that block's seed.

None of them depends on which process runs the block, so ``--workers`` never changes the data.
"""

from __future__ import annotations

import numpy as np

EPISODE_RESETS, BLOCK_RESETS, BLOCK_ACTIONS = 0, 1, 2
STREAM_STRIDE = 2**48  # indices per stream


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def stream_seeds(seed: int, stream: int, start: int, stop: int) -> np.ndarray:
    """[stop - start] int64 seeds of items ``start..stop-1`` of ``stream`` of a run with
    ``seed``: ``splitmix64(splitmix64(seed) + stream * 2**48 + i) >> 1``."""
    if not 0 <= start <= stop <= STREAM_STRIDE:
        raise ValueError(f"item indices must lie in [0, 2**48], got {start}..{stop}")
    base = splitmix64(np.array([seed], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        x = base + np.uint64(stream * STREAM_STRIDE) + np.arange(start, stop, dtype=np.uint64)
    return (splitmix64(x) >> np.uint64(1)).astype(np.int64)


def episode_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """[stop - start] int64 reset seeds of episodes ``start..stop-1`` of a run with ``seed``."""
    return stream_seeds(seed, EPISODE_RESETS, start, stop)


def block_seed(seed: int, block: int) -> int:
    """The reset seed of a whole block, for vector envs that take one integer seed."""
    return int(stream_seeds(seed, BLOCK_RESETS, block, block + 1)[0])


def action_rng(seed: int, block: int) -> np.random.Generator:
    """The generator of the random actions of ``block``."""
    return np.random.default_rng(int(stream_seeds(seed, BLOCK_ACTIONS, block, block + 1)[0]))
