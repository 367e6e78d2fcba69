"""Procedural ARC-style grid dynamics: rigid coloured shapes with integer velocities.

Shape legend: ``N`` objects, ``n`` cells in one object, ``H x W`` the grid (at most 30 x 30).
The exact rules are listed in ``docs/envs_arc.md``; in short, one :func:`step_world` call

1. adds 1 to every vertical velocity (downwards) when gravity is on, clipped to ``max_speed``;
2. moves the objects one at a time in index order, each first along rows and then along
   columns, one cell at a time, ``|velocity|`` cells per axis;
3. stops an object's move along an axis at the first blocked cell:
   - a wall reverses that velocity component (with gravity, a vertical block sets it to 0);
   - other objects exchange that component with the mover (an equal-mass elastic collision;
     with gravity, a vertical block sets the mover's component to 0) and, when a recolour rule
     is set, change colour.

Objects never overlap and never leave the grid, so every object keeps its cell count.
"""

from __future__ import annotations

import attrs
import numpy as np

RECOLOUR_RULES = ("none", "max", "min", "mover")
"""``none``: colours never change; ``max`` / ``min``: the mover and the objects it ran into all
take the largest / smallest of their colours; ``mover``: the objects it ran into take the mover's
colour."""


@attrs.define
class GridWorld:
    """The full state of a procedural grid.

    Attributes:
        height, width: grid size in cells.
        shapes: ``N`` arrays ``[n, 2]`` of (row, col) cell offsets from the object's anchor,
            each with minimum 0 along both columns.
        positions: ``[N, 2]`` int64 (row, col) of each anchor.
        velocities: ``[N, 2]`` int64 (row, col) cells per step; positive rows point down.
        colours: ``[N]`` int64 colours in 1..9.
    """

    height: int
    width: int
    shapes: list[np.ndarray]
    positions: np.ndarray
    velocities: np.ndarray
    colours: np.ndarray

    def cells(self, index: int) -> np.ndarray:
        """Absolute (row, col) cells of object ``index``: ``[n, 2]``."""
        return self.shapes[index] + self.positions[index]

    def owner_grid(self) -> np.ndarray:
        """Which object covers each cell: ``[H, W]`` int64, ``-1`` where empty."""
        owner = np.full((self.height, self.width), -1, dtype=np.int64)
        for index in range(len(self.shapes)):
            rows, cols = self.cells(index).T
            owner[rows, cols] = index
        return owner

    def grid(self) -> np.ndarray:
        """The coloured grid: ``[H, W]`` int8, background 0."""
        owner = self.owner_grid()
        colours = np.concatenate([[0], self.colours]).astype(np.int8)
        return colours[owner + 1]


def random_shape(rng: np.random.Generator, max_shape_size: int) -> np.ndarray:
    """A random 4-connected shape inside a ``max_shape_size`` square: offsets ``[n, 2]``.

    The cell count is uniform in ``1..max_shape_size**2``; the shape grows from one cell by
    adding a uniformly chosen free 4-neighbour inside the square until it has that many cells.
    """
    target = int(rng.integers(1, max_shape_size**2 + 1))
    start = (int(rng.integers(max_shape_size)), int(rng.integers(max_shape_size)))
    cells = [start]
    taken = {start}
    while len(cells) < target:
        frontier = sorted(
            {
                (r + dr, c + dc)
                for r, c in cells
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= r + dr < max_shape_size and 0 <= c + dc < max_shape_size
            }
            - taken
        )
        new = frontier[int(rng.integers(len(frontier)))]
        cells.append(new)
        taken.add(new)
    offsets = np.array(cells, dtype=np.int64)
    return offsets - offsets.min(axis=0)


def free_anchors(owner: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Anchors where ``shape`` fits inside the grid on empty cells: ``[K, 2]`` (row, col)."""
    height, width = owner.shape
    extent_rows, extent_cols = shape.max(axis=0) + 1
    if extent_rows > height or extent_cols > width:
        return np.zeros((0, 2), dtype=np.int64)
    free = owner < 0
    fits = np.ones((height - extent_rows + 1, width - extent_cols + 1), dtype=bool)
    for dr, dc in shape:  # the anchor fits when every shifted cell is free
        fits &= free[dr : dr + fits.shape[0], dc : dc + fits.shape[1]]
    return np.argwhere(fits)


def sample_world(
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    num_objects: int,
    max_shape_size: int,
    max_speed: int,
) -> GridWorld:
    """Random non-overlapping objects with distinct colours (when ``num_objects <= 9``).

    Each velocity component is uniform in ``-max_speed..max_speed``, redrawn while both are 0.
    Raises ``ValueError`` when an object finds no free place (too many objects for the grid).
    """
    if num_objects <= 9:
        colours = rng.permutation(9)[:num_objects] + 1
    else:
        colours = rng.integers(1, 10, size=num_objects)
    owner = np.full((height, width), -1, dtype=np.int64)
    shapes, positions, velocities = [], [], []
    for index in range(num_objects):
        shape = random_shape(rng, max_shape_size)
        anchors = free_anchors(owner, shape)
        if len(anchors) == 0:
            raise ValueError(
                f"could not place object {index + 1} of num_objects={num_objects} on a "
                f"{height}x{width} grid; expected fewer objects or a larger grid"
            )
        anchor = anchors[int(rng.integers(len(anchors)))]
        rows, cols = (shape + anchor).T
        owner[rows, cols] = index
        velocity = np.zeros(2, dtype=np.int64)
        while not velocity.any():
            velocity = rng.integers(-max_speed, max_speed + 1, size=2)
        shapes.append(shape)
        positions.append(anchor)
        velocities.append(velocity)
    return GridWorld(
        height=height,
        width=width,
        shapes=shapes,
        positions=np.array(positions, dtype=np.int64).reshape(num_objects, 2),
        velocities=np.array(velocities, dtype=np.int64).reshape(num_objects, 2),
        colours=np.asarray(colours, dtype=np.int64),
    )


def step_world(world: GridWorld, *, gravity: bool, recolour: str, max_speed: int) -> None:
    """Advance ``world`` by one step in place (rules in the module docstring)."""
    velocities = world.velocities
    if gravity:
        velocities[:, 0] = np.minimum(velocities[:, 0] + 1, max_speed)
    owner = world.owner_grid()
    limits = (world.height, world.width)
    for index in range(len(world.shapes)):
        for axis in (0, 1):
            speed = int(velocities[index, axis])
            direction = 1 if speed > 0 else -1
            for _ in range(abs(speed)):
                cells = world.cells(index)  # [n, 2]
                target = cells.copy()
                target[:, axis] += direction
                line = target[:, axis]
                if line.min() < 0 or line.max() >= limits[axis]:
                    velocities[index, axis] = 0 if gravity and axis == 0 else -speed
                    break
                hits = owner[target[:, 0], target[:, 1]]  # [n]
                blocked = (hits >= 0) & (hits != index)
                if blocked.any():
                    blockers = np.unique(hits[blocked])
                    _collide(world, index, blockers, axis, gravity=gravity, recolour=recolour)
                    break
                owner[cells[:, 0], cells[:, 1]] = -1
                owner[target[:, 0], target[:, 1]] = index
                world.positions[index, axis] += direction


def _collide(
    world: GridWorld, index: int, blockers: np.ndarray, axis: int, *, gravity: bool, recolour: str
) -> None:
    """Object ``index`` ran into ``blockers`` (sorted indices) along ``axis``."""
    velocities = world.velocities
    if gravity and axis == 0:
        velocities[index, 0] = 0  # landing (or hitting a ceiling) is inelastic
    else:
        mover_component = velocities[index, axis]
        velocities[index, axis] = velocities[blockers[0], axis]
        velocities[blockers, axis] = mover_component
    colours = world.colours
    involved = np.concatenate([[index], blockers])
    if recolour == "max":
        colours[involved] = colours[involved].max()
    elif recolour == "min":
        colours[involved] = colours[involved].min()
    elif recolour == "mover":
        colours[blockers] = colours[index]
