"""benchmarks/gpu_check.sh in its CI-sized dry run: every step runs on CPU at tiny sizes, the
summary names each check, and the script exits 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "LEJEPA_GPU_CHECK_DRY": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text()
    assert summary in result.stdout
    lines = summary.splitlines()
    assert lines[0].startswith("gpu_check (dry run")
    assert lines[-1] == "result: ok"
    for check in ("device: ok", "syncs: ok: 0 host syncs", "bench_eager: ok", "ddp: skipped"):
        assert any(line.startswith(check) for line in lines), (check, summary)
    assert any(line.startswith("quality: ok: err/σ k=1 ") for line in lines), summary
    device = json.loads((out / "device.json").read_text())
    assert device["device"] == "cpu" and device["matmul_dtype"] == "float32"
    assert not device["fp16_grad_scaler"]
    syncs = json.loads((out / "syncs.json").read_text())
    assert syncs["steps"] == 5 and syncs["counter_syncs"] == 0 and syncs["target_met"]
    assert syncs["scalar_reads"] == 0
    eager = json.loads((out / "bench_eager.json").read_text())
    assert [row["batch_size"] for row in eager["rows"]] == [16, 32, 64]
    assert all(row["framework_samples_per_s"] > 0 for row in eager["rows"])
    compiled = json.loads((out / "bench_compiled.json").read_text())
    assert all(row["compile"] for row in compiled["rows"])
    quality = json.loads((out / "quality.json").read_text())
    assert not quality["gated"] and set(quality["r2"]) and quality["err_signal_k1"] > 0


def test_gpu_check_summary_fails_on_a_missed_bar(tmp_path):
    """The summary's exit code: a quality bar missed (gated) or a missing step fails."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    device = {
        "ok": True,
        "device": "cuda:0",
        "gpu": "X",
        "gpus": 1,
        "precision": "auto",
        "matmul_dtype": "bfloat16",
    }
    row = {
        "batch_size": 16384,
        "framework_samples_per_s": 2e6,
        "hand_samples_per_s": 2e6,
        "ratio": 1.0,
        "framework_peak_memory_bytes": 2**30,
        "framework_gpu_utilisation": 90.0,
    }
    (tmp_path / "device.json").write_text(json.dumps(device))
    for name in ("bench_eager", "bench_compiled"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"rows": [row]}))
    (tmp_path / "ddp.json").write_text(json.dumps({"ok": None, "note": "skipped: 1 GPU(s)"}))
    syncs = {"ok": True, "steps": 5, "counter_syncs": 0, "cuda_sync_warnings": 0}
    syncs.update(syncs_per_step=0.0, target_met=True, precision="auto")
    (tmp_path / "syncs.json").write_text(json.dumps(syncs))
    run = tmp_path / "run"
    run.mkdir()
    val = {"split": "val", "err_signal": 0.2, "err_signal/k1": 0.08, "err_signal/k10": 0.3}
    records = [
        {**val, "baseline/copy_last/err_signal/k10": 0.5},
        {**val, "err_signal": 0.1, "baseline/copy_last/err_signal/k10": 1.0},  # the best
        {"split": "train", "err_signal": 0.01},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{torn")
    (run / "eval.json").write_text(json.dumps({"r2": {"overall": 0.99, "positions": 0.99}}))
    args = ["quality", str(run), "--seconds", "100", "--json", str(tmp_path / "quality.json")]
    assert gpu_check.main(args) == 0
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert quality["k10_ratio"] == pytest.approx(0.3) and quality["r2"] == {"positions": 0.99}
    assert gpu_check.main(["summary", str(tmp_path)]) == 0
    text = (tmp_path / "summary.txt").read_text()
    assert "targets: >= 1M samples/s at batch 16384 compiled: met" in text
    assert "0 host syncs per non-log step: met" in text
    assert "syncs: ok: 0 host syncs per non-log step over 5 steps (counter 0, CUDA" in text
    (run / "eval.json").write_text(json.dumps({"r2": {"overall": 0.99, "velocities": 0.9}}))
    assert gpu_check.main(args) == 1
    assert gpu_check.main(["summary", str(tmp_path)]) == 1
    assert (tmp_path / "summary.txt").read_text().splitlines()[-1] == "result: FAIL (quality)"
    (tmp_path / "device.json").unlink()
    assert gpu_check.main(["summary", str(tmp_path)]) == 1
