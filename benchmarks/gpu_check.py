"""The checks and the summary of ``benchmarks/gpu_check.sh`` (one subcommand per step).

    python benchmarks/gpu_check.py device  --device cuda --recipe R --json OUT/device.json
    python benchmarks/gpu_check.py syncs   --device cuda --recipe R --json OUT/syncs.json [--set k=v]
    python benchmarks/gpu_check.py quality RUN_DIR --seconds S --json OUT/quality.json [--no-gate]
    python benchmarks/gpu_check.py summary OUT [--dry-run]   # exit 1 when a check failed

Each step writes one JSON file under OUT with ``ok`` (true, false, or null for "skipped") and
its figures; ``summary`` prints them compactly and turns them into the exit code. The targets
of issue 15 (>= 1M samples/s at batch >= 16384 with compile, >= 80 % GPU utilisation, the
quality bar in under 5 minutes, 0 host syncs per non-log training step) are reported as met or
not; only a failed check (CUDA not selected, bf16 not entered where supported, fp16 without a
GradScaler where not, a step that crashed, the quality bar missed) fails the script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The multi_k_physics quality bar (docs/results.md).
BAR_K1 = 0.10  # err/σ at k=1 (best validation record)
BAR_K10_RATIO = 0.40  # err/σ k=10 over copy-last k=10 (best validation record)
BAR_R2 = 0.98  # probe R² of every state group (eval.json)
TARGET_SAMPLES = 1_000_000  # samples/s at batch >= 16384 with compile
TARGET_UTILISATION = 80.0  # % GPU utilisation
TARGET_SECONDS = 300.0  # the scaled recipe's run, data generation included
TARGET_SYNCS = 0  # host syncs per non-log training step (physics recipes)


def write(path: str | Path, result: dict) -> None:
    Path(path).write_text(json.dumps(result, indent=2))


def check_device(args) -> int:
    """The device a run selects, the dtype of a matmul under the run's autocast, and the
    GradScaler the run would hold (fp16: a CUDA GPU without bf16, or ``--precision fp16``)."""
    import torch

    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.runtime import autocast, autocast_dtype, grad_scaler, resolve_device

    recipe = load_recipe(args.recipe, [])
    device = resolve_device(args.device)
    precision = args.precision or recipe.train.precision
    layer = torch.nn.Linear(8, 8).to(device)
    with autocast(device, precision):
        dtype = layer(torch.randn(4, 8, device=device)).dtype
    expected = autocast_dtype(device, precision) or torch.float32
    bf16_supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    scaler = grad_scaler(device, precision) is not None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpus": gpus,
        "precision": precision,
        "matmul_dtype": str(dtype).replace("torch.", ""),
        "expected_dtype": str(expected).replace("torch.", ""),
        "cuda_selected": device.type == "cuda",
        "bf16_supported": bf16_supported,
        "bf16_entered": dtype == torch.bfloat16,
        "fp16_grad_scaler": scaler,
    }
    ok = dtype == expected and scaler == (dtype == torch.float16)
    if not args.dry_run:  # on a GPU: bf16 where supported, else fp16 with a GradScaler
        entered = result["bf16_entered"] if bf16_supported else dtype == torch.float16
        ok = ok and result["cuda_selected"] and (entered or precision == "fp32")
    result["ok"] = ok
    write(args.json, result)
    print(json.dumps(result))
    return 0 if ok else 1


def check_syncs(args) -> int:
    """Host syncs of ``--steps`` non-log training steps of the recipe (after ``--warmup``):
    ``HostSyncCounter`` (device-value reads), ``ScalarReadCounter`` (the same below Python,
    e.g. a 0-d tensor passed as a number) and, on CUDA, ``torch.cuda.set_sync_debug_mode
    ("warn")`` (every synchronising CUDA call). Fails only when a step crashes."""
    import warnings

    import torch

    from lejepa_core.data.prepare import open_data
    from lejepa_core.recipe import load_recipe
    from lejepa_core.testing import HostSyncCounter, ScalarReadCounter
    from lejepa_core.training import distributed
    from lejepa_core.training.loop import train_step
    from lejepa_core.training.run import build_run, build_samplers
    from lejepa_core.training.runtime import StopFlag, grad_scaler, resolve_device

    device = resolve_device(args.device)
    never = "1000000000"  # no log step, epoch end or validation inside the counted steps
    overrides = [
        *args.set,
        "train.epochs=1",
        f"train.steps_per_epoch={never}",
        f"log.every={never}",
    ]
    recipe = load_recipe(args.recipe, overrides)
    data = open_data(recipe, device, progress=False)
    sampler, _ = build_samplers(recipe, data, device)
    run = build_run(recipe, data, device, distributed.DistInfo())
    run.model.train()
    params = [p for p in run.model.parameters() if p.requires_grad]
    loss_generator = torch.Generator(device=device)

    def steps(count: int) -> None:
        with StopFlag() as stop:
            for _ in range(count):
                batch = sampler.sample(recipe.train.batch_size, run.generators["sampler"])
                train_step(run, run.model, batch, params, loss_generator, stop)

    steps(args.warmup)  # lazy state (optimizer moments, the GradScaler's scale) first
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            HostSyncCounter() as counter,
            ScalarReadCounter() as reads,
        ):
            warnings.simplefilter("always")
            steps(args.steps)
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    cuda_syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    per_step = max(counter.count, len(cuda_syncs) if cuda else 0) / args.steps
    result = {
        "recipe": str(args.recipe),
        "device": str(device),
        "precision": recipe.train.precision,
        "grad_scaler": grad_scaler(device, recipe.train.precision) is not None,
        "steps": args.steps,
        "counter_syncs": counter.count,
        "counter_calls": sorted(set(counter.calls)),
        "scalar_reads": reads.count,  # below Python too; on CPU an upper bound
        "cuda_sync_warnings": len(cuda_syncs) if cuda else None,
        "cuda_sync_sites": sorted(set(cuda_syncs))[:5] if cuda else None,
        "syncs_per_step": per_step,
        "target_met": per_step <= TARGET_SYNCS,
        "ok": True,
    }
    write(args.json, result)
    print(json.dumps(result))
    return 0


def best_validation(metrics_jsonl: Path) -> dict:
    """The validation record with the lowest ``err_signal`` in ``metrics.jsonl``."""
    records = []
    for line in metrics_jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        figures = record.get("metrics", record)
        if record.get("split") == "val" and isinstance(figures.get("err_signal"), (int, float)):
            records.append(figures)
    if not records:
        raise ValueError(f"{metrics_jsonl}: no validation record with err_signal")
    return min(records, key=lambda figures: figures["err_signal"])


def check_quality(args) -> int:
    """The quality bar from RUN_DIR's best validation record and eval.json."""
    run = Path(args.run_dir)
    result: dict = {"run_dir": str(run), "seconds": args.seconds, "gated": not args.no_gate}
    try:
        best = best_validation(run / "metrics.jsonl")
        evaluation = json.loads((run / "eval.json").read_text())
        k1 = best["err_signal/k1"]
        k10_ratio = best["err_signal/k10"] / best["baseline/copy_last/err_signal/k10"]
        r2 = {group: value for group, value in evaluation["r2"].items() if group != "overall"}
        r2 = r2 or {"overall": evaluation["r2"]["overall"]}
    except (OSError, ValueError, KeyError, ZeroDivisionError) as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        write(args.json, result)
        print(json.dumps(result))
        return 1
    result.update(
        err_signal_k1=k1,
        k10_ratio=k10_ratio,
        r2=r2,
        bar_met=k1 <= BAR_K1 and k10_ratio <= BAR_K10_RATIO and min(r2.values()) >= BAR_R2,
        in_time=args.seconds is not None and args.seconds <= TARGET_SECONDS,
    )
    result["ok"] = result["bar_met"] or args.no_gate
    write(args.json, result)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mark(ok) -> str:
    return {True: "ok", False: "FAIL", None: "skipped"}[ok]


def summary(args) -> int:
    """The compact summary of OUT; exit 1 when a check failed or did not report."""
    out = Path(args.out)
    lines = [f"gpu_check{' (dry run: tiny sizes on CPU, bars not gated)' if args.dry_run else ''}"]
    failures = []
    device = load(out / "device.json")
    if device is None:
        failures.append("device")
        lines.append("device: FAIL (no result)")
    else:
        lines.append(
            f"device: {mark(device['ok'])}: {device['device']}"
            f"{' (' + device['gpu'] + ')' if device.get('gpu') else ''}, {device['gpus']} GPU(s), "
            f"precision {device['precision']}: matmul under autocast -> {device['matmul_dtype']}"
            + (" with GradScaler (no bf16 on this GPU)" if device.get("fp16_grad_scaler") else "")
        )
        if not device["ok"]:
            failures.append("device")
    syncs = load(out / "syncs.json")
    if syncs is None:
        failures.append("syncs")
        lines.append("syncs: FAIL (no result)")
    else:
        cuda = syncs.get("cuda_sync_warnings")
        lines.append(
            f"syncs: {mark(syncs['ok'])}: {syncs['syncs_per_step']:g} host syncs per non-log step "
            f"over {syncs['steps']} steps (counter {syncs['counter_syncs']}"
            + ("" if cuda is None else f", CUDA sync debug mode {cuda}")
            + f"), precision {syncs['precision']}"
            + (" with GradScaler" if syncs.get("grad_scaler") else "")
        )
    best_compiled = None
    for name in ("bench_eager", "bench_compiled"):
        bench = load(out / f"{name}.json")
        if bench is None:
            failures.append(name)
            lines.append(f"{name}: FAIL (no result)")
            continue
        lines.append(f"{name}: ok")
        for row in bench["rows"]:
            util = row.get("framework_gpu_utilisation")
            lines.append(
                f"  batch {row['batch_size']:>6}: {row['framework_samples_per_s']:>12,.0f} "
                f"samples/s (hand loop {row['hand_samples_per_s']:,.0f}, ratio "
                f"{row['ratio']:.3f}), peak {row['framework_peak_memory_bytes'] / 2**20:,.0f} MiB"
                + ("" if util is None else f", GPU util {util:.0f} %")
            )
            if name == "bench_compiled" and (
                best_compiled is None or row["batch_size"] >= best_compiled["batch_size"]
            ):
                best_compiled = row
    ddp = load(out / "ddp.json")
    if ddp is None:
        failures.append("ddp")
        lines.append("ddp: FAIL (no result)")
    else:
        lines.append(f"ddp: {mark(ddp['ok'])}: {ddp.get('note', '')}")
        if ddp["ok"] is False:
            failures.append("ddp")
    quality = load(out / "quality.json")
    if quality is None:
        failures.append("quality")
        lines.append("quality: FAIL (no result)")
    elif "error" in quality:
        failures.append("quality")
        lines.append(f"quality: FAIL: {quality['error']}")
    else:
        r2 = ", ".join(f"{group} {value:.4f}" for group, value in quality["r2"].items())
        seconds = quality.get("seconds")
        lines.append(
            f"quality: {mark(quality['ok'])}: err/σ k=1 {quality['err_signal_k1']:.3f} "
            f"(<= {BAR_K1}), k=10 / copy-last {quality['k10_ratio']:.3f} (<= {BAR_K10_RATIO}), "
            f"R² {r2} (>= {BAR_R2}); bar {'met' if quality['bar_met'] else 'NOT met'}"
            + ("" if seconds is None else f", {seconds:.0f} s with data generation")
        )
        if not quality["ok"]:
            failures.append("quality")
    if not args.dry_run:
        targets = []
        if best_compiled is not None:
            samples = best_compiled["framework_samples_per_s"]
            targets.append(
                f">= 1M samples/s at batch {best_compiled['batch_size']} compiled: "
                f"{'met' if samples >= TARGET_SAMPLES and best_compiled['batch_size'] >= 16384 else 'not met'}"
            )
            util = best_compiled.get("framework_gpu_utilisation")
            targets.append(
                ">= 80 % GPU utilisation: "
                + (
                    "not measured"
                    if util is None
                    else "met"
                    if util >= TARGET_UTILISATION
                    else "not met"
                )
            )
        if syncs is not None:
            targets.append(
                f"0 host syncs per non-log step: {'met' if syncs['target_met'] else 'not met'}"
            )
        if quality is not None and "in_time" in quality:
            targets.append(
                f"quality bar in <= 5 min: {'met' if quality['in_time'] and quality['bar_met'] else 'not met'}"
            )
        lines.append("targets: " + "; ".join(targets))
    lines.append(f"result: {'FAIL (' + ', '.join(failures) + ')' if failures else 'ok'}")
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("device")
    p.add_argument("--device", default="auto")
    p.add_argument("--recipe", required=True)
    p.add_argument("--precision", default=None)
    p.add_argument("--json", required=True)
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("syncs")
    p.add_argument("--device", default="auto")
    p.add_argument("--recipe", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--set", action="append", default=[], help="recipe override key=value")
    p.add_argument("--json", required=True)
    p = sub.add_parser("quality")
    p.add_argument("run_dir")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--json", required=True)
    p.add_argument("--no-gate", action="store_true")
    p = sub.add_parser("summary")
    p.add_argument("out")
    p.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    commands = {
        "device": check_device,
        "syncs": check_syncs,
        "quality": check_quality,
        "summary": summary,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
