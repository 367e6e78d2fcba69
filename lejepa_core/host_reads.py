"""Counting host reads of tensor values below Python (``lejepa_core.testing`` re-exports
``ScalarReadCounter``; ``HostSyncCounter`` there counts the Python-level calls)."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class ScalarReadCounter(TorchDispatchMode):
    """Counts host reads of tensor values at the dispatcher, below Python: ``.item()``,
    ``bool(t)``, and the reads C++ argument parsing makes that ``HostSyncCounter`` cannot see
    (a 0-d tensor passed where a number is expected, e.g. a tensor weight to
    ``torch._foreach_lerp_``; indexing with a 0-d tensor), plus ``equal``, ``nonzero``,
    ``unique``, ... On CPU it also counts reads a CUDA run skips (``F.one_hot``'s range checks
    with ``num_classes`` given), so it is an upper bound of a GPU step's syncs.

    with ScalarReadCounter() as reads: ...; reads.count, reads.calls (aten names, in order).
    """

    NAMES = frozenset(
        {
            "_local_scalar_dense",
            "is_nonzero",
            "equal",
            "nonzero",
            "_unique2",
            "unique_dim",
            "unique_consecutive",
            "bincount",
            "masked_select",
            "repeat_interleave",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.NAMES:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        return len(self.calls)
