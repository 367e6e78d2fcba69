"""ArcGrid's grid rules for lejepa's grid evaluation: objects bounce off the grid's walls.

Registered as ``"arc"`` through ``register_grid_rules`` (``lejepa_envs``) and named by
``ArcGridEnv.metadata["grid_rules"]``. Everything else (objects are the non-background,
non-pad cells, tracked by colour; the blank grid) is the generic
``lejepa_core.eval.grid_rules.GridRules``: procedural objects have distinct colours.

Shape legend: ``N`` grids, ``H x W`` one grid, ``V`` cell values.
"""

from __future__ import annotations

import torch

from lejepa_core.eval.grid_rules import GridRules, value_boxes


class ArcGridRules(GridRules):
    """Constant velocity with the procedural env's wall rule: a step that would take an
    object's bounding box past the grid's edge reverses that velocity component instead of
    moving (``arc_procedural.step_world`` with speed 1; collisions are not modelled)."""

    def offsets(self, last: torch.Tensor, shift: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """last [N, H, W], shift [N, V, 2], k [N] -> [N, V, 2] offsets after ``k`` steps."""
        values = torch.arange(self.cell_values, device=last.device)[None, :, None, None]
        masks = (last[:, None] == values) & self.object_mask(last)[:, None]  # [N, V, H, W]
        low, high = value_boxes(masks)  # [N, V, 2]
        grid_low, grid_high = value_boxes(self.inside(last))  # [N, 2]: the grid's extent
        grid_low, grid_high = grid_low[:, None], grid_high[:, None]
        velocity = shift.clone()
        offset = torch.zeros_like(shift)
        k = k.to(last.device)[:, None, None]  # [N, 1, 1]
        for step in range(1, int(k.max()) + 1 if k.numel() else 1):
            active = step <= k
            moved_low, moved_high = low + offset + velocity, high + offset + velocity
            blocked = (moved_low < grid_low) | (moved_high > grid_high)
            offset = torch.where(active & ~blocked, offset + velocity, offset)
            velocity = torch.where(active & blocked, -velocity, velocity)
        return offset
