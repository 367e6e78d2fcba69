"""Every seed ``generate`` uses, derived from the run seed alone.

* Episode ``i`` is reset with ``episode_seeds(seed, i, i + 1)``: a SplitMix64 hash of
  ``(seed, i)``, 63 bits (fits int64 and any ``reset``).
* A native vector env that takes only one integer seed is reset once per block with
  ``block_seed(seed, block)``.
* Random actions of a block come from ``action_rng(seed, block)``.

None of them depends on which process runs the block, so ``--workers`` never changes the data.
"""

from __future__ import annotations

import numpy as np

_BLOCK_SEED_STREAM = 1
_ACTION_STREAM = 2


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def episode_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """[stop - start] int64 reset seeds of episodes ``start..stop-1`` of a run with ``seed``:
    ``splitmix64(splitmix64(seed) + i) >> 1`` (63-bit, so it fits int64 and any reset)."""
    base = splitmix64(np.array([seed], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        x = base + np.arange(start, stop, dtype=np.uint64)
    return (splitmix64(x) >> np.uint64(1)).astype(np.int64)


def block_seed(seed: int, block: int) -> int:
    """The reset seed of a whole block, for vector envs that take one integer seed."""
    return int(np.random.SeedSequence([seed, block, _BLOCK_SEED_STREAM]).generate_state(1)[0])


def action_rng(seed: int, block: int) -> np.random.Generator:
    """The generator of the random actions of ``block``."""
    return np.random.default_rng(np.random.SeedSequence([seed, block, _ACTION_STREAM]))
