"""Resident staging: chunked copies (no whole host copy for an accelerator), ``auto`` checks
host RAM as well as the device's memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lejepa_core.data import staging, writer
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import DatasetError


@pytest.fixture
def small_chunks(monkeypatch):
    """HDF5 chunks of 5 rows ([2, 3] float32); stage 12 rows' worth of bytes at a time
    (rounded down to whole HDF5 chunks: 10 rows)."""
    monkeypatch.setattr(writer, "CHUNK_BYTES", 5 * 6 * 4)
    monkeypatch.setattr(staging, "STAGE_CHUNK_BYTES", 12 * 6 * 4)


def test_chunked_staging_equals_the_file(tmp_path, write_trajectory_file, small_chunks):
    p = tmp_path / "d.h5"
    written = write_trajectory_file(p, lengths=(5, 12, 3, 9, 20, 7), states=True)
    with TrajectoryData.open(p, on_device="always") as data:
        assert data.resident
        np.testing.assert_array_equal(data.observations.numpy(), written["observations"])
        np.testing.assert_array_equal(data.states.numpy(), written["states"])


def test_staging_through_a_host_buffer(tmp_path, write_trajectory_file, small_chunks, monkeypatch):
    """The accelerator path (a reused host buffer, copied chunk by chunk), run on CPU by
    pretending the target is another device: the result equals the file."""
    p = tmp_path / "d.h5"
    written = write_trajectory_file(p, lengths=(30, 40), states=False)
    copies = []
    real_copy = torch.Tensor.copy_

    class FakeDevice:
        type = "meta-accelerator"

    def fake_empty(*shape, dtype=None, device=None, pin_memory=False):
        assert not pin_memory  # only CUDA pins
        return torch.zeros(*shape, dtype=dtype)

    def counting_copy(self, src, *a, **k):
        copies.append(len(src))
        return real_copy(self, src, *a, **k)

    monkeypatch.setattr(staging.torch, "empty", fake_empty)
    monkeypatch.setattr(torch.Tensor, "copy_", counting_copy)
    import h5py

    with h5py.File(p) as f:
        ds = f["observations"]
        out = staging.stage(p, ds, FakeDevice())
        assert ds.chunks[0] == 5
        assert sum(copies) == ds.shape[0] and max(copies) == 10 and len(copies) == 7
    np.testing.assert_array_equal(out.numpy(), written["observations"])


def test_non_finite_value_found_in_a_later_chunk(tmp_path, write_trajectory_file, small_chunks):
    import h5py

    p = tmp_path / "d.h5"
    write_trajectory_file(p, lengths=(30, 40), states=False)
    with h5py.File(p, "r+") as f:
        f["observations"][61, 1, 2] = np.nan
    with pytest.raises(DatasetError, match="non-finite values \\(first at row 61\\)"):
        TrajectoryData.open(p, on_device="always")


def test_auto_checks_host_ram_for_an_accelerator(monkeypatch):
    gpu = torch.device("cuda")
    free = {"cuda": 10 * 2**30, "cpu": 10 * 2**30}
    monkeypatch.setattr(staging, "available_memory", lambda device: free[device.type])
    assert staging.fits(2**30, gpu) and staging.fits(2**30, torch.device("cpu"))
    free["cpu"] = staging.STAGE_CHUNK_BYTES  # not room for a staging chunk at half of it
    assert not staging.fits(2**30, gpu)
    assert staging.fits(2**20, gpu)  # small data: its whole staging fits
    free["cuda"] = 2**30  # the device's own check still applies
    assert not staging.fits(2**30, gpu)
