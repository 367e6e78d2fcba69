"""Sampler throughput: batches/s of ``WindowSampler`` against naive per-sample h5py reads.

    .venv/bin/python benchmarks/bench_reader.py [--episodes 4000] [--steps 250] [--batches 50]

One file of BouncingBalls-shaped state observations ([T, 3, 4] float32; generated with
``generate_dataset`` when the env is registered, else synthetic), B=256 windows of W=4
context frames, horizons (1, 2, 4, 8). Rows:

* ``WindowSampler`` resident (in memory, index arithmetic + one gather);
* ``WindowSampler`` streaming (one HDF5 selection of the sorted unique rows per batch), for
  the raw file and an lzf-compressed copy;
* the naive loop a user writes with h5py: per sample, ``ds[t-W+1 : t+1]`` and ``ds[t+k]``,
  on the same windows (identical batches), then ``torch.stack``.

``--streaming``: ``on_device = "never"`` on an LZF ``lejepa/ArcGrid-v0`` file (procedural
source, int8 [30, 30] grids, written by ``generate_dataset``; the arc recipes' W=2, horizons
(1, 2, 4)), samples/s of ``WindowSampler.sample`` for

* before: one h5py slice per run of consecutive rows, no prefetch (the previous reader);
* whole-chunk gathers (each touched chunk decompressed once, LRU cache of decompressed
  chunks), no prefetch; the same with a cache too small to hold the file (cold reads);
* whole-chunk gathers with the background prefetch, alone and overlapping a simulated
  training step (``--step-ms`` of busy work on the main thread per batch).

    .venv/bin/python benchmarks/bench_reader.py --streaming [--episodes 2000] [--batch 256]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from machine import machine_line

from lejepa_core.data import row_reader
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.data.row_reader import RowReader
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.data.writer import TrajectoryWriter

B, W, HORIZONS = 256, 4, (1, 2, 4, 8)


def make_file(tmp: Path, episodes: int, steps: int) -> Path:
    path = tmp / "balls.h5"
    try:
        from lejepa_core.data.generate import generate_dataset
        from lejepa_core.registry import ensure_envs_registered

        ensure_envs_registered()
        return generate_dataset(
            "lejepa/BouncingBalls-v0", episodes=episodes, steps=steps, out=path, progress=False
        )
    except Exception as exc:  # noqa: BLE001 - the env may not exist in this checkout
        print(f"(BouncingBalls unavailable: {exc}; using synthetic data)")
    obs = np.random.default_rng(0).normal(size=(episodes * steps, 3, 4)).astype(np.float32)
    with TrajectoryWriter(
        path, obs_shape=(3, 4), obs_dtype="float32", action_shape=(), action_dtype="int8"
    ) as w:
        w.append(
            obs, np.zeros(len(obs), np.int8), lengths=[steps] * episodes, seeds=range(episodes)
        )
    return path


def recompress(src: Path, dst: Path, compression: str) -> Path:
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        for name in f:
            ds = f[name]
            kwargs = {"compression": compression} if ds.ndim > 1 or name == "actions" else {}
            # A fixed-size copy may not have chunks larger than its data (small --episodes).
            chunks = ds.chunks and tuple(
                max(1, min(c, n)) for c, n in zip(ds.chunks, ds.shape, strict=True)
            )
            g.create_dataset(name, data=ds[...], chunks=chunks, **kwargs)
    return dst


def rate(fn, batches: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        fn()
    return batches / (time.perf_counter() - start)


def naive_batch(ds: h5py.Dataset, offsets: np.ndarray, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample h5py loop, on the windows of ``batch``."""
    context, target = [], []
    for e, t, k in zip(batch.episode.tolist(), batch.t.tolist(), batch.k.tolist(), strict=True):
        row = offsets[e] + t
        context.append(torch.from_numpy(ds[row - W + 1 : row + 1]))
        target.append(torch.from_numpy(ds[row + k]))
    return torch.stack(context), torch.stack(target)


def busy(ms: float) -> None:
    """Keep the main thread busy for ``ms`` milliseconds, holding the GIL as little as a
    training step does (torch kernels release it)."""
    if ms <= 0:
        return
    a = torch.randn(256, 256)
    stop = time.perf_counter() + ms / 1000
    while time.perf_counter() < stop:
        a @ a


def streaming(args) -> None:
    """The ``--streaming`` table (see the module docstring)."""
    from lejepa_core.data.generate import generate_dataset
    from lejepa_core.registry import ensure_envs_registered

    ensure_envs_registered()
    tmp = Path(tempfile.mkdtemp(prefix="bench_reader_arc_"))
    horizons, w, b = (1, 2, 4), 2, args.batch
    try:
        start = time.perf_counter()
        path = generate_dataset(
            "lejepa/ArcGrid-v0",
            episodes=args.episodes,
            steps=30,
            out=tmp / "arc.h5",
            env_kwargs={"source": "procedural"},
            progress=False,
        )
        with h5py.File(path) as f:
            ds = f["observations"]
            layout = f"{list(ds.shape)} {ds.dtype} {ds.compression}, chunks {list(ds.chunks)}"
            raw_mb = ds.nbytes / 2**20
        print(
            f"file: {args.episodes} episodes x 30 steps, observations {layout}, "
            f"{raw_mb:.1f} MiB raw, {path.stat().st_size / 2**20:.1f} MiB on disk "
            f"(generated in {time.perf_counter() - start:.1f} s); B={b}, W={w}, horizons={horizons}"
        )
        reference = None
        results = []
        cases = (
            ("before: per-run h5py slices, no prefetch", "runs", False, 0.0, None),
            ("whole-chunk gathers, no prefetch", "chunks", False, 0.0, None),
            ("whole-chunk gathers, 8 MiB cache (cold reads), no prefetch", "chunks", False, 0.0, 8),
            ("whole-chunk gathers + prefetch", "chunks", True, 0.0, None),
            ("before, with a simulated step", "runs", False, args.step_ms, None),
            (
                "whole-chunk gathers, no prefetch, with the step",
                "chunks",
                False,
                args.step_ms,
                None,
            ),
            ("whole-chunk gathers + prefetch, with the step", "chunks", True, args.step_ms, None),
        )
        begin = time.perf_counter()
        for _ in range(args.batches):
            busy(args.step_ms)
        step_alone_ms = (time.perf_counter() - begin) / args.batches * 1000
        original_chunks = RowReader._read_chunks
        original_cache = row_reader.DECOMPRESSED_CACHE_BYTES
        for label, method, prefetch, step_ms, cache_mib in cases:
            RowReader._read_chunks = RowReader._read_runs if method == "runs" else original_chunks
            row_reader.DECOMPRESSED_CACHE_BYTES = (
                original_cache if cache_mib is None else cache_mib * 2**20
            )
            with TrajectoryData.open(path, on_device="never") as data:
                sampler = WindowSampler(
                    data,
                    torch.arange(data.num_episodes),
                    context_frames=w,
                    horizons=horizons,
                    prefetch=prefetch,
                )
                check = sampler.sample(b, torch.Generator().manual_seed(1))
                if reference is None:
                    reference = check
                assert torch.equal(check.context_obs, reference.context_obs)
                generator = torch.Generator().manual_seed(0)
                batches = args.batches if method == "runs" else args.batches * 20
                if step_ms:
                    batches = args.batches * 2
                for _ in range(3):  # warm-up (and a filled cache, where it fits)
                    sampler.sample(b, generator)
                begin = time.perf_counter()
                for _ in range(batches):
                    sampler.sample(b, generator)
                    busy(step_ms)
                seconds = time.perf_counter() - begin
                sampler.close()
            results.append((label, step_ms, batches * b / seconds, seconds / batches * 1000))
        RowReader._read_chunks = original_chunks
        row_reader.DECOMPRESSED_CACHE_BYTES = original_cache
        before = results[0][2]
        print(f"simulated step alone: {step_alone_ms:.2f} ms per batch")
        print("| method | step ms | samples/s | ms per batch | data stall ms | x before |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, step_ms, value, ms in results:
            stall = ms - step_alone_ms if step_ms else ms
            print(
                f"| {label} | {step_ms:g} | {value:,.0f} | {ms:.2f} | {stall:.2f} | "
                f"{value / before:.1f} |"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=None, help="4000 (2000 with --streaming)")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--streaming", action="store_true", help="the LZF ArcGrid table")
    parser.add_argument("--batch", type=int, default=256, help="batch size (--streaming)")
    parser.add_argument(
        "--step-ms", type=float, default=2.0, help="simulated step per batch (--streaming)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line("numpy", "h5py", "torch"))
    if args.streaming:
        args.episodes = args.episodes or 2000
        streaming(args)
        return
    args.episodes = args.episodes or 4000
    tmp = Path(tempfile.mkdtemp(prefix="bench_reader_"))
    try:
        raw_path = make_file(tmp, args.episodes, args.steps)
        lzf_path = recompress(raw_path, tmp / "balls_lzf.h5", "lzf")
        rows = []
        generator = torch.Generator().manual_seed(0)
        with TrajectoryData.open(raw_path, on_device="always") as data:
            sampler = WindowSampler(
                data, torch.arange(data.num_episodes), context_frames=W, horizons=HORIZONS
            )
            rows.append(
                (
                    "WindowSampler, resident (CPU)",
                    rate(lambda: sampler.sample(B, generator), args.batches * 10),
                )
            )
            reference = sampler.sample(B, torch.Generator().manual_seed(1))
        for label, path in (("raw file", raw_path), ("lzf file", lzf_path)):
            with TrajectoryData.open(path, on_device="never") as data:
                sampler = WindowSampler(
                    data, torch.arange(data.num_episodes), context_frames=W, horizons=HORIZONS
                )
                streamed = sampler.sample(B, torch.Generator().manual_seed(1))
                assert torch.equal(streamed.context_obs, reference.context_obs)
                rows.append(
                    (
                        f"WindowSampler, streaming, {label}",
                        rate(lambda s=sampler: s.sample(B, generator), args.batches),
                    )
                )
            with h5py.File(path) as f:
                ds, offsets = f["observations"], f["episode_offsets"][...]
                context, _ = naive_batch(ds, offsets, reference)
                assert torch.equal(context, reference.context_obs)
                rows.append(
                    (
                        f"naive per-sample h5py indexing, {label}",
                        rate(
                            lambda ds=ds, offsets=offsets: naive_batch(ds, offsets, reference),
                            max(3, args.batches // 5),
                        ),
                    )
                )
        naive_raw = rows[2][1]
        print(
            f"file: {args.episodes} episodes x {args.steps} steps, obs [3, 4] float32; B={B}, W={W}, horizons={HORIZONS}"
        )
        print("| method | batches/s | samples/s | x naive h5py (raw file) |")
        print("|---|---:|---:|---:|")
        for name, value in rows:
            print(f"| {name} | {value:,.1f} | {value * B:,.0f} | {value / naive_raw:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
