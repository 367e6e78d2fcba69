"""How well a trained run predicts when a feature group is hidden in *every* context frame.

    python examples/hidden_features.py RUN_DIR [RUN_DIR ...] [--batches 8] [--batch-size 512]

For each k of the run's horizons: err/σ of the prediction from the unmasked context, and from a
context whose positions (x, y) or velocities (vx, vy) are replaced by the masker's fill value in
all W frames (what a model must then infer from the dynamics of the other features), beside
copy-last through the target encoder (the last context frame, unmasked) and through the context
encoder (what the validation records call ``baseline/copy_last`` today). σ: std of all target
latents of the sample (as in validation). Fixed validation windows (seed 0), ``best.pt``.
"""

from __future__ import annotations

import argparse

import torch

from lejepa_core.eval.load import load_run


@torch.no_grad()
def hidden_feature_table(run_dir: str, batches: int, batch_size: int) -> list[dict]:
    run = load_run(run_dir, device="cpu")
    names = list(run.spec.feature_names)
    groups = dict(run.spec.env.feature_groups)
    masker = run.model.masker
    fill = getattr(masker, "token", None)
    if fill is None:
        fill = torch.tensor(float(getattr(run.recipe.masker.params, "fill_value", 0.0)))
    sampler = run.sampler("val")
    rows, targets = [], []
    for k in run.recipe.data.horizons:
        windows = sampler.fixed_batches(batch_size, batches, seed=0, k=k)
        context = torch.cat([b.context_obs for b in windows])  # [N, W, *obs]
        target = run.target_encoder(torch.cat([b.target_obs for b in windows]))  # [N, D]
        ks = torch.full((context.shape[0],), k, dtype=torch.int64)
        row = {"k": k, "target": target}
        row["model"] = run.model.predict(context, ks)
        for group, features in groups.items():
            hidden = context.clone()
            idx = [names.index(f) for f in features]
            hidden[..., idx] = fill[idx] if fill.dim() else fill
            row[f"model, {group} hidden"] = run.model.predict(hidden, ks)
        row["copy-last (target encoder)"] = run.target_encoder(context[:, -1])
        row["copy-last (context encoder)"] = run.model.context_encoder(context[:, -1])
        rows.append(row)
        targets.append(target)
    sigma = torch.cat(targets).std()
    table = []
    for row in rows:
        target = row.pop("target")
        table.append(
            {"k": row.pop("k")}
            | {key: float((z - target).abs().mean() / sigma) for key, z in row.items()}
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    for run_dir in args.runs:
        table = hidden_feature_table(run_dir, args.batches, args.batch_size)
        columns = [c for c in table[0] if c != "k"]
        print(f"\n{run_dir}: err/sigma per k")
        print("| k | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for row in table:
            print(f"| {row['k']} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
