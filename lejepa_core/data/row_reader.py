"""``RowReader``: sets of rows of one HDF5 dataset, for streamed ``TrajectoryData``."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np

from lejepa_core.data import schema

# Decompressed chunks of a compressed dataset kept between reads (least recently used out).
DECOMPRESSED_CACHE_BYTES = 256 * 2**20


class RowReader:
    """Reads sets of rows of one dataset for the streaming sampler.

    Uncompressed datasets (the default for float observations) are memory-mapped: each
    chunk's byte offset in the file is looked up once, then rows are plain memory reads
    served by the OS page cache. Chunked compressed datasets are read whole chunk by whole
    chunk: each chunk a read touches is decompressed once and kept in a least-recently-used
    cache of ``DECOMPRESSED_CACHE_BYTES``, and rows are gathered from it with numpy. Other
    layouts are read with one h5py slice per run of consecutive rows. Reads are thread-safe
    (the sampler's prefetch thread and the main thread may share a reader).
    """

    def __init__(self, path: Path, ds: h5py.Dataset):
        self.path, self.ds = path, ds
        self.row_shape = tuple(ds.shape[1:])
        self.dtype = ds.dtype
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * ds.dtype.itemsize
        self.memmap = None
        self._lock = threading.Lock()
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        try:
            self._map()
        except Exception:  # noqa: BLE001 - any surprise: fall back to h5py reads
            self.memmap = None

    def _map(self) -> None:
        ds = self.ds
        if ds.external or ds.shape[0] == 0 or self.row_bytes == 0:
            return
        if ds.id.get_create_plist().get_nfilters():  # compressed, shuffled, checksummed, ...
            return
        if ds.chunks is None:
            offset = ds.id.get_offset()
            if offset is None:
                return
            self.chunk_rows = ds.shape[0]
            self.chunk_bytes = np.array([offset], dtype=np.int64)
        else:
            if ds.chunks[1:] != self.row_shape:
                return  # chunks split rows: not a layout we write
            self.chunk_rows = ds.chunks[0]
            num_chunks = -(-ds.shape[0] // self.chunk_rows)
            chunk_bytes = np.full(num_chunks, -1, dtype=np.int64)

            def visit(info) -> None:
                chunk_bytes[info.chunk_offset[0] // self.chunk_rows] = info.byte_offset

            ds.id.chunk_iter(visit)
            if (chunk_bytes < 0).any():
                return  # unallocated chunks: let HDF5 fill them
            self.chunk_bytes = chunk_bytes
        self.memmap = np.memmap(ds.file.filename, dtype=np.uint8, mode="r")

    def read(self, rows: np.ndarray) -> np.ndarray:
        """[R, *row_shape] for ``rows`` ([R] int64, sorted, unique)."""
        rows = np.asarray(rows, dtype=np.int64)
        try:
            with self._lock:
                if self.memmap is not None:
                    return self._read_mapped(rows)
                if self.ds.chunks is not None and self.ds.chunks[1:] == self.row_shape:
                    return self._read_chunks(rows)
                return self._read_runs(rows)
        except (OSError, RuntimeError, ValueError, IndexError) as exc:
            raise schema.fail(
                self.path, f"cannot read {self.ds.name} (truncated or corrupt file?): {exc}"
            ) from None

    def _read_mapped(self, rows: np.ndarray) -> np.ndarray:
        starts = (
            self.chunk_bytes[rows // self.chunk_rows] + (rows % self.chunk_rows) * self.row_bytes
        )
        if self.row_bytes <= 512:  # small rows: one vectorised gather
            raw = self.memmap[starts[:, None] + np.arange(self.row_bytes)]
        else:
            raw = np.empty((len(rows), self.row_bytes), np.uint8)
            for i, start in enumerate(starts.tolist()):
                raw[i] = self.memmap[start : start + self.row_bytes]
        return raw.view(self.dtype).reshape(len(rows), *self.row_shape)

    def _read_runs(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        run_starts = np.concatenate(([0], breaks))
        run_stops = np.concatenate((breaks, [len(rows)]))
        for i, j in zip(run_starts.tolist(), run_stops.tolist(), strict=True):
            out[i:j] = self.ds[int(rows[i]) : int(rows[i]) + (j - i)]
        return out

    def _read_chunks(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        chunk_rows = self.ds.chunks[0]
        chunk_ids = rows // chunk_rows  # [R] non-decreasing
        breaks = np.flatnonzero(np.diff(chunk_ids)) + 1
        group_starts = np.concatenate(([0], breaks))
        group_stops = np.concatenate((breaks, [len(rows)]))
        for i, j in zip(group_starts.tolist(), group_stops.tolist(), strict=True):
            chunk = int(chunk_ids[i])
            out[i:j] = self._chunk(chunk, chunk_rows)[rows[i:j] - chunk * chunk_rows]
        return out

    def _chunk(self, chunk: int, chunk_rows: int) -> np.ndarray:
        """Chunk ``chunk`` ([<= chunk_rows, *row_shape]) decompressed, from the cache if there."""
        block = self._chunks.get(chunk)
        if block is not None:
            self._chunks.move_to_end(chunk)
            return block
        start = chunk * chunk_rows
        block = self.ds[start : min(start + chunk_rows, self.ds.shape[0])]
        self._chunks[chunk] = block
        self._cached_bytes += block.nbytes
        while self._cached_bytes > DECOMPRESSED_CACHE_BYTES and len(self._chunks) > 1:
            _, old = self._chunks.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return block

    def close(self) -> None:
        self.memmap = None
        self._chunks.clear()
        self._cached_bytes = 0
