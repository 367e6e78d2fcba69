#!/usr/bin/env bash
# One GPU check of lejepa, for a person with one (or two) CUDA GPUs; under 8 minutes on one
# H100/H200-class GPU. From the repository root:
#
#   benchmarks/gpu_check.sh [OUT_DIR]              # the real check (default OUT_DIR: gpu_check-<time>)
#   benchmarks/gpu_check.sh --dry-run [OUT_DIR]    # CI-sized, on CPU, ~1 minute
#   LEJEPA_GPU_CHECK_DRY=1 benchmarks/gpu_check.sh # the same
#
# Steps (each writes OUT_DIR/<step>.json; the log of each is OUT_DIR/<step>.log):
#   1. device:  CUDA selected; bf16 actually entered (a matmul's dtype under the run's autocast),
#               or, on a GPU without bf16, fp16 with a GradScaler
#      syncs:   host syncs per non-log training step (HostSyncCounter, and CUDA's own
#               torch.cuda.set_sync_debug_mode("warn")) over a few steps; target 0
#   2. bench:   bench_training.py, framework vs hand loop, samples/s, peak memory, GPU
#               utilisation, compile off and on, batch 512 / 4096 / 16384
#   3. ddp:     2-GPU DDP (lejepa run --nproc 2, a short run) when two GPUs are present
#   4. quality: multi_k_physics scaled up (20,000 episodes, batch 2048), lejepa eval, and the
#               bar: err/σ k=1 <= 0.10, err/σ k=10 / copy-last <= 0.4, probe R² >= 0.98
# Then a compact summary (OUT_DIR/summary.txt). Exit 0 when every check passed, 1 otherwise.
# Environment: PYTHON (default .venv/bin/python when present, else python).
set -u
cd "$(dirname "$0")/.."

dry="${LEJEPA_GPU_CHECK_DRY:-0}"
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
    shift
fi
out="${1:-gpu_check-$(date +%Y%m%d-%H%M%S)}"
if [ -x .venv/bin/python ]; then python="${PYTHON:-.venv/bin/python}"; else python="${PYTHON:-python}"; fi
lejepa=("$python" -m lejepa_core.cli)
recipe=recipes/multi_k_physics.toml
mkdir -p "$out/data"

if [ "$dry" = "1" ]; then
    device=cpu
    sizes=16,32,64
    compiled_sizes=16
    bench=(--steps 3 --warmup 2 --repeats 1 --set data.episodes=60 --set data.steps=40)
    syncs=(--set data.episodes=60 --set data.steps=40 --set train.batch_size=32)
    quality=(--set data.episodes=60 --set data.steps=40 --set train.epochs=1
             --set train.steps_per_epoch=5 --set train.batch_size=32 --set train.val_windows=64
             --set log.every=5)
    dry_flag=(--dry-run)
else
    device=cuda
    sizes=512,4096,16384
    compiled_sizes=$sizes
    bench=(--steps 50 --warmup 15 --repeats 1)
    syncs=(--set train.batch_size=4096)
    quality=(--set data.episodes=20000 --set train.batch_size=2048)
    dry_flag=()
fi
echo "gpu_check: output in $out (dry run: $dry)"

step() {  # step NAME COMMAND...: run it, its output to OUT/NAME.log, report its exit code
    local name="$1"
    shift
    echo "== $name"
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || echo "   $name failed (exit $rc), see $out/$name.log"
    return $rc
}

step device "$python" benchmarks/gpu_check.py device --device "$device" --recipe "$recipe" \
    --json "$out/device.json" "${dry_flag[@]}"

step syncs "$python" benchmarks/gpu_check.py syncs --device "$device" --recipe "$recipe" \
    --steps 5 --warmup 3 "${syncs[@]}" --set "data.path=$out/data/bench.h5" --json "$out/syncs.json"

step bench_eager "$python" benchmarks/bench_training.py --device "$device" --batch-sizes "$sizes" \
    "${bench[@]}" --set "data.path=$out/data/bench.h5" --json "$out/bench_eager.json"
step bench_compiled "$python" benchmarks/bench_training.py --device "$device" --compile \
    --batch-sizes "$compiled_sizes" "${bench[@]}" --set "data.path=$out/data/bench.h5" \
    --json "$out/bench_compiled.json"

gpus=$("$python" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$dry" != "1" ] && [ "$gpus" -ge 2 ]; then
    if step ddp "${lejepa[@]}" run "$recipe" --nproc 2 --device cuda --out "$out/ddp_run" \
        --set train.epochs=2 --set train.steps_per_epoch=100 --set "data.path=$out/data/ddp.h5"; then
        echo '{"ok": true, "note": "lejepa run --nproc 2: 2 epochs finished"}' >"$out/ddp.json"
    else
        echo '{"ok": false, "note": "lejepa run --nproc 2 failed, see ddp.log"}' >"$out/ddp.json"
    fi
else
    reason="$gpus GPU(s)"
    [ "$dry" = "1" ] && reason="dry run"
    echo "{\"ok\": null, \"note\": \"$reason\"}" >"$out/ddp.json"
fi

start=$(date +%s)
rm -f "$out/quality.json"
if step quality_run "${lejepa[@]}" run "$recipe" --device "$device" --out "$out/quality_run" \
    "${quality[@]}" --set "data.path=$out/data/quality.h5"; then
    seconds=$(($(date +%s) - start))
    if step quality_eval "${lejepa[@]}" eval "$out/quality_run" --device "$device"; then
        gate=()
        [ "$dry" = "1" ] && gate=(--no-gate)
        step quality "$python" benchmarks/gpu_check.py quality "$out/quality_run" \
            --seconds "$seconds" --json "$out/quality.json" "${gate[@]}"
    fi
fi

echo
"$python" benchmarks/gpu_check.py summary "$out" "${dry_flag[@]}"
