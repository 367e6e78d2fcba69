"""Framework overhead of ``lejepa run``: steps/s of the training pipeline against a minimal
hand-written PyTorch loop doing the same math on the same batches, in the same process.

    .venv/bin/python benchmarks/bench_training.py [--recipe recipes/multi_k_physics.toml]
        [--steps 60] [--warmup 10] [--repeats 3] [--device cpu|cuda]
        [--batch-sizes 512,4096,16384] [--precision auto|bf16|fp16|fp32] [--compile]
        [--set data.episodes=300 ...] [--json FILE]

Both loops run in the same precision (``--precision``, default the recipe's ``auto``: bf16
autocast on CUDA, fp16 with a GradScaler on a CUDA GPU without bf16, fp32 on CPU; losses in
fp32 as the framework computes them) with the same optimizer (AdamW, fused kernels on CPU and
CUDA) and, with ``--compile``, compiled encoders and predictor (the framework: one compiled
instance per mode, ``lejepa_core.training.compiled``; the hand loop: ``nn.Module.compile``). Per batch size: samples/s, peak memory
(``torch.cuda.max_memory_allocated`` on CUDA; the largest resident set size sampled after each
step on CPU) and, on CUDA, the mean GPU utilisation over the timed steps (``nvidia-smi``,
sampled every 0.2 s; ``torch.cuda.utilization`` when nvidia-smi is missing).

Both loops: WindowSampler batch -> feature masking -> context encoder -> predictor(k) ->
EMA target encoder -> L1 + SIGReg (same loss modules) -> backward -> clip -> AdamW ->
cosine LR -> EMA update. The framework adds what a run needs on top (autocast context,
non-finite guard decided on the device, pre-clip norm logging, running means,
metrics.jsonl/tensorboard every log.every steps, the progress bookkeeping). Validation and
checkpoints are kept out of the timed window (steps_per_epoch larger than the run).
Repeats alternate the two loops; the median per-step time of each is reported, with the ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    """The process's current resident set size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Probe:
    """Timestamps, peak memory and GPU utilisation of one loop: ``start()`` before its first
    step, ``step()`` after each (synchronising CUDA), ``result(warmup)`` at the end."""

    def __init__(self, device: torch.device):
        self.device, self.stamps, self.peak_rss = device, [], 0
        self.utilisation: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)

    def step(self, warmup: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        else:
            self.peak_rss = max(self.peak_rss, rss_bytes())
        self.stamps.append(time.perf_counter())
        if len(self.stamps) == warmup and self.device.type == "cuda":
            self._thread = threading.Thread(target=self._sample_utilisation, daemon=True)
            self._thread.start()

    def _sample_utilisation(self) -> None:
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        query = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            f"--id={index}",
        ]
        while not self._stop.wait(0.2):
            try:
                value = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                self.utilisation.append(float(value.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                try:
                    self.utilisation.append(float(torch.cuda.utilization(self.device)))
                except Exception:  # noqa: BLE001 - no NVML either: leave it unmeasured
                    return

    def result(self, warmup: int) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        timed = self.stamps[warmup - 1 :]
        peak = (
            torch.cuda.max_memory_allocated(self.device)
            if self.device.type == "cuda"
            else self.peak_rss
        )
        return {
            "s_per_step": (timed[-1] - timed[0]) / (len(timed) - 1),
            "peak_memory_bytes": int(peak),
            "gpu_utilisation": (statistics.mean(self.utilisation) if self.utilisation else None),
        }


def framework_steps(recipe, steps: int, warmup: int, out: Path, device: str, compile: bool) -> dict:
    """``Probe.result`` of ``lejepa_core.training.loop.train`` (after ``warmup`` steps)."""
    from lejepa_core.training.loop import train

    probe = Probe(torch.device(device))
    probe.start()
    train(
        recipe,
        out=out,
        device=device,
        compile=compile,
        stop_at_step=steps + warmup,
        on_step=lambda run: probe.step(warmup),
    )
    return probe.result(warmup)


def hand_steps(recipe, steps: int, warmup: int, device: str, compile: bool) -> dict:
    """``Probe.result`` of a minimal loop over the same components and batches, in the same
    precision, with the same optimizer and compiled modules."""
    from lejepa_core.build import build_components, model_spec
    from lejepa_core.data.reader import TrajectoryData
    from lejepa_core.data.sampler import WindowSampler
    from lejepa_core.training.runtime import autocast, grad_scaler

    dev = torch.device(device)
    d, t = recipe.data, recipe.train
    data = TrajectoryData.open(d.path, device=str(dev), normalize=d.normalize)
    train_eps, _ = data.episode_split(d.val_fraction, d.split_seed)
    sampler = WindowSampler(
        data, train_eps, context_frames=d.context_frames, horizons=tuple(d.horizons), device=dev
    )
    torch.manual_seed(t.seed)
    c = build_components(recipe, model_spec(recipe, data))
    encoder, predictor, masker = c.encoder.to(dev), c.predictor.to(dev), c.masker.to(dev)
    losses = [m.to(dev) for m in c.losses]
    weights = [cfg.weight for cfg in recipe.losses]
    import copy

    target = copy.deepcopy(encoder).requires_grad_(False)
    params = [*encoder.parameters(), *predictor.parameters(), *masker.parameters()]
    fused = {"fused": True} if dev.type in ("cpu", "cuda") else {"foreach": True}
    scaler = grad_scaler(dev, t.precision)  # fp16 only
    opt = torch.optim.AdamW(
        params, lr=t.lr, weight_decay=t.weight_decay, betas=tuple(t.betas), **fused
    )
    if compile:
        encoder.compile()
        predictor.compile()
        target.compile()
    total = t.epochs * t.steps_per_epoch
    g = torch.Generator(device=dev).manual_seed(1)
    mg = torch.Generator(device=dev).manual_seed(2)
    lg = torch.Generator(device=dev)
    from lejepa_core.interfaces import StepOutputs

    probe = Probe(dev)
    probe.start()
    for step in range(steps + warmup):
        b = sampler.sample(t.batch_size, g)
        bsz, w = b.context_obs.shape[:2]
        with autocast(dev, t.precision):
            masked, _ = masker(b.context_obs.flatten(0, 1), mg)
            z = encoder(masked).reshape(bsz, w, -1)
            with torch.no_grad():
                z_target = target(b.target_obs)
            z_hat = predictor(z, b.k)
        lg.manual_seed(step)
        out = StepOutputs(
            prediction=z_hat.float(),
            target=z_target.float(),
            context=z.float(),
            k=b.k,
            context_quantized=z.float(),
            generator=lg,
            step=step,
        )
        loss = sum(wt * m(out).value.float() for wt, m in zip(weights, losses, strict=False))
        opt.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip or math.inf)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
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
        probe.step(warmup)
    data.close()
    return probe.result(warmup)


def measure(args, device, batch_size: int, tmp: Path) -> dict:
    """Both loops at one batch size, ``args.repeats`` times alternating; medians."""
    from lejepa_core.data.prepare import open_data
    from lejepa_core.recipe import load_recipe

    overrides = [
        "log.progress=false",
        "log.tensorboard=true",
        f"train.steps_per_epoch={args.steps + args.warmup + 1}",
        "train.epochs=100",
        f"train.device={device}",
        f"train.batch_size={batch_size}",
        *([f"train.precision={args.precision}"] if args.precision else []),
        *([f"data.path={args.data}"] if args.data else []),
        *args.set,
    ]
    recipe = load_recipe(args.recipe, overrides)
    open_data(recipe, device, progress=False).close()  # generate once, outside the timing
    fw, hand = [], []
    for i in range(args.repeats):
        out = tmp / f"run_{batch_size}_{i}"
        fw.append(framework_steps(recipe, args.steps, args.warmup, out, str(device), args.compile))
        hand.append(hand_steps(recipe, args.steps, args.warmup, str(device), args.compile))
    fw_s = statistics.median(r["s_per_step"] for r in fw)
    hand_s = statistics.median(r["s_per_step"] for r in hand)

    def util(runs):
        values = [r["gpu_utilisation"] for r in runs if r["gpu_utilisation"] is not None]
        return statistics.median(values) if values else None

    return {
        "batch_size": batch_size,
        "precision": recipe.train.precision,
        "compile": args.compile,
        "framework_samples_per_s": batch_size / fw_s,
        "hand_samples_per_s": batch_size / hand_s,
        "framework_steps_per_s": 1 / fw_s,
        "hand_steps_per_s": 1 / hand_s,
        "ratio": hand_s / fw_s,  # framework samples/s over the hand loop's
        "overhead": fw_s / hand_s - 1.0,
        "framework_peak_memory_bytes": max(r["peak_memory_bytes"] for r in fw),
        "hand_peak_memory_bytes": max(r["peak_memory_bytes"] for r in hand),
        "framework_gpu_utilisation": util(fw),
        "hand_gpu_utilisation": util(hand),
        "framework_s_per_step_all": [r["s_per_step"] for r in fw],
        "hand_s_per_step_all": [r["s_per_step"] for r in hand],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "multi_k_physics.toml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="one batch size")
    parser.add_argument(
        "--batch-sizes", default=None, help="comma-separated sweep, e.g. 512,4096,16384"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default=None,
        help="both loops (default: the recipe's train.precision)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile in both loops")
    parser.add_argument(
        "--set", action="append", default=[], help="recipe override KEY=VALUE (repeatable)"
    )
    parser.add_argument(
        "--data", default=None, help="trajectory file (default: the recipe's; generated if missing)"
    )
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)

    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.runtime import resolve_device

    device = resolve_device(args.device)
    if args.batch_sizes:
        sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    elif args.batch_size:
        sizes = [args.batch_size]
    else:
        sizes = [load_recipe(args.recipe, list(args.set)).train.batch_size]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args, device, size, Path(tmp)) for size in sizes]
    result = {
        "recipe": Path(args.recipe).name,
        "device": str(device),
        "steps": args.steps,
        "repeats": args.repeats,
        "rows": rows,
        "machine": machine_info("torch"),
    }
    print(json.dumps(result, indent=2))
    print(table(result), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def table(result: dict) -> str:
    """The rows of ``result`` as a markdown table."""

    def mib(n):
        return f"{n / 2**20:,.0f} MiB"

    def pct(x):
        return "-" if x is None else f"{x:.0f} %"

    lines = [
        f"{result['recipe']} on {result['device']}",
        "| batch | precision | compile | framework samples/s | hand samples/s | "
        "framework / hand | peak memory (fw / hand) | GPU util (fw / hand) |",
        "|---:|---|---|---:|---:|---:|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch_size']} | {r['precision']} | {'on' if r['compile'] else 'off'} | "
            f"{r['framework_samples_per_s']:,.0f} | {r['hand_samples_per_s']:,.0f} | "
            f"{r['ratio']:.3f} | {mib(r['framework_peak_memory_bytes'])} / "
            f"{mib(r['hand_peak_memory_bytes'])} | {pct(r['framework_gpu_utilisation'])} / "
            f"{pct(r['hand_gpu_utilisation'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
