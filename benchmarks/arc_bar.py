"""Issue 11's quality bar for ARC runs, read from their files: a markdown table per run.

    python benchmarks/arc_bar.py runs/arc_cells runs/arc_vq runs/arc_fsq [--reference runs/arc_cells]

Each run needs ``lejepa eval``'s ``eval.json`` beside its ``metrics.jsonl`` and ``summary.json``.
Item 7's k = 1 ratio compares with ``--reference`` (the recipe without a quantizer). Item 8's
gradient shares are the mean of the last epoch's log records; "main" is the first loss.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KS = (1, 2, 4)
ACTIVE = {1: 0.70, 2: 0.60, 4: 0.50}
RECALL = {1: 0.60, 2: 0.40}
RETRIEVAL = {1: 0.60, 2: 0.40, 4: 0.20}


def load(run: Path) -> tuple[dict, list[dict], dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return (
        json.loads((run / "eval.json").read_text()),
        records,
        json.loads((run / "summary.json").read_text()),
    )


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def bar_rows(run: Path, reference: Path | None) -> list[tuple[str, str, str]]:
    ev, records, summary = load(run)
    rows = {r["k"]: r for r in ev["per_k"]}
    latent = ev["latent"]
    out = []
    recall = ev["probe_sanity"]["grid"]["object_recall"]
    out.append(
        ("1. probe on true target latents: object recall", f"{recall:.3f}", mark(recall >= 0.8))
    )
    figs, ok = [], True
    for k in KS:
        r = rows[k]
        floor = max(r["copy_last/active_accuracy"], r["blank/active_accuracy"]) + 0.25
        value = r["model/active_accuracy"]
        ok_k = value >= ACTIVE[k] and value >= floor
        ok &= ok_k
        figs.append(f"k={k} {value:.3f} (>= {max(ACTIVE[k], floor):.3f}{'' if ok_k else ' ✗'})")
    out.append(("2. decoded prediction: active-cell accuracy", "; ".join(figs), mark(ok)))
    values = [rows[k]["model/object_recall"] for k in RECALL]
    ok = all(v >= RECALL[k] for v, k in zip(values, RECALL, strict=True))
    out.append(
        (
            "3. decoded prediction: object recall (k = 1, 2)",
            " / ".join(f"{v:.3f}" for v in values),
            mark(ok),
        )
    )
    figs, ok = [], True
    for k in KS:
        r = rows[k]
        value, copy = r["model/retrieval"], r["copy_last/retrieval"]
        ok &= value >= RETRIEVAL[k] and value >= 3 * copy
        figs.append(f"{value:.3f} (copy-last {copy:.3f})")
    out.append(("4. frame retrieval k = 1 / 2 / 4", "; ".join(figs), mark(ok)))
    ratio = {k: latent[f"model/err_signal/k{k}"] / latent[f"copy_last/err_signal/k{k}"] for k in KS}
    ok = ratio[1] <= 0.5 and ratio[4] <= 0.7
    out.append(
        (
            "5. latent err/σ ÷ copy-last (k = 1 <= 0.5, k = 4 <= 0.7)",
            " / ".join(f"{ratio[k]:.2f}" for k in KS),
            mark(ok),
        )
    )
    share = ev["within_episode_share"]
    out.append(("6. within-episode variance share", f"{share:.3f}", mark(share >= 0.15)))
    train = [r for r in records if r.get("split") == "train"]
    last_epoch = max(r["epoch"] for r in train)
    last = [r for r in train if r["epoch"] == last_epoch]
    perplexity = [r["quantizer/perplexity"] for r in last if "quantizer/perplexity" in r]
    if perplexity:
        size = last[-1]["quantizer/codebook_size"]
        mean_perplexity = sum(perplexity) / len(perplexity)
        warm = [r.get("quantizer/replaced_codes_max", 0.0) for r in train if r["step"] > 100]
        most = max(warm, default=0.0)
        text = f"perplexity {mean_perplexity:.1f} of {size:.0f} ({mean_perplexity / size:.0%}); most replaced in a step after step 100: {most:.0f} ({most / size:.0%})"
        ok = mean_perplexity >= 0.25 * size and most <= 0.1 * size
        if reference is not None:
            ref = json.loads((reference / "eval.json").read_text())["latent"]
            ref_ratio = ref["model/err_signal/k1"] / ref["copy_last/err_signal/k1"]
            text += (
                f"; k=1 ratio {ratio[1]:.3f} vs {ref_ratio:.3f} ({ratio[1] / ref_ratio - 1:+.1%})"
            )
            ok &= ratio[1] <= 1.1 * ref_ratio
        out.append(("7. quantizer", text, mark(ok)))
    shares = {}
    for r in last:
        for key, value in r.items():
            if key.startswith("grad_share/"):
                shares.setdefault(key.split("/", 1)[1], []).append(value)
    mean = {name: sum(v) / len(v) for name, v in shares.items()}
    main = next(iter(mean))
    clip = summary.get("clip_fraction", float("nan"))
    ok = all(v >= 0.01 * mean[main] for v in mean.values()) and clip <= 0.5
    text = ", ".join(f"{n} {v:.3f}" for n, v in mean.items()) + f"; clip fraction {clip:.2f}"
    out.append(("8. grad share (each >= 1 % of the main loss's), clip fraction", text, mark(ok)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", type=Path, default=None)
    args = parser.parse_args()
    for run in args.runs:
        print(f"\n#### {run}\n\n| bar item | measured | |\n| --- | --- | --- |")
        for item, value, verdict in bar_rows(run, args.reference):
            print(f"| {item} | {value} | {verdict} |")


if __name__ == "__main__":
    main()
