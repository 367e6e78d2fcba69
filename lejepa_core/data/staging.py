"""Staging resident data: how much memory there is, whether a file fits, chunked copies.

``TrajectoryData.open`` (``reader.py``) loads a file when ``fits`` says so and copies each
dataset onto the training device with ``stage``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from lejepa_core.data import schema

# "auto" loads the data when it takes at most this fraction of the available memory.
AUTO_MEMORY_FRACTION = 0.5
# Resident data is copied to its device through one host buffer of about this size (pinned
# when the device is CUDA): host RAM holds at most one such chunk beyond what it held before.
STAGE_CHUNK_BYTES = 64 * 2**20


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA ``mem_get_info``; CPU ``MemAvailable`` of /proc/meminfo."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: assume it fits


def fits(need: int, device: torch.device) -> bool:
    """Whether ``need`` bytes may be loaded onto ``device`` by ``on_device = "auto"``: at most
    ``AUTO_MEMORY_FRACTION`` of its free memory, and, for an accelerator, room in host RAM for
    the staging buffer (``stage``) as well."""
    if need > AUTO_MEMORY_FRACTION * available_memory(device):
        return False
    if device.type == "cpu":
        return True
    return min(need, STAGE_CHUNK_BYTES) <= AUTO_MEMORY_FRACTION * available_memory(
        torch.device("cpu")
    )


def stage(path: Path, ds: h5py.Dataset, device: torch.device) -> torch.Tensor:
    """``ds`` ([T, *row]) as a tensor on ``device``, read in chunks of ~``STAGE_CHUNK_BYTES``
    (float rows checked finite chunk by chunk).

    On CPU the chunks are read straight into the result; on an accelerator through one reused
    host buffer (pinned for CUDA), so host RAM never holds the whole dataset.
    """
    row_shape = tuple(ds.shape[1:])
    dtype = torch.from_numpy(np.empty(0, ds.dtype)).dtype
    out = torch.empty((ds.shape[0], *row_shape), dtype=dtype, device=device)
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * ds.dtype.itemsize)
    rows = max(1, STAGE_CHUNK_BYTES // row_bytes)
    if ds.chunks:  # whole HDF5 chunks per read: each is decompressed once
        rows = max(ds.chunks[0], rows // ds.chunks[0] * ds.chunks[0])
    if device.type == "cpu":
        buffer = out
    else:
        buffer = torch.empty(
            (min(rows, ds.shape[0]), *row_shape), dtype=dtype, pin_memory=device.type == "cuda"
        )
    for start in range(0, ds.shape[0], rows):
        stop = min(start + rows, ds.shape[0])
        block = buffer[start:stop] if buffer is out else buffer[: stop - start]
        try:
            ds.read_direct(block.numpy(), np.s_[start:stop])
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise schema.fail(
                path, f"cannot read {ds.name} (truncated or corrupt file?): {exc}"
            ) from None
        if ds.dtype.kind == "f":
            finite = torch.isfinite(block)
            if not bool(finite.all()):
                bad = ~finite.reshape(len(block), -1).all(dim=1)
                row = start + int(torch.nonzero(bad)[0, 0])
                raise schema.fail(path, f"{ds.name} holds non-finite values (first at row {row})")
        if buffer is not out:
            out[start:stop].copy_(block)  # synchronous: the buffer is reused next
    return out
