"""Exact 4-connected components of integer grids in a fixed number of batched torch operations.

Shape legend: ``B`` batch, ``H x W`` grid, ``n = H * W`` cells (raster index ``h * W + w``).

``connected_components`` is a Shiloach-Vishkin / Awerbuch-Shiloach style forest of parent
pointers ``parent: [B, n]`` (a cell's parent is a cell of the same component; a root is its own
parent) driven by a schedule that depends on ``H, W`` only: no data-dependent convergence
check, so no host sync (the object encoder's labelling never waits for the device) and a graph
``torch.compile`` can trace. A *star* is a tree of depth <= 1 (every cell points at the root).

Two cells are *linked* when they are 4-neighbours of equal value, neither ignored. Start: every
cell of one row run (consecutive linked cells of a row) points at the run's first cell: stars,
and a component holds at most ``c0 = H * ceil(W / 2)`` of them (two runs of one component in a
row are separated by another cell). Left and right links lie inside a run, so from here on only
the up and down links can join two trees. Then ``R`` rounds, each

1. **conditional hooking**: each star's root takes the smallest root linked to the star when it
   is smaller than its own (a scatter ``amin`` onto the roots);
2. **unconditional hooking**: a star that neither hooked nor was hooked onto in step 1
   ("stagnant") hooks its root onto a linked tree's root, when it has a linked tree;
3. ``J`` pointer jumps ``parent = parent[parent]``.

Why a fixed schedule is exact. Invariant: at the start of a round every tree is a star.

- No cycle: step 1 only points a root at a strictly smaller root. Every tree linked to a
  stagnant star has a larger root (else the star would have hooked in step 1), so two stagnant
  stars are never linked and step 2 never points at a stagnant root; a stagnant root receives
  nothing in either step, so it lies on no cycle, and a cycle of step 1's strictly decreasing
  pointers is impossible.
- Halving: in a component of ``c >= 2`` trees every tree has a linked tree (the component is
  connected) and so hooks or is hooked onto: with a smaller linked root it hooks in step 1, else
  it was hooked onto in step 1, else it is stagnant and hooks in step 2. The trees merge in
  groups of >= 2: at most ``c // 2`` trees remain. With ``c <= c0 >> i`` trees at round ``i``, ``R = floor(log2 c0)`` rounds leave
  one tree per component (``c0 = 450``, ``R = 8`` on 30 x 30).
- Depth: a group of ``k <= c0 >> i`` stars forms a tree of depth <= ``k`` (its roots chain
  through at most ``k - 1`` pointers, each of them a cell of a star, plus the star's leaves); a
  jump halves a depth (``d -> ceil(d / 2)``), so ``J_i = ceil(log2(c0 >> i))`` jumps restore
  the stars. 30 x 30: 8 rounds, 44 jumps in all.

(Shiloach and Vishkin 1982 and Awerbuch and Shiloach 1987 interleave one jump per round and
bound the rounds by ``O(log n)``; flattening to stars every round makes the halving above, and
so the exact round count, a two-line argument.)

After the rounds each component is one star whose root is any of its cells; a scatter ``amin``
of the raster indices over the roots gives each component its smallest cell index, the label.
Extra rounds change nothing (a single star per component has no linked tree), so the result
does not depend on how much of the schedule a grid needed (tests/test_connected_components.py
checks the invariants round by round on adversarial grids).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def connected_components(grid: torch.Tensor, ignore: tuple[int, ...]) -> torch.Tensor:
    """Label 4-connected components of equal values. ``grid: [B, H, W]`` int -> ``[B, H, W]`` int64.

    A component's label is the smallest raster index ``h * W + w`` among its cells (so labels
    are unique within one grid, not across the batch); cells whose value is in ``ignore`` get
    -1. Equivalent to ``scipy.ndimage.label(grid == c)`` for every value ``c``, up to renaming.
    Makes no host sync: a fixed schedule (``schedule(H, W)``) of batched operations.
    """
    batch, height, width = grid.shape
    n = height * width
    foreground, links = grid_links(grid, ignore)  # [B, H, W], [B, 4, H, W]
    linked = linked_cells(links)  # [B, 2 n]
    parent = row_runs(links)  # [B, n]
    for jumps in schedule(height, width):
        parent = hook(parent, linked)
        for _ in range(jumps):
            parent = parent.gather(1, parent)
    index = torch.arange(n, device=grid.device).expand(batch, n)
    smallest = torch.full_like(parent, n).scatter_reduce(1, parent, index, "amin")  # at roots
    labels = smallest.gather(1, parent).view(batch, height, width)
    return torch.where(foreground, labels, -1)


def schedule(height: int, width: int) -> list[int]:
    """Pointer jumps after each hooking round (one entry per round) for an ``H x W`` grid:
    ``J_i = ceil(log2(c0 >> i))`` for ``i < floor(log2 c0)``, ``c0 = H * ceil(W / 2)`` (the
    bound on the row runs of one component; see the module docstring)."""
    c0 = height * -(-width // 2)
    rounds = max(c0.bit_length() - 1, 0)  # floor(log2 c0)
    return [((c0 >> i) - 1).bit_length() for i in range(rounds)]


def grid_links(grid: torch.Tensor, ignore: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``grid: [B, H, W]`` -> (foreground ``[B, H, W]`` bool: value not in ``ignore``; links
    ``[B, 4, H, W]`` bool: the up, down, left, right neighbour exists, has the same value and
    both cells are foreground)."""
    values = grid.long()
    foreground = torch.ones_like(values, dtype=torch.bool)  # [B, H, W]
    for value in ignore:
        foreground &= values != value
    # off the grid: any fill, ``both`` masks it
    same = neighbours(values, -1) == values[:, None]  # [B, 4, H, W]
    both = neighbours(foreground.to(torch.uint8), 0).bool() & foreground[:, None]
    return foreground, same & both


def neighbours(x: torch.Tensor, fill: int) -> torch.Tensor:
    """``x: [B, H, W]`` -> ``[B, 4, H, W]``: each cell's up, down, left and right neighbour,
    ``fill`` off the grid."""
    padded = F.pad(x, (1, 1, 1, 1), value=fill)  # [B, H + 2, W + 2]
    return torch.stack(
        [padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]],
        dim=1,
    )


def linked_cells(links: torch.Tensor) -> torch.Tensor:
    """``links: [B, 4, H, W]`` -> ``[B, 2 n]``: the raster index of each cell's up and down
    neighbour where linked, else of the cell itself (so extremes over the two include the
    cell's own value). Left and right links join cells of one row run, which share a tree from
    the start: only vertical links join two trees."""
    batch, _, height, width = links.shape
    n = height * width
    index = torch.arange(n, device=links.device).view(1, height, width)
    # offsets as Python numbers: no host -> device copy (a sync under CUDA's sync debug mode)
    up = torch.where(links[:, 0], index - width, index).reshape(batch, n)
    down = torch.where(links[:, 1], index + width, index).reshape(batch, n)
    return torch.cat([up, down], dim=1)


def row_runs(links: torch.Tensor) -> torch.Tensor:
    """The starting forest: each cell points at the first cell of its row run (a run: cells
    linked left to right). ``links: [B, 4, H, W]`` -> ``parent: [B, n]`` (stars)."""
    batch, _, height, width = links.shape
    column = torch.arange(width, device=links.device).expand(batch, height, width)
    starts = torch.where(links[:, 2], -1, column)  # [B, H, W]: a run starts where no left link
    first = starts.cummax(dim=2).values  # [B, H, W] column of the run's first cell
    row = torch.arange(height, device=links.device).view(1, height, 1) * width
    return (row + first).reshape(batch, height * width)


def hook(parent: torch.Tensor, linked: torch.Tensor) -> torch.Tensor:
    """One round of conditional then unconditional star hooking. ``parent: [B, n]``, every tree
    a star (``parent`` is each cell's root); ``linked: [B, 2 n]`` from ``linked_cells`` ->
    ``[B, n]``, a forest of depth <= the size of its largest group of hooked stars."""
    batch, n = parent.shape
    roots = parent.gather(1, linked).view(batch, 2, n)  # the linked cells' roots (own if none)
    smaller = torch.minimum(roots[:, 0], roots[:, 1])  # [B, n]
    larger = torch.maximum(roots[:, 0], roots[:, 1])
    # 1. conditional: each root takes the smallest root linked to its star, if smaller than its
    # own (include_self); only roots are written (every index is a root)
    hooked = parent.scatter_reduce(1, parent, smaller, "amin")
    moved = (hooked != parent).long()  # [B, n] 1 at the roots that hooked
    # roots that hooked or were hooked onto (targets are roots of the round's start)
    active = moved.scatter_add(1, hooked, moved)
    # [B, n]: the cell's star neither hooked nor was hooked onto
    stagnant = (active == 0).gather(1, parent)
    # 2. unconditional: a stagnant star's linked roots are all >= its own, so the largest one
    # over the star is another tree's unless it has none (then its own: no change)
    return hooked.scatter_reduce(1, parent, torch.where(stagnant, larger, -1), "amax")
