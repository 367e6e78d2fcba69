"""The grid baselines (blank, copy-last, constant velocity: generic and ArcGrid rules) on every
window (2 context frames) of the validation episodes of an ArcGrid file; no model needed.

    lejepa generate lejepa/ArcGrid-v0 --episodes 1000 --steps 30 --out data/arc_1000.h5 \\
        --env-kwargs '{"source": "procedural"}'
    python benchmarks/grid_baselines.py data/arc_1000.h5 0.5   # FILE [val_fraction] [split_seed]
"""

from __future__ import annotations

import sys

import h5py
import torch

from lejepa_core.data.reader import episode_split
from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.grid_metrics import grid_figures
from lejepa_core.eval.grid_rules import GridRules
from lejepa_envs.arc_rules import ArcGridRules


def main(path: str, val_fraction: float = 0.1, split_seed: int = 0) -> None:
    with h5py.File(path) as f:
        obs = torch.tensor(f["observations"][:]).long()
        offsets = f["episode_offsets"][:]
    env = EnvInfo(cell_values=11, pad_value=10, background_value=0)
    _, val = episode_split(len(offsets) - 1, val_fraction, split_seed)
    print(f"{len(val)} validation episodes")
    for k in (1, 2, 4):
        context, truth = [], []
        for e in val.tolist():
            start, end = int(offsets[e]), int(offsets[e + 1])
            for t in range(start + 1, end - k):
                context.append(obs[t - 1 : t + 1])
                truth.append(obs[t + k])
        context, truth = torch.stack(context), torch.stack(truth)
        last, ks = context[:, -1], torch.full((len(truth),), k)
        generic, arc = GridRules(env, 11), ArcGridRules(env, 11)
        rows = (
            ("blank", generic.blank(truth)),
            ("copy_last", last),
            ("constant_velocity generic", generic.constant_velocity(context, ks)),
            ("constant_velocity arc", arc.constant_velocity(context, ks)),
        )
        for name, predicted in rows:
            figures = grid_figures(generic, predicted, truth, last)
            print(
                f"k={k} windows={len(truth)} {name:26s} "
                + "  ".join(f"{key} {value:.3f}" for key, value in figures.items())
            )


if __name__ == "__main__":
    main(
        sys.argv[1],
        *(float(sys.argv[2]),) if len(sys.argv) > 2 else (),
        *(int(a) for a in sys.argv[3:4]),
    )
