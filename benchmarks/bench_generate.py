"""Generation throughput: ``generate_dataset`` against what a user would otherwise write.

    .venv/bin/python benchmarks/bench_generate.py [--episodes 4096] [--steps 250] [--quick]
        [--policy noop|random]

Rows, all on ``lejepa/BouncingBalls-v0`` with state observations (3 balls x (x, y, vx, vy)):
* ``generate_dataset`` with workers 1 and 2 and each compression (HDF5 writing included,
  the file is complete and fsynced when the clock stops);
* the bare native vector env stepping the same number of steps, storing nothing (ceiling);
* Minari's ``DataCollector`` recording the single env step by step (if minari and jax are
  installed; benchmark-only dependencies), and a plain per-step gymnasium loop + h5py.

The baselines run fewer steps (they are slow); steps/s is what is compared. CPU time is
reported next to wall time: on a shared machine wall time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
from machine import machine_line

from lejepa_core.data.generate import generate_dataset
from lejepa_core.registry import ensure_envs_registered

ENV_ID = "lejepa/BouncingBalls-v0"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def bench_ours(
    tmp: Path, episodes: int, steps: int, workers: int, compression: str, policy: str
) -> dict:
    out = tmp / f"ours_{workers}_{compression}.h5"
    _, wall, cpu = timed(
        lambda: generate_dataset(
            ENV_ID,
            episodes=episodes,
            steps=steps,
            out=out,
            workers=workers,
            compression=compression,
            policy=policy,
            progress=False,
        )
    )
    total = episodes * steps
    with h5py.File(out) as f:
        raw = sum(f[name].nbytes for name in f)
    size = out.stat().st_size
    out.unlink()
    return {
        "name": f"generate_dataset workers={workers} compression={compression} policy={policy}",
        "steps": total,
        "wall": wall,
        "cpu": cpu,
        "file_mb": size / 1e6,
        "raw_mb": raw / 1e6,
    }


def bench_env_only(num_envs: int, steps: int, policy: str) -> dict:
    env = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, (steps, num_envs))
    if policy == "noop":
        actions[:] = 0

    def run():
        env.reset(seed=list(range(num_envs)))
        for t in range(steps - 1):
            env.step(actions[t])

    _, wall, cpu = timed(run)
    return {
        "name": f"bare vector env ({num_envs} copies, policy={policy}), nothing stored",
        "steps": num_envs * steps,
        "wall": wall,
        "cpu": cpu,
        "file_mb": 0.0,
        "raw_mb": 0.0,
    }


def bench_plain_loop(tmp: Path, episodes: int, steps: int, policy: str) -> dict:
    """What one writes without lejepa: a per-step loop, lists, one h5py write per episode group."""
    out = tmp / "plain.h5"

    def run():
        env = gym.make(ENV_ID)
        with h5py.File(out, "w") as f:
            for e in range(episodes):
                obs, _ = env.reset(seed=e)
                observations, actions = [obs], []
                for _ in range(steps - 1):
                    a = env.action_space.sample() if policy == "random" else 0
                    obs, *_ = env.step(a)
                    observations.append(obs)
                    actions.append(a)
                g = f.create_group(f"episode_{e}")
                g["observations"] = np.stack(observations)
                g["actions"] = np.asarray(actions)

    _, wall, cpu = timed(run)
    size = out.stat().st_size
    out.unlink()
    return {
        "name": f"plain gymnasium loop + h5py (per-episode groups, policy={policy})",
        "steps": episodes * steps,
        "wall": wall,
        "cpu": cpu,
        "file_mb": size / 1e6,
        "raw_mb": size / 1e6,
    }


def bench_minari(tmp: Path, episodes: int, steps: int, policy: str) -> dict | str:
    try:
        import jax  # noqa: F401  (DataCollector needs it: minari[create])
        import minari
    except ImportError as exc:
        return f"Minari DataCollector: not run ({exc})"
    os.environ["MINARI_DATASETS_PATH"] = str(tmp / "minari")
    import warnings

    def run():
        env = minari.DataCollector(gym.make(ENV_ID, max_steps=steps - 1))
        for e in range(episodes):
            env.reset(seed=e)
            for _ in range(steps - 1):
                action = env.action_space.sample() if policy == "random" else 0
                *_, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env.create_dataset(dataset_id="bench/balls-v0", algorithm_name="random")

    _, wall, cpu = timed(run)
    data = tmp / "minari" / "bench" / "balls-v0" / "data" / "main_data.hdf5"
    size = data.stat().st_size if data.exists() else 0
    return {
        "name": f"Minari DataCollector (single env, step by step, policy={policy})",
        "steps": episodes * steps,
        "wall": wall,
        "cpu": cpu,
        "file_mb": size / 1e6,
        "raw_mb": size / 1e6,
    }


def table(rows: list, reference: float) -> str:
    lines = [
        "| method | env-steps | wall s | CPU s | env-steps/s (wall) | steps per CPU-second | MB/s written | file MB | x baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if isinstance(r, str):
            lines.append(f"| {r} | | | | | | | | |")
            continue
        rate = r["steps"] / r["wall"]
        lines.append(
            f"| {r['name']} | {r['steps']:,} | {r['wall']:.2f} | {r['cpu']:.2f} | {rate:,.0f} | "
            f"{r['steps'] / max(r['cpu'], 1e-9):,.0f} | {r['file_mb'] / r['wall']:.1f} | {r['file_mb']:.1f} | "
            f"{rate / reference:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--baseline-episodes", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rows")
    parser.add_argument(
        "--policy",
        choices=("noop", "random"),
        default="noop",
        help="actions of every row (noop: what `lejepa generate` does by default for this env)",
    )
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.steps, args.baseline_episodes = 1024, 100, 10
    ensure_envs_registered()
    print(machine_line("numpy", "h5py", "gymnasium"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    try:
        rows = []
        combos = (
            [(1, "auto"), (2, "auto")]
            if args.quick
            else [(1, "auto"), (2, "auto"), (2, "lzf"), (2, "gzip")]
        )
        for workers, compression in combos:
            rows.append(
                bench_ours(tmp, args.episodes, args.steps, workers, compression, args.policy)
            )
            print(rows[-1])
        rows.append(bench_env_only(min(args.episodes, 4096), args.steps, args.policy))
        print(rows[-1])
        plain = bench_plain_loop(tmp, args.baseline_episodes, args.steps, args.policy)
        print(plain)
        minari_row = bench_minari(tmp, args.baseline_episodes, args.steps, args.policy)
        print(minari_row)
        reference = minari_row if isinstance(minari_row, dict) else plain
        reference_rate = reference["steps"] / reference["wall"]
        print()
        print(
            f"episodes={args.episodes}, steps={args.steps}; 'x baseline' = env-steps/s over {reference['name']}"
        )
        print(table([*rows, plain, minari_row], reference_rate))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
