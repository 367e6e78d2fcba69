"""Cost of ``train.loss_weighting`` per training step, in the same process, as ratios.

Forward + backward of one training step (the model in train mode, GradNorm's
``torch.autograd.grad`` per loss included) for "fixed", "uncertainty" and "gradnorm", the three
models built from the same recipe and seed, timed alternately; the median of the process's CPU
time (``time.process_time``: a shared machine's load inflates it less than wall time), one
thread.

    .venv/bin/python benchmarks/bench_loss_weighting.py [--recipe recipes/arc_cells.toml]
        [--repeats 10] [--batch-size N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from machine import machine_info

REPO = Path(__file__).resolve().parents[1]
MODES = ("fixed", "uncertainty", "gradnorm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "arc_cells.toml"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()

    from lejepa_core.build import build_model, model_spec
    from lejepa_core.recipe import load_recipe
    from lejepa_core.testing import observations
    from lejepa_core.training.target import make_ema_copy

    torch.set_num_threads(1)
    print(machine_info())
    steps = {}
    for mode in MODES:
        recipe = load_recipe(args.recipe, [f"train.loss_weighting={mode}"])
        spec = model_spec(recipe)
        batch = args.batch_size or recipe.train.batch_size
        torch.manual_seed(0)
        model = build_model(recipe, spec).train()
        target = make_ema_copy(model.context_encoder) if recipe.target.mode == "ema" else None
        g = torch.Generator().manual_seed(0)
        window = spec.context_frames
        context = observations(spec, g, batch * window).reshape(batch, window, *spec.obs_shape)
        target_obs = observations(spec, g, batch)
        k = torch.tensor([spec.horizons[i % len(spec.horizons)] for i in range(batch)])

        def step(model=model, target=target, context=context, target_obs=target_obs, k=k):
            model.zero_grad(set_to_none=True)
            step_loss, _ = model(
                context,
                target_obs,
                k,
                target_encoder=target,
                mask_generator=torch.Generator().manual_seed(1),
                loss_generator=torch.Generator().manual_seed(2),
                step=0,
            )
            step_loss.total.backward()

        steps[mode] = step
    times = {mode: [] for mode in MODES}
    for _ in range(2):  # warm-up
        for mode in MODES:
            steps[mode]()
    for _ in range(args.repeats):
        for mode in MODES:
            start = time.process_time()
            steps[mode]()
            times[mode].append(time.process_time() - start)
    base = statistics.median(times["fixed"])
    print(f"{Path(args.recipe).name}, batch {batch}, W {window}, 1 thread, CPU time per step:")
    for mode in MODES:
        t = statistics.median(times[mode])
        print(f"  {mode:12s} {t * 1e3:8.1f} ms  ({t / base:.2f}x fixed)")


if __name__ == "__main__":
    main()
