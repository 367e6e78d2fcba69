"""Counting host reads of tensor values (each one a GPU stall): ``HostSyncCounter`` at the
Python level, ``ScalarReadCounter`` below it; ``lejepa_core.testing`` re-exports both."""

from __future__ import annotations

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


class _Calls:
    """``calls`` (names, in order) and ``count`` of the counted operations in ``NAMES``."""

    NAMES: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def _seen(self, name: str) -> None:
        if name in self.NAMES:
            self.calls.append(name)

    @property
    def count(self) -> int:
        return len(self.calls)


class HostSyncCounter(_Calls, TorchFunctionMode):
    """Counts calls that copy a tensor's value to the host (each one a GPU stall).

    with HostSyncCounter() as syncs: ...; syncs.count, syncs.calls (names, in order).
    """

    NAMES = frozenset(
        {
            "item",
            "tolist",
            "__bool__",
            "__int__",
            "__float__",
            "__index__",
            "nonzero",
            "unique",
            "unique_consecutive",
            "equal",
            "numpy",
            "bincount",
            "masked_select",
            "repeat_interleave",
            "argwhere",
        }
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self._seen(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


class ScalarReadCounter(_Calls, TorchDispatchMode):
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

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._seen(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
