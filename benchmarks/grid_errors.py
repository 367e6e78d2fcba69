"""What a grid run's decoded predictions get wrong, per k: of the wrong active cells (object
cells of the true or the last context grid), how many are extra object cells (background in
truth), object cells decoded as background, and object cells given another colour.

    python benchmarks/grid_errors.py runs/arc_cells [--checkpoint best]

The windows, the grid probe and the decoding are ``lejepa eval``'s (same seed and batches).
"""

from __future__ import annotations

import argparse

import torch

from lejepa_core.eval.evaluate import eval_samples
from lejepa_core.eval.grid import fit_grid_probe, rules_for
from lejepa_core.eval.load import PROBE_SEED, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    args = parser.parse_args()
    run = load_run(args.run_dir, checkpoint=args.checkpoint)
    _, per_k = eval_samples(run, seed=PROBE_SEED)
    rules = rules_for(run.spec.env, run.spec.env.cell_values)
    probe = fit_grid_probe(run, rules, batches=16, seed=PROBE_SEED)
    sampler = run.sampler("val")
    print(
        "| k | windows | wrong active cells | extra objects | objects -> background | other colour |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k, samples in per_k.items():
        drawn = sampler.fixed_batches(run.batch_size, 8, PROBE_SEED + 2 + k, k=k)
        last = torch.cat([b.context_obs for b in drawn]).long().cpu()[:, -1]
        truth = samples.target_state.long().cpu()
        predicted = probe.decode(samples.z_hat).cpu()
        objects, shown = rules.object_mask(truth), rules.object_mask(predicted)
        wrong = (predicted != truth) & (objects | rules.object_mask(last))
        print(
            f"| {k} | {len(truth)} | {int(wrong.sum())} | {int((wrong & ~objects).sum())} | "
            f"{int((wrong & objects & ~shown).sum())} | {int((wrong & objects & shown).sum())} |"
        )


if __name__ == "__main__":
    main()
