"""Which grid probe decodes objects from a latent that holds them (docs/metrics.md#grid-figures).

Procedural ArcGrid frames (16 x 16, 4 objects, shapes up to 3 x 3, speed 1; 34 training
episodes x 30 frames, 20 test episodes of other seeds); the latent is a fixed random linear map
of the in-grid one-hot cells (256 cells x 10 colours) to D dimensions: D = 2560 is invertible,
smaller D mixes the cells. Decoders: the plain ridge argmax, the prior-balanced ridge (the grid
probe) at several balances, and a one-hidden-layer MLP trained with object-weighted
cross-entropy.

    python benchmarks/grid_probe.py            # D = 64, 256, 2560
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.grid_metrics import grid_figures
from lejepa_core.eval.grid_probe import GridProbe
from lejepa_core.eval.grid_rules import GridRules
from lejepa_envs.arc_procedural import sample_world, step_world


def frames(episodes: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    grids = []
    for _ in range(episodes):
        world = sample_world(rng, height=16, width=16, num_objects=4, max_shape_size=3, max_speed=1)
        for _ in range(30):
            grid = np.full((30, 30), 10, np.int64)
            grid[:16, :16] = world.grid()
            grids.append(grid)
            step_world(world, gravity=False, recolour="none", max_speed=1)
    return torch.tensor(np.array(grids))


def mlp_decode(z_train, g_train, z_test, rules, *, steps=600, weight=10.0, seed=0):
    """One hidden layer (256, GELU) onto the cells that vary; object cells weigh ``weight``."""
    torch.manual_seed(seed)
    flat = g_train.flatten(1)
    varying = (flat != flat[:1]).any(0)
    targets = flat[:, varying]
    weights = torch.where(rules.object_mask(g_train).flatten(1)[:, varying], weight, 1.0)
    mean, std = z_train.mean(0), z_train.std(0).clamp_min(1e-6)
    x = (z_train - mean) / std
    v = rules.cell_values
    net = nn.Sequential(
        nn.Linear(x.shape[1], 256), nn.GELU(), nn.Linear(256, int(varying.sum()) * v)
    )
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        logits = net(x[idx]).reshape(len(idx), -1, v).transpose(1, 2)
        loss = nn.functional.cross_entropy(logits, targets[idx], reduction="none")
        loss = (loss * weights[idx]).sum() / weights[idx].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = flat[:1].repeat(len(z_test), 1)
        out[:, varying] = net((z_test - mean) / std).reshape(len(z_test), -1, v).argmax(-1)
    return out.reshape(len(z_test), 30, 30)


def main(dims: list[int]) -> None:
    torch.set_num_threads(1)
    rules = GridRules(EnvInfo(cell_values=11, pad_value=10, background_value=0), 11)
    train, test = frames(34, 0), frames(20, 1)
    for d in dims:
        proj = torch.randn(2560, d, generator=torch.Generator().manual_seed(0)) / d**0.5

        def latent(g, proj=proj):
            cells = g[:, :16, :16].reshape(len(g), -1)
            return nn.functional.one_hot(cells, 11)[..., :10].reshape(len(g), -1).float() @ proj

        z_train, z_test = latent(train), latent(test)
        for balance in (0.0, 0.25, 0.5):
            probe = GridProbe.fit(z_train, train, rules, balance=balance)
            f = grid_figures(rules, probe.decode(z_test), test, test)
            print(
                f"D={d} balanced ridge {balance}: object recall {f['object_recall']:.3f} "
                f"cell accuracy {f['cell_accuracy']:.3f}"
            )
        start = time.process_time()
        f = grid_figures(rules, mlp_decode(z_train, train, z_test, rules), test, test)
        print(
            f"D={d} MLP: object recall {f['object_recall']:.3f} cell accuracy "
            f"{f['cell_accuracy']:.3f} ({time.process_time() - start:.1f} s CPU)"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [64, 256, 2560])
