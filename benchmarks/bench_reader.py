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

from lejepa_core.data.reader import TrajectoryData
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line("numpy", "h5py", "torch"))
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
