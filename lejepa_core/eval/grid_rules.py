"""What an object of a grid env is and how it moves: the rules the grid evaluation asks.

Shape legend: ``N`` grids, ``H x W`` one grid, ``F`` context frames, ``V`` cell values.

The generic rules (:class:`GridRules`) need nothing but the env's metadata (``EnvInfo``):

- a cell is *inside* the grid unless it holds ``pad_value`` (no pad value: every cell);
- an *object cell* is a cell inside the grid that is not ``background_value`` (default 0);
- objects are tracked *by value* (one object per colour): a value's displacement between the
  last two context grids is the difference of the centroids of its cells, rounded;
- the *blank grid* is background inside the true grid, pad outside;
- *constant velocity* moves each value's cells of the last context grid by ``k`` times its
  displacement (:meth:`GridRules.offsets`), drops what leaves the grid and paints the rest on
  a blank grid (higher values last, so they win overlaps).

An env with other rules subclasses :class:`GridRules`, registers it with the
``register_grid_rules`` hook and names it in its metadata (``grid_rules``); the evaluation
builds it as ``cls(env, cell_values)`` (``lejepa_core.eval.grid.rules_for``).
"""

from __future__ import annotations

from typing import Any

import torch

from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import InvalidComponentError


class GridRules:
    """The generic rules (module docstring), from ``env``'s ``pad_value`` and
    ``background_value``; ``cell_values`` V: grids hold values ``0 .. V-1``."""

    def __init__(self, env: EnvInfo, cell_values: int):
        self.env = env
        self.cell_values = int(cell_values)
        self.pad_value = env.pad_value
        self.background_value = 0 if env.background_value is None else env.background_value

    def inside(self, grids: torch.Tensor) -> torch.Tensor:
        """[N, H, W] -> bool [N, H, W]: the cells that are not padding."""
        if self.pad_value is None:
            return torch.ones_like(grids, dtype=torch.bool)
        return grids != self.pad_value

    def object_mask(self, grids: torch.Tensor) -> torch.Tensor:
        """[N, H, W] -> bool [N, H, W]: object cells (inside, not background)."""
        return self.inside(grids) & (grids != self.background_value)

    def blank(self, like: torch.Tensor) -> torch.Tensor:
        """[N, H, W] -> [N, H, W]: background inside ``like``'s grid, pad outside."""
        background = torch.full_like(like, self.background_value)
        if self.pad_value is None:
            return background
        return torch.where(self.inside(like), background, torch.full_like(like, self.pad_value))

    def object_values(self) -> list[int]:
        """The values that can be objects (every value but background and pad)."""
        return [
            v for v in range(self.cell_values) if v not in (self.background_value, self.pad_value)
        ]

    def tracks(self, previous: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Displacement of each value between two [N, H, W] grids: [N, V, 2] long (rows, cols),
        0 for a value missing from either grid."""
        n, h, w = last.shape
        rows = torch.arange(h, device=last.device, dtype=torch.float64)[None, :, None]
        cols = torch.arange(w, device=last.device, dtype=torch.float64)[None, None, :]
        shift = torch.zeros(n, self.cell_values, 2, dtype=torch.long, device=last.device)
        for v in self.object_values():
            centres = []
            for grid in (previous, last):
                mask = ((grid == v) & self.object_mask(grid)).double()  # [N, H, W]
                count = mask.sum((1, 2))
                centre = (
                    torch.stack([(mask * rows).sum((1, 2)), (mask * cols).sum((1, 2))], -1)
                    / count.clamp_min(1)[:, None]
                )
                centres.append((centre, count > 0))
            (before, seen_before), (after, seen_after) = centres
            both = (seen_before & seen_after)[:, None]
            shift[:, v] = torch.where(both, (after - before).round().long(), 0)
        return shift

    def offsets(self, last: torch.Tensor, shift: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """How far each value's cells of ``last`` [N, H, W] move in ``k`` [N] steps, given its
        last displacement ``shift`` [N, V, 2]: [N, V, 2]. Generic: ``k * shift``."""
        return shift * k.to(shift.device)[:, None, None]

    def constant_velocity(self, context: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The constant-velocity grid ``k`` [N] steps after the last of ``context``
        [N, F, H, W]: [N, H, W] (copy-last when F < 2)."""
        last = context[:, -1].long()
        if context.shape[1] < 2:
            return last.clone()
        offset = self.offsets(last, self.tracks(context[:, -2].long(), last), k)
        return self.paint(last, offset)

    def paint(self, last: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Each value's object cells of ``last`` [N, H, W] moved by ``offset`` [N, V, 2] onto
        the blank grid of ``last``; cells that land outside the grid are dropped."""
        out = self.blank(last)
        inside = self.inside(last)
        for v in self.object_values():
            mask = (last == v) & self.object_mask(last)
            if bool(mask.any()):
                moved = shift_mask(mask, offset[:, v])
                out = torch.where(moved & inside, torch.full_like(out, v), out)
        return out

    def decode(self, scores: torch.Tensor) -> torch.Tensor:
        """Cell scores [N, C, V] -> values [N, C] (C cells): the highest-scoring value."""
        return scores.argmax(-1)


def shift_mask(mask: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W] moved by ``offset`` [N, 2] (rows, cols); what leaves the array is lost."""
    n, h, w = mask.shape
    rows = torch.arange(h, device=mask.device)[None, :, None] - offset[:, 0, None, None]
    cols = torch.arange(w, device=mask.device)[None, None, :] - offset[:, 1, None, None]
    valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # [N, H, W]
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(n, -1)
    return mask.reshape(n, -1).gather(1, index).reshape(n, h, w) & valid


def value_boxes(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of bool masks [..., H, W]: (low [..., 2], high [..., 2]) rows/cols,
    inclusive; empty masks give low = H or W and high = -1."""
    h, w = mask.shape[-2:]
    rows, cols = mask.any(-1), mask.any(-2)  # [..., H], [..., W]
    r = torch.arange(h, device=mask.device)
    c = torch.arange(w, device=mask.device)
    low = torch.stack([torch.where(rows, r, h).amin(-1), torch.where(cols, c, w).amin(-1)], -1)
    high = torch.stack([torch.where(rows, r, -1).amax(-1), torch.where(cols, c, -1).amax(-1)], -1)
    return low, high


def check_rules_class(name: str, obj: Any) -> None:
    """``InvalidComponentError`` unless ``obj`` is a ``GridRules`` class (registration)."""
    if not (isinstance(obj, type) and issubclass(obj, GridRules)):
        raise InvalidComponentError(
            f"grid_rules {name!r}: expected a subclass of "
            f"lejepa_core.eval.grid_rules.GridRules, got {obj!r}"
        )
