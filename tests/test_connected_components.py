"""``connected_components`` (plugins/connected_components.py): exact labels from a fixed
schedule, no host sync. References: ``scipy.ndimage.label`` per value (exact labels: each
component's smallest raster index) and the invariants the schedule's proof rests on, checked
round by round on adversarial grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lejepa_core.testing import HostSyncCounter, ScalarReadCounter
from lejepa_plugins.connected_components import (
    connected_components,
    grid_links,
    hook,
    linked_cells,
    row_runs,
    schedule,
)
from lejepa_plugins.object_encoder import extract_objects

PAD = 10
CROSS = np.zeros((3, 3, 3), dtype=bool)  # 4-connectivity inside each grid, none across the batch
CROSS[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def reference_labels(grid: np.ndarray, ignore: tuple[int, ...]) -> np.ndarray:
    """scipy's components of every value, each labelled with its smallest raster index.
    ``grid: [B, H, W]`` -> ``[B, H, W]`` int64, -1 at ignored cells."""
    batch, height, width = grid.shape
    cell = np.broadcast_to(np.arange(height * width).reshape(1, height, width), grid.shape)
    out = np.full(grid.shape, -1, dtype=np.int64)
    for value in np.unique(grid):
        if value in ignore:
            continue
        components, count = ndimage.label(grid == value, structure=CROSS)
        first = np.full(count + 1, height * width)
        np.minimum.at(first, components.ravel(), cell.ravel())
        inside = components > 0
        out[inside] = first[components[inside]]
    return out


def spiral(size: int) -> np.ndarray:
    """A 1-wide path of 1s winding inwards, its 0 corridor a second spiral: the longest paths
    a square grid holds (``size x size``)."""
    grid = np.zeros((size, size), dtype=np.int64)
    row, col, direction = 0, 0, 0
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    grid[0, 0] = 1
    while True:
        for turn in range(4):  # go straight while the cell two ahead is free, else turn
            dr, dc = moves[(direction + turn) % 4]
            r, c, r2, c2 = row + dr, col + dc, row + 2 * dr, col + 2 * dc
            inside = 0 <= r < size and 0 <= c < size
            ahead_free = not (0 <= r2 < size and 0 <= c2 < size) or grid[r2, c2] == 0
            if inside and grid[r, c] == 0 and ahead_free and (turn == 0 or _clear(grid, r, c)):
                break
        else:
            return grid
        if turn:
            direction = (direction + turn) % 4
        row, col = r, c
        grid[row, col] = 1


def _clear(grid: np.ndarray, r: int, c: int) -> bool:
    """After a turn the new cell must touch only the cell it came from."""
    size = grid.shape[0]
    ones = sum(
        grid[r + dr, c + dc]
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
        if 0 <= r + dr < size and 0 <= c + dc < size
    )
    return ones == 1


def serpentine(height: int, width: int) -> np.ndarray:
    """Full rows of 1 on even rows joined at alternating ends: one path through every row."""
    grid = np.zeros((height, width), dtype=np.int64)
    grid[::2] = 1
    grid[1::4, -1] = 1
    grid[3::4, 0] = 1
    return grid


def comb(height: int, width: int) -> np.ndarray:
    """Teeth of width 1 every other column, joined by the bottom row: the most row runs one
    component can have (``H * ceil(W / 2)``-ish)."""
    grid = np.zeros((height, width), dtype=np.int64)
    grid[:, ::2] = 1
    grid[-1] = 1
    return grid


def maze(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random depth-first spanning tree of the even cells, corridors of 1s: one component
    of many branches and dead ends (``size x size``)."""
    grid = np.zeros((size, size), dtype=np.int64)
    half = (size + 1) // 2
    start = (int(rng.integers(half)), int(rng.integers(half)))
    grid[2 * start[0], 2 * start[1]] = 1
    stack = [start]
    while stack:
        row, col = stack[-1]
        free = [
            (row + dr, col + dc)
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
            if 0 <= row + dr < half
            and 0 <= col + dc < half
            and not grid[2 * (row + dr), 2 * (col + dc)]
        ]
        if not free:
            stack.pop()
            continue
        next_row, next_col = free[rng.integers(len(free))]
        grid[2 * next_row, 2 * next_col] = grid[row + next_row, col + next_col] = 1
        stack.append((next_row, next_col))
    return grid


def symmetries(grid: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and reflections (raster order decides labels and hooking)."""
    out = []
    for k in range(4):
        rotated = np.rot90(grid, k)
        out += [rotated, rotated[:, ::-1]]
    return [np.ascontiguousarray(g) for g in out]


def adversarial_30() -> np.ndarray:
    """[B, 30, 30]: spirals, serpentines, combs in all 8 orientations, mazes, random 3-colour grids,
    one colour, all pad, a checkerboard, random grids with pad."""
    rng = np.random.default_rng(0)
    grids = []
    for shape in (spiral(30), serpentine(30, 30), comb(30, 30)):
        grids += symmetries(shape)
    grids += [maze(30, rng), maze(30, rng)]
    grids += list(rng.integers(0, 3, (8, 30, 30)))
    grids += [np.full((30, 30), 4), np.full((30, 30), PAD), np.indices((30, 30)).sum(0) % 2]
    padded = rng.integers(0, 3, (4, 30, 30))
    padded[:, rng.random(30) < 0.3] = PAD
    grids += list(padded)
    return np.stack(grids)


def test_the_spiral_is_one_path():
    grid = spiral(30)
    ones, count = ndimage.label(grid == 1)
    zeros, zero_count = ndimage.label(grid == 0)
    assert count == 1 and zero_count == 1
    assert 420 < grid.sum() < 480  # about half the cells: a 1-wide path with a 1-wide corridor


@pytest.mark.parametrize("ignore", [(PAD,), (PAD, 0)])
def test_exact_labels_on_adversarial_grids(ignore):
    grid = adversarial_30()
    labels = connected_components(torch.from_numpy(grid).to(torch.int8), ignore)
    assert labels.dtype == torch.int64
    np.testing.assert_array_equal(labels.numpy(), reference_labels(grid, ignore))


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 30), (30, 1), (2, 2), (7, 13), (13, 7), (3, 30), (17, 17)]
)
def test_exact_labels_on_other_shapes(shape, generator):
    grid = torch.randint(0, 3, (16, *shape), generator=generator)
    grid[0] = 1
    grid[1] = PAD
    if shape[0] > 1 and shape[1] > 1:
        grid[2] = torch.from_numpy(serpentine(*shape))
        grid[3] = torch.from_numpy(comb(*shape))
    labels = connected_components(grid, (PAD,))
    np.testing.assert_array_equal(labels.numpy(), reference_labels(grid.numpy(), (PAD,)))


@pytest.mark.parametrize(
    ("shape", "values"),
    [((3, 3), (0, 1, PAD)), ((2, 5), (0, 1, PAD)), ((5, 2), (0, 1, PAD)), ((4, 4), (0, 1))]
    + [((3, 5), (0, 1)), ((5, 3), (0, 1))],
)
def test_every_small_grid(shape, values):
    """Exhaustive: every grid of these values and shapes (up to 65,536 grids), where schedules
    are shortest (2 or 3 rounds) and a round too few would show."""
    cells = shape[0] * shape[1]
    digits = np.arange(len(values) ** cells)[:, None] // len(values) ** np.arange(cells)
    grid = np.array(values)[digits % len(values)].reshape(-1, *shape)
    labels = connected_components(torch.from_numpy(grid), (PAD,))
    np.testing.assert_array_equal(labels.numpy(), reference_labels(grid, (PAD,)))


def test_the_schedule_depends_on_the_grid_size_only():
    # 30 x 30: at most 30 * 15 = 450 row runs in a component -> 8 rounds, 9 + 8 + ... + 2 jumps
    assert schedule(30, 30) == [9, 8, 7, 6, 5, 4, 3, 2]
    assert schedule(1, 1) == [] and schedule(1, 2) == [] and schedule(2, 1) == [1]
    assert schedule(4, 4) == [3, 2, 1]


def tree_depths(parent: torch.Tensor) -> torch.Tensor:
    """Depth of every cell in a forest of parent pointers ``[B, n]``; fails on a cycle."""
    n = parent.shape[1]
    current, depth = parent.clone(), (parent != torch.arange(n)).long()
    for _ in range(n):
        at_root = current.gather(1, current) == current
        depth += (~at_root).long()
        current = current.gather(1, current).where(~at_root, current)
    assert (current.gather(1, current) == current).all(), "a cycle of parent pointers"
    return depth


def trees_per_component(parent: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
    """Roots of ``parent: [B, n]`` counted per component key (``component: [B, n]``, dense
    keys < B * n) -> ``[B * n]``."""
    roots = parent == torch.arange(parent.shape[1])
    counts = torch.zeros(component.numel(), dtype=torch.long)
    return counts.index_add_(0, component[roots], torch.ones_like(component[roots]))


def test_the_invariants_of_the_proof_hold_round_by_round():
    """Every round starts from stars, each inside one component; a round leaves at most half
    the trees of every component with two or more (<= c0 >> i at round i); hooking makes no
    cycle and trees of depth <= c0 >> i, which the round's jumps flatten; one star per
    component at the end."""
    grid = torch.from_numpy(adversarial_30())
    batch, height, width = grid.shape
    n = height * width
    expected = torch.from_numpy(reference_labels(grid.numpy(), (PAD,))).view(batch, -1)
    # a key per (grid, component); ignored cells are components of their own
    cell = torch.arange(n).expand(batch, -1)
    component = torch.where(expected >= 0, expected, cell) + torch.arange(batch)[:, None] * n
    _, links = grid_links(grid, (PAD,))
    linked = linked_cells(links)
    parent = row_runs(links)
    c0 = height * -(-width // 2)
    trees = trees_per_component(parent, component)
    for i, jumps in enumerate(schedule(height, width)):
        assert (parent.gather(1, parent) == parent).all(), f"round {i}: not all stars"
        assert (component.gather(1, parent) == component).all(), "a tree spans two components"
        assert trees.max() <= c0 >> i, (i, trees.max())
        parent = hook(parent, linked)
        assert tree_depths(parent).max() <= c0 >> i
        for _ in range(jumps):
            parent = parent.gather(1, parent)
        before, trees = trees, trees_per_component(parent, component)
        assert (trees <= torch.where(before >= 2, before // 2, before)).all(), f"round {i}"
    assert (parent.gather(1, parent) == parent).all()
    assert trees.max() == 1  # one star per component


def test_a_stagnant_star_hooks_unconditionally():
    """Row runs {0}, {2}, {4, 5, 6} of a 2 x 4 grid: the run hooks onto root 0 (the smallest
    linked), nothing hooks onto {2} and {2} has no smaller neighbour: only the unconditional
    step merges it in the same round (a halving round needs it)."""
    grid = torch.tensor([[[1, 0, 1, 0], [1, 1, 1, 0]]])
    _, links = grid_links(grid, (0,))
    parent = row_runs(links)
    assert parent[0, [0, 2, 4, 5, 6]].tolist() == [0, 2, 4, 4, 4]
    parent = hook(parent, linked_cells(links))
    assert parent[0, [0, 2, 4]].tolist() == [0, 4, 0]  # 2 -> 4 (the larger linked root) -> 0


def test_no_host_sync_not_even_below_python():
    grid = torch.from_numpy(adversarial_30())
    with HostSyncCounter() as syncs, ScalarReadCounter() as reads:
        connected_components(grid, (PAD, 0))
    assert syncs.calls == [] and reads.calls == []
    with HostSyncCounter() as syncs:
        extract_objects(grid, cell_values=11, pad_value=PAD, max_objects=16)
    assert syncs.calls == []
