"""Cost of two step options, in the same process, as ratios:

1. ``grad_share/<label>`` (``lejepa_core.training.grad_paths.gradient_shares``): one
   ``torch.autograd.grad`` per loss on the step's graph, on log steps only. Timed: forward +
   backward of a training step, without and with the shares (alternating, median).
2. ``train.mask_frames``: the masker on the flattened [B*W, *obs] context ("per_frame") against
   one call per frame with the generator state restored ("shared").

    .venv/bin/python benchmarks/bench_grad_share.py [--recipe recipes/multi_k_physics.toml]
        [--repeats 30] [--device cpu|cuda] [--batch-size N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "multi_k_physics.toml"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()

    from lejepa_core.build import build_model, model_spec
    from lejepa_core.recipe import load_recipe
    from lejepa_core.testing import observations
    from lejepa_core.training.grad_paths import gradient_shares
    from lejepa_core.training.step import mask_context
    from lejepa_core.training.target import make_ema_copy

    print(machine_info())
    recipe = load_recipe(args.recipe)
    device = torch.device(args.device)
    spec = model_spec(recipe)
    batch = args.batch_size or recipe.train.batch_size
    window = spec.context_frames
    torch.manual_seed(0)
    model = build_model(recipe, spec).to(device)
    target = make_ema_copy(model.context_encoder) if recipe.target.mode == "ema" else None
    g = torch.Generator().manual_seed(0)
    context = observations(spec, g, batch * window).reshape(batch, window, *spec.obs_shape)
    target_obs = observations(spec, g, batch)
    context, target_obs = context.to(device), target_obs.to(device)
    k = torch.tensor([spec.horizons[i % len(spec.horizons)] for i in range(batch)], device=device)
    mask_gen = torch.Generator(device=device).manual_seed(1)
    loss_gen = torch.Generator(device=device).manual_seed(2)

    def step(with_shares: bool) -> None:
        model.zero_grad(set_to_none=True)
        step_loss, _ = model(
            context,
            target_obs,
            k,
            target_encoder=target,
            mask_generator=mask_gen,
            loss_generator=loss_gen,
            step=0,
        )
        if with_shares:
            gradient_shares(step_loss, model)
        step_loss.total.backward()

    for _ in range(3):
        step(False), step(True)
    plain, shares = [], []
    for _ in range(args.repeats):
        plain.append(timed(lambda: step(False), device))
        shares.append(timed(lambda: step(True), device))
    p, s = statistics.median(plain), statistics.median(shares)
    every = recipe.log.every
    print(
        f"{Path(args.recipe).name}, batch {batch}, W {window}, {len(model.labels)} losses, "
        f"device {device}: forward+backward {p * 1e3:.1f} ms, with grad_share {s * 1e3:.1f} ms: "
        f"+{(s - p) * 1e3:.1f} ms per log step ({s / p - 1:+.0%} of that step), "
        f"{(s - p) / every / p:+.2%} of the training steps' time at log.every = {every}"
    )

    masker = model.masker
    per_frame, shared = [], []
    for _ in range(args.repeats * 10):
        per_frame.append(
            timed(lambda: mask_context(masker, context, mask_gen, shared=False), device)
        )
        shared.append(timed(lambda: mask_context(masker, context, mask_gen, shared=True), device))
    a, b = statistics.median(per_frame), statistics.median(shared)
    print(
        f"masker {recipe.masker.name}: per_frame {a * 1e3:.3f} ms, shared {b * 1e3:.3f} ms "
        f"({b / a:.2f}x; {(b - a) / p:+.2%} of a training step's forward+backward)"
    )


if __name__ == "__main__":
    main()
