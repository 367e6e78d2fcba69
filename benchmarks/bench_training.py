"""Framework overhead of ``lejepa run``: steps/s of the training pipeline against a minimal
hand-written PyTorch loop doing the same math on the same batches, in the same process.

    .venv/bin/python benchmarks/bench_training.py [--recipe recipes/multi_k_physics.toml]
        [--steps 60] [--warmup 10] [--repeats 3] [--device cpu|cuda] [--batch-size N]

Both loops: WindowSampler batch -> feature masking -> context encoder -> predictor(k) ->
EMA target encoder -> L1 + SIGReg (same loss modules) -> backward -> clip -> AdamW ->
cosine LR -> EMA update. The framework adds what a run needs on top (autocast context,
non-finite guard with its one host sync per step, pre-clip norm logging, running means,
metrics.jsonl/tensorboard every log.every steps, the progress bookkeeping). Validation and
checkpoints are kept out of the timed window (steps_per_epoch larger than the run).
Repeats alternate the two loops; the median per-step time of each is reported, with the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def framework_steps(recipe, steps: int, warmup: int, out: Path, device: str) -> float:
    """Seconds per step of ``lejepa_core.training.loop.train`` (after ``warmup`` steps)."""
    from lejepa_core.training.loop import train

    stamps = []

    def on_step(run):
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    train(recipe, out=out, device=device, stop_at_step=steps + warmup, on_step=on_step)
    timed = stamps[warmup - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def hand_steps(recipe, steps: int, warmup: int, device: str) -> float:
    """Seconds per step of a minimal loop over the same components and batches."""
    from lejepa_core.build import build_components
    from lejepa_core.data.reader import TrajectoryData
    from lejepa_core.data.sampler import WindowSampler
    from lejepa_core.training.loop import spec_for_data

    dev = torch.device(device)
    d, t = recipe.data, recipe.train
    data = TrajectoryData.open(d.path, device=str(dev), normalize=d.normalize)
    train_eps, _ = data.episode_split(d.val_fraction, d.split_seed)
    sampler = WindowSampler(
        data, train_eps, context_frames=d.context_frames, horizons=tuple(d.horizons), device=dev
    )
    torch.manual_seed(t.seed)
    c = build_components(recipe, spec_for_data(recipe, data))
    encoder, predictor, masker = c.encoder.to(dev), c.predictor.to(dev), c.masker.to(dev)
    losses = [m.to(dev) for m in c.losses]
    weights = [cfg.weight for cfg in recipe.losses]
    import copy

    target = copy.deepcopy(encoder).requires_grad_(False)
    params = [*encoder.parameters(), *predictor.parameters(), *masker.parameters()]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, betas=tuple(t.betas))
    total = t.epochs * t.steps_per_epoch
    g = torch.Generator(device=dev).manual_seed(1)
    mg = torch.Generator(device=dev).manual_seed(2)
    lg = torch.Generator(device=dev)
    from lejepa_core.interfaces import StepOutputs

    stamps = []
    for step in range(steps + warmup):
        b = sampler.sample(t.batch_size, g)
        bsz, w = b.context_obs.shape[:2]
        masked, _ = masker(b.context_obs.flatten(0, 1), mg)
        z = encoder(masked).reshape(bsz, w, -1)
        with torch.no_grad():
            z_target = target(b.target_obs)
        z_hat = predictor(z, b.k)
        lg.manual_seed(step)
        out = StepOutputs(
            prediction=z_hat,
            target=z_target,
            context=z,
            k=b.k,
            context_quantized=z,
            generator=lg,
            step=step,
        )
        loss = sum(wt * m(out).value for wt, m in zip(weights, losses, strict=False))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip or math.inf)
        opt.step()
        progress = min(1.0, max(0, step - t.warmup_steps) / max(1, total - t.warmup_steps))
        lr = t.lr * (
            (step + 1) / t.warmup_steps
            if step < t.warmup_steps
            else t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        )
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            torch._foreach_lerp_(
                list(target.parameters()),
                [p.detach() for p in encoder.parameters()],
                1 - recipe.target.momentum,
            )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    timed = stamps[warmup - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "multi_k_physics.toml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--data", default=None, help="trajectory file (default: the recipe's; generated if missing)"
    )
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)

    from lejepa_core.data.prepare import open_data
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.loop import resolve_device

    device = resolve_device(args.device)
    overrides = [
        "log.progress=false",
        "log.tensorboard=true",
        f"train.steps_per_epoch={args.steps + args.warmup + 1}",
        "train.epochs=100",
        f"train.device={device}",
    ]
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.data:
        overrides.append(f"data.path={args.data}")
    recipe = load_recipe(args.recipe, overrides)
    open_data(recipe, device, progress=False).close()  # generate once, outside the timing
    fw, hand = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            fw.append(
                framework_steps(recipe, args.steps, args.warmup, Path(tmp) / f"run{i}", str(device))
            )
            hand.append(hand_steps(recipe, args.steps, args.warmup, str(device)))
    fw_s, hand_s = statistics.median(fw), statistics.median(hand)
    batch = recipe.train.batch_size
    result = {
        "recipe": Path(args.recipe).name,
        "device": str(device),
        "batch_size": batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "framework_steps_per_s": 1 / fw_s,
        "hand_steps_per_s": 1 / hand_s,
        "framework_samples_per_s": batch / fw_s,
        "hand_samples_per_s": batch / hand_s,
        "overhead": fw_s / hand_s - 1.0,
        "framework_s_per_step_all": fw,
        "hand_s_per_step_all": hand,
        "machine": machine_info("torch"),
    }
    print(json.dumps(result, indent=2))
    print(
        f"framework {1 / fw_s:.2f} steps/s ({batch / fw_s:.0f} samples/s), hand-written {1 / hand_s:.2f} steps/s: "
        f"overhead {100 * result['overhead']:+.1f}%",
        file=sys.stderr,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
