"""Connected components of ARC grids: the fixed schedule (no host sync) against the previous
propagate-until-stable labelling (one host sync per check), and the object encoder around them.

    python benchmarks/bench_components.py [--batch 64] [--repeats 7] [--threads 1] [--no-step]

Batches of ``--batch`` grids [B, 30, 30] (pad 10): ``procedural`` (ArcGrid procedural episodes,
what the arc recipes train on), ``arc`` (real ARC-AGI-2 training grids through ArcGrid's
``source="arc"``, padded to 30 x 30), ``noise`` (uniform 3-colour 30 x 30 grids: many small
components) and ``spiral`` (a 1-wide spiral path, the worst case for propagation). Both labellings
are checked equal on every batch. Each figure is the best of ``--repeats`` timed runs by process
CPU time (the machine may be shared); ratios are taken within one run. "encoder" rows time the
``object`` encoder's forward (the arc recipes' parameters) with either labelling; the "training
step" row times ``train_step`` of ``recipes/arc_objects.toml`` (batch ``--batch``, tiny data in a
temporary directory; context and EMA target: two encoder calls, ``3 B`` grids per step).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_line

from lejepa_core.envinfo import EnvInfo
from lejepa_core.interfaces import ModelSpec
from lejepa_envs.arc_grid import ArcGridEnv
from lejepa_plugins import object_encoder
from lejepa_plugins.connected_components import connected_components, schedule

PAD = 10
ROUNDS_PER_CHECK = 4


def propagate_until_stable(grid: torch.Tensor, ignore: tuple[int, ...]) -> torch.Tensor:
    """The previous labelling: min-label propagation plus pointer jumping until a block of
    ``ROUNDS_PER_CHECK`` rounds changes nothing (``torch.equal``: one host sync per block)."""
    batch, height, width = grid.shape
    n = height * width
    values = grid.long()
    ignored = torch.tensor(ignore, dtype=torch.long, device=grid.device)
    foreground = ~torch.isin(values, ignored)
    link_down = (values[:, :-1] == values[:, 1:]) & foreground[:, :-1] & foreground[:, 1:]
    link_right = (values[:, :, :-1] == values[:, :, 1:]) & foreground[:, :, :-1]
    link_right &= foreground[:, :, 1:]
    index = torch.arange(n, device=grid.device).view(1, height, width).expand(batch, -1, -1)
    labels = torch.where(foreground, index, n)
    flat_foreground = foreground.reshape(batch, n)

    def propagate(labels: torch.Tensor) -> torch.Tensor:
        new = labels.clone()
        new[:, :-1] = torch.where(link_down, torch.minimum(new[:, :-1], labels[:, 1:]), new[:, :-1])
        new[:, 1:] = torch.where(link_down, torch.minimum(new[:, 1:], labels[:, :-1]), new[:, 1:])
        new[:, :, :-1] = torch.where(
            link_right, torch.minimum(new[:, :, :-1], labels[:, :, 1:]), new[:, :, :-1]
        )
        new[:, :, 1:] = torch.where(
            link_right, torch.minimum(new[:, :, 1:], labels[:, :, :-1]), new[:, :, 1:]
        )
        flat = new.reshape(batch, n)
        jumped = flat.gather(1, flat.clamp(max=n - 1))
        flat = torch.where(flat_foreground, torch.minimum(flat, jumped), n)
        return flat.view(batch, height, width)

    while True:
        for _ in range(ROUNDS_PER_CHECK):
            labels, previous = propagate(labels), labels
        if torch.equal(labels, previous):
            break
    return torch.where(foreground, labels, -1)


def procedural_grids(batch: int) -> torch.Tensor:
    """One frame of each of ``batch`` procedural episodes (arc recipes' env, default kwargs)."""
    env = ArcGridEnv(source="procedural")
    frames = []
    for seed in range(batch):
        obs, _ = env.reset(seed=seed)
        for _ in range(seed % 5):
            obs, *_ = env.step(0)
        frames.append(obs)
    return torch.from_numpy(np.stack(frames))


def arc_grids(batch: int) -> torch.Tensor:
    """``batch`` real ARC grids (input frames of ARC-AGI-2 training pairs), padded to 30 x 30;
    the largest of the first ``4 * batch`` pairs (real grids range from 1 x 1 to 30 x 30)."""
    env = ArcGridEnv(source="arc")
    frames = [env.reset(seed=0, options={"episode": k})[0] for k in range(4 * batch)]
    frames.sort(key=lambda g: -(g != PAD).sum())
    return torch.from_numpy(np.stack(frames[:batch]))


def spiral_grids(batch: int) -> torch.Tensor:
    """A 1-wide path of 1s winding inwards over 30 x 30, its 0 corridor a second spiral (the
    construction of tests/test_connected_components.py): the longest paths the grid holds."""
    size = 30
    grid = np.zeros((size, size), dtype=np.int8)
    row = col = direction = 0
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    grid[0, 0] = 1

    def free(r: int, c: int) -> bool:
        return not (0 <= r < size and 0 <= c < size) or grid[r, c] == 0

    def touches_one(r: int, c: int) -> bool:
        return sum(not free(r + dr, c + dc) for dr, dc in moves) == 1

    while True:
        for turn in range(4):  # straight while the cell two ahead is free, else turn
            dr, dc = moves[(direction + turn) % 4]
            r, c = row + dr, col + dc
            inside = 0 <= r < size and 0 <= c < size
            if inside and grid[r, c] == 0 and free(r + dr, c + dc):
                if turn == 0 or touches_one(r, c):
                    break
        else:
            return torch.from_numpy(grid).expand(batch, -1, -1).clone()
        direction = (direction + turn) % 4
        row, col = r, c
        grid[row, col] = 1


def best_cpu(fn, repeats: int) -> float:
    """Best-of-``repeats`` process CPU seconds of one call (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def encoder(labelling) -> torch.nn.Module:
    """The arc recipes' object encoder (recipes/arc_vq.toml), labelling swapped in."""
    object_encoder.connected_components = labelling
    params = object_encoder.ObjectEncoder.Params(
        dim=64,
        depth=2,
        num_heads=4,
        max_objects=16,
        readout="colour_slots",
        position_frequencies=2,
    )
    spec = ModelSpec(
        obs_shape=(30, 30),
        obs_dtype="int8",
        latent_dim=160,
        env=EnvInfo(cell_values=11, pad_value=PAD),
    )
    return object_encoder.ObjectEncoder(params, spec)


def training_step_times(batch: int, repeats: int, steps: int = 5) -> list[float]:
    """CPU seconds per ``train_step`` of recipes/arc_objects.toml with the previous and the fixed
    labelling (best of ``repeats`` blocks of ``steps`` steps each, the two interleaved)."""
    from lejepa_core.data.prepare import open_data
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training import distributed
    from lejepa_core.training.loop import train_step
    from lejepa_core.training.run import build_run, build_samplers
    from lejepa_core.training.runtime import StopFlag

    recipe_file = Path(__file__).resolve().parent.parent / "recipes" / "arc_objects.toml"
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"data.path={tmp}/arc.h5",
            "data.episodes=32",
            "data.steps=20",
            f"train.batch_size={batch}",
            "train.val_windows=8",
            "log.every=100000",
        ]
        recipe = load_recipe(recipe_file, overrides)
        data = open_data(recipe, device, progress=False)
        sampler, _ = build_samplers(recipe, data, device)
        run = build_run(recipe, data, device, distributed.DistInfo())
        run.model.train()
        params = [p for p in run.model.parameters() if p.requires_grad]
        loss_generator = torch.Generator()
        best = [float("inf"), float("inf")]
        with StopFlag() as stop:

            def block() -> None:
                for _ in range(steps):
                    sample = sampler.sample(batch, run.generators["sampler"])
                    train_step(run, run.model, sample, params, loss_generator, stop)

            for labelling in (propagate_until_stable, connected_components):  # warm-up
                object_encoder.connected_components = labelling
                block()
            for _ in range(repeats):
                for which, labelling in enumerate((propagate_until_stable, connected_components)):
                    object_encoder.connected_components = labelling
                    start = time.process_time()
                    block()
                    best[which] = min(best[which], (time.process_time() - start) / steps)
    object_encoder.connected_components = connected_components
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-step", action="store_true", help="skip the training-step row")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batches = {
        "procedural": procedural_grids(args.batch),
        "arc": arc_grids(args.batch),
        "noise": torch.randint(0, 3, (args.batch, 30, 30), dtype=torch.int8),
        "spiral": spiral_grids(args.batch),
    }
    print(machine_line("torch", "numpy"))
    print(f"B = {args.batch}, 30 x 30, schedule {schedule(30, 30)}, best of {args.repeats}")
    print(
        "| grids | labelling: before ms | fixed ms | x before | encoder: before ms | fixed ms "
        "| x before |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, grid in batches.items():
        for ignore in ((PAD, 0),):
            before = propagate_until_stable(grid, ignore)
            assert torch.equal(connected_components(grid, ignore), before), name
        label_old = best_cpu(lambda g=grid: propagate_until_stable(g, (PAD, 0)), args.repeats)
        label_new = best_cpu(lambda g=grid: connected_components(g, (PAD, 0)), args.repeats)
        with torch.no_grad():
            times = []
            for labelling in (propagate_until_stable, connected_components):
                module = encoder(labelling)
                times.append(best_cpu(lambda g=grid, m=module: m(g), args.repeats))
        print(
            f"| {name} | {1e3 * label_old:.1f} | {1e3 * label_new:.1f} | "
            f"{label_new / label_old:.2f} | {1e3 * times[0]:.1f} | {1e3 * times[1]:.1f} | "
            f"{times[1] / times[0]:.2f} |"
        )
    object_encoder.connected_components = connected_components
    if not args.no_step:
        before, fixed = training_step_times(args.batch, args.repeats)
        print(
            f"| training step (arc_objects, procedural) | | | | {1e3 * before:.1f} | "
            f"{1e3 * fixed:.1f} | {fixed / before:.2f} |"
        )


if __name__ == "__main__":
    main()
