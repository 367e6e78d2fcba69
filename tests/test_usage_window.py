"""``UsageWindow`` (plugins/quantizers.py): the ring buffer of code counts writes its slot
without reading ``batches_seen`` on the host, with the same result as the indexed write it
replaced."""

from __future__ import annotations

import torch

from lejepa_core.testing import HostSyncCounter, ScalarReadCounter
from lejepa_plugins.quantizers import UsageWindow


def indexed_push(counts: torch.Tensor, batches_seen: int, window: int, new: torch.Tensor) -> None:
    """The previous ``push``: ``counts[batches_seen % window] = new`` (a host read on CUDA)."""
    counts[batches_seen % window] = new


def test_push_matches_the_indexed_write_and_reads_nothing_on_the_host():
    generator = torch.Generator().manual_seed(0)
    window = UsageWindow(codebook_size=5, window=3)
    reference = torch.zeros(3, 5)
    for step in range(8):  # wraps around the ring twice
        new = torch.randint(0, 9, (5,), generator=generator)  # int counts, cast on the way in
        with HostSyncCounter() as syncs, ScalarReadCounter() as reads:
            window.push(new)
        assert syncs.calls == [] and reads.calls == []
        indexed_push(reference, step, 3, new.float())
        assert torch.equal(window.counts, reference)
        assert window.batches_seen.item() == step + 1
    assert torch.equal(window.total(), reference.sum(dim=0))
    assert set(window.state_dict()) == {"counts", "batches_seen"}  # checkpoints unchanged
