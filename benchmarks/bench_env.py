"""Env steps/s of the natively vectorised BouncingBalls against gymnasium's SyncVectorEnv.

    python benchmarks/bench_env.py [--quick] [--copies 1 64 1024] [--obs-mode state]

Both run the same physics (the vectorised env is bit-identical to the single env), with
no-op actions, from ``reset(seed=0)``. Each figure is the best of ``--repeats`` timed runs
(the machine may be shared; the best run is the least disturbed one), by wall clock and by
process CPU time; the ratio is taken between two figures of the same row, same process.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from machine import machine_line

from lejepa_envs.bouncing_balls import BouncingBallsEnv
from lejepa_envs.bouncing_balls_vector import BouncingBallsVectorEnv


def steps_per_second(env, steps: int, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` env-steps/s of ``steps`` no-op vector steps: (wall clock, CPU time).

    The CPU-time figure leaves out the time the process waited for a core on a busy machine.
    """
    env.reset(seed=0)
    actions = np.zeros(env.num_envs, dtype=np.int64)
    for _ in range(max(2, steps // 10)):  # warm-up
        env.step(actions)
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            env.step(actions)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return env.num_envs * steps / wall, env.num_envs * steps / max(cpu, 1e-9)


def measure(copies: int, obs_mode: str, budget: float, repeats: int, sync: bool):
    """((wall, cpu) steps/s of the vectorised env, the same for SyncVectorEnv or None)."""
    vector = BouncingBallsVectorEnv(num_envs=copies, obs_mode=obs_mode)
    rate = steps_per_second(vector, 20, 1)[0]  # probe, to size the timed runs
    vector_rates = steps_per_second(vector, max(5, int(budget * rate / copies)), repeats)
    if not sync:
        return vector_rates, None
    baseline = gym.vector.SyncVectorEnv(
        [lambda: BouncingBallsEnv(obs_mode=obs_mode) for _ in range(copies)]
    )
    rate = steps_per_second(baseline, 2, 1)[0]
    sync_rates = steps_per_second(baseline, max(2, int(budget * rate / copies)), repeats)
    return vector_rates, sync_rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about 10 s in all)")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument(
        "--vector-only", type=int, nargs="*", default=[4096], help="copies timed without baseline"
    )
    parser.add_argument("--obs-mode", nargs="+", default=["state", "pixels"])
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    budget = 0.1 if args.quick else 0.5  # seconds per timed run
    repeats = args.repeats or (2 if args.quick else 5)

    print(machine_line("numpy", "gymnasium", "torch"))
    print(
        "BouncingBalls-v0 defaults (3 balls, dt=0.1), no-op actions; env-steps/s, best of", repeats
    )
    print(
        "| obs_mode | copies | vectorised env | SyncVectorEnv | ratio | (CPU time: vec / sync / ratio) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for obs_mode in args.obs_mode:
        rows = [(c, True) for c in args.copies] + [(c, False) for c in args.vector_only]
        for copies, sync in rows:
            if obs_mode == "pixels" and copies > 1024:
                continue  # keep the pixels runs small
            (vec_wall, vec_cpu), sync_rates = measure(copies, obs_mode, budget, repeats, sync)
            if sync_rates:
                sync_wall, sync_cpu = sync_rates
                cells = f"{sync_wall:,.0f} | {vec_wall / sync_wall:.1f}x"
                cpu = f"{vec_cpu:,.0f} / {sync_cpu:,.0f} / {vec_cpu / sync_cpu:.1f}x"
            else:
                cells, cpu = "- | -", f"{vec_cpu:,.0f} / - / -"
            print(f"| {obs_mode} | {copies} | {vec_wall:,.0f} | {cells} | {cpu} |", flush=True)


if __name__ == "__main__":
    main()
