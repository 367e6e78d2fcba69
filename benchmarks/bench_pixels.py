"""Pixels against state: samples/s of one training step of two recipes on the same machine, and
what the step's time goes to.

    .venv/bin/python benchmarks/bench_pixels.py [--recipes recipes/pixels_physics.toml
        recipes/multi_k_physics.toml] [--batch-size 64] [--steps 20] [--warmup 3]
        [--render-copies 1024] [--threads 1] [--json FILE]

Per recipe, at one batch size (the same for both, so the rates compare): the median process CPU
time and wall time per step over ``--steps`` steps, split into its parts, each timed on its own
(``time.process_time``, so a busy machine inflates wall time, not these): ``sample`` (the
WindowSampler batch), ``mask`` (the masker on the context frames), ``context encoder`` (forward
on B x W frames), ``target encoder`` (forward on B frames, no gradient), ``predictor``
(forward), ``losses``, ``backward`` and ``optimizer`` (AdamW + EMA update). samples/s =
batch / CPU seconds per step x threads (``--threads``, default 1: on a shared machine
spinning OpenMP threads inflate CPU time). The data files are generated first when missing (not timed).

Also: frames/s of the renderers at ``--render-copies`` envs (``render_gray``: [H, W] white
discs; ``render_ball_channels``: [N, H, W], one channel per ball), best of 5.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_info

REPO = Path(__file__).resolve().parents[1]
PARTS = (
    "sample",
    "mask",
    "context encoder",
    "target encoder",
    "predictor",
    "losses",
    "backward",
    "optimizer",
)


def render_rates(copies: int) -> dict[str, float]:
    """frames/s (CPU time) of the grayscale and per-ball-channel renderers, 3 balls, 32 x 32."""
    from lejepa_envs.ball_render import render_ball_channels, render_gray

    rng = np.random.default_rng(0)
    pos = rng.uniform(0.1, 0.9, (copies, 3, 2))
    radius = np.full(3, 0.08)
    rates = {}
    for name, render in (
        ("gray [H, W]", render_gray),
        ("ball_channels [N, H, W]", render_ball_channels),
    ):
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            render(pos, radius, (1.0, 1.0), (32, 32))
            best = min(best, time.process_time() - start)
        rates[name] = copies / max(best, 1e-9)
    return rates


def weighted_losses(model, outputs) -> torch.Tensor:
    """Σ weight x loss of the recipe's losses (0-d)."""
    pairs = zip(model.losses, model.weights, strict=True)
    return sum(weight * loss(outputs).value for loss, weight in pairs)


def step_parts(recipe_path: str, batch_size: int, steps: int, warmup: int) -> dict:
    """Median CPU/wall seconds of each part of a training step of ``recipe_path``."""
    import attrs

    from lejepa_core.build import build_model, model_spec
    from lejepa_core.data.prepare import open_data
    from lejepa_core.data.sampler import WindowSampler
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.step import forward_target, mask_context
    from lejepa_core.training.target import ema_update, make_ema_copy

    recipe = load_recipe(recipe_path)
    recipe = attrs.evolve(recipe, train=attrs.evolve(recipe.train, batch_size=batch_size))
    device = torch.device("cpu")
    data = open_data(recipe, device, progress=False)
    torch.manual_seed(0)
    spec = model_spec(recipe, data)
    model = build_model(recipe, spec).train()
    target = make_ema_copy(model.context_encoder)
    train_eps, _ = data.episode_split(recipe.data.val_fraction, recipe.data.split_seed)
    sampler = WindowSampler(
        data,
        train_eps,
        context_frames=recipe.data.context_frames,
        horizons=tuple(recipe.data.horizons),
        device=device,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    cpu: dict[str, list[float]] = {part: [] for part in PARTS}
    wall: list[float] = []

    def timed(part, fn, *args, **kwargs):
        start = time.process_time()
        out = fn(*args, **kwargs)
        cpu[part].append(time.process_time() - start)
        return out

    from lejepa_core.interfaces import StepOutputs

    for step in range(warmup + steps):
        if step == warmup:
            cpu = {part: [] for part in PARTS}
            wall = []
        start = time.perf_counter()
        b = timed("sample", sampler.sample, batch_size, generator)
        masked, mask = timed(
            "mask", mask_context, model.masker, b.context_obs, generator, shared=True
        )
        z = timed("context encoder", model.context_encoder, masked)
        context = z.reshape(batch_size, recipe.data.context_frames, -1)
        z_target = timed("target encoder", forward_target, target, b.target_obs, shared=False)
        prediction = timed("predictor", model.predictor, context, b.k)
        outputs = StepOutputs(
            prediction=prediction,
            target=z_target,
            context=context,
            k=b.k,
            context_quantized=context,
            mask=mask,
            generator=generator,
            step=step,
        )
        total = timed("losses", weighted_losses, model, outputs)
        optimizer.zero_grad(set_to_none=True)
        timed("backward", total.backward)
        timed(
            "optimizer", lambda: (optimizer.step(), ema_update(target, model.context_encoder, 0.99))
        )
        wall.append(time.perf_counter() - start)
    data.close()
    parts = {part: statistics.median(values) for part, values in cpu.items()}
    step_cpu = sum(parts.values())
    threads = torch.get_num_threads()
    return {
        "recipe": recipe_path,
        "obs_shape": list(spec.obs_shape),
        "encoder": recipe.encoder.name,
        "batch_size": batch_size,
        "threads": threads,
        "cpu_s_per_step": step_cpu,
        "wall_s_per_step": statistics.median(wall),
        "samples_per_s_cpu": batch_size / step_cpu * threads,
        "samples_per_s_wall": batch_size / statistics.median(wall),
        "parts_cpu_s": parts,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=[
            str(REPO / "recipes" / "pixels_physics.toml"),
            str(REPO / "recipes" / "multi_k_physics.toml"),
        ],
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--render-copies", type=int, default=1024)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: no spin-waiting on a busy machine)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {
        "machine": machine_info("torch", "numpy"),
        "render_frames_per_s": render_rates(args.render_copies),
    }
    print(json.dumps(result["machine"]))
    for name, rate in result["render_frames_per_s"].items():
        print(f"render {name}: {rate:,.0f} frames/s (CPU time, {args.render_copies} envs)")
    result["recipes"] = []
    for path in args.recipes:
        row = step_parts(path, args.batch_size, args.steps, args.warmup)
        result["recipes"].append(row)
        share = {p: v / row["cpu_s_per_step"] for p, v in row["parts_cpu_s"].items()}
        print(
            f"{Path(path).name}: obs {row['obs_shape']}, {row['encoder']}, batch {row['batch_size']}: "
            f"{row['samples_per_s_cpu']:,.0f} samples/s by CPU time on {row['threads']} threads "
            f"({row['samples_per_s_wall']:,.0f} by wall clock); "
            + ", ".join(f"{p} {100 * s:.0f}%" for p, s in share.items())
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
