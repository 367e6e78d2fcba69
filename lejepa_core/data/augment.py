"""Training-window augmentation of integer grids (``[data] augment``; docs/data.md).

``"colours"``: a random permutation of the cell values other than the env's ``pad_value`` and
``background_value`` (``EnvInfo``), one per window. ``"dihedral"``: one of the 8 rotations /
reflections per window, applied to each frame's content region (the top-left ``h x w`` block
of its non-pad cells; pad stays where it was); the 4 that turn by 90 degrees only when every
frame of the window is square, otherwise one of the 4 that keep the shape. A window's context
frames and target get the same transform. Vectorised over the batch on the batch's device, no
host sync; the random numbers come from the sampler's generator (so the run's seed fixes
them). Validation windows are never augmented (only the training sampler carries one).

Shape legend: ``B`` windows, ``F`` frames of a window (context frames, then the target),
``H x W`` the observation grid, ``V`` cell values, ``M`` values that the permutation moves.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from lejepa_core.data.sampler import file_actions
from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import RecipeError

AUGMENTS = ("colours", "dihedral")
"""The entries ``[data] augment`` accepts."""


@attrs.frozen(kw_only=True)
class AugmentDraw:
    """One batch's random choices: keys [B, M] float (argsort -> permutation) or None; dihedral
    [B] int64 in 0..7 or None."""

    keys: torch.Tensor | None
    dihedral: torch.Tensor | None


def value_table(keys: torch.Tensor, movable: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] int64: ``table[b, v]`` is the value ``v`` becomes in window ``b``.

    keys: [B, M] random floats; movable: [M] int64, the values permuted among themselves (the
    rest map to themselves). Window b sends ``movable[m]`` to ``movable[argsort(keys[b])[m]]``.
    """
    batch = keys.shape[0]
    table = torch.arange(size, device=keys.device).expand(batch, size).clone()
    movable = movable.to(keys.device)
    permuted = movable[keys.argsort(dim=1)]  # [B, M]
    return table.scatter(1, movable.expand(batch, -1), permuted)


def permute_values(grids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """grids [B, ...] integer through ``table`` [B, V] (values outside ``0..V-1`` unchanged)."""
    flat = grids.reshape(grids.shape[0], -1).long()  # [B, N]
    size = table.shape[1]
    inside = (flat >= 0) & (flat < size)
    mapped = table.gather(1, flat.clamp(0, size - 1))
    return torch.where(inside, mapped, flat).to(grids.dtype).reshape(grids.shape)


def content_extent(grids: torch.Tensor, pad_value: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w) [B, F] int64: rows / columns of each frame's top-left block of non-pad cells
    (grids [B, F, H, W]; the whole grid when ``pad_value`` is None)."""
    b, f, rows, cols = grids.shape
    if pad_value is None:
        full = torch.ones(b, f, dtype=torch.int64, device=grids.device)
        return full * rows, full * cols
    content = grids != pad_value  # [B, F, H, W]
    row_number = torch.arange(1, rows + 1, device=grids.device)
    col_number = torch.arange(1, cols + 1, device=grids.device)
    h = (content.any(dim=3) * row_number).amax(dim=2)  # [B, F] last content row + 1
    w = (content.any(dim=2) * col_number).amax(dim=2)  # [B, F]
    return h, w


def dihedral(grids: torch.Tensor, choice: torch.Tensor, pad_value: int | None) -> torch.Tensor:
    """grids [B, F, H, W]: frame by frame, ``choice`` [B] (0..7, one per window) applied to its
    content region (``content_extent``); cells outside it are unchanged.

    Bit 0 flips the rows, bit 1 the columns, bit 2 transposes first (out[i, j] = in[j, i]):
    0 identity, 1 ``flipud``, 2 ``fliplr``, 3 ``rot90(., 2)``, 4 transpose, 5 ``rot90(., -1)``,
    6 ``rot90(., 1)``, 7 the anti-transpose. A window whose frames are not all square gets
    ``choice % 4`` (a transposing choice would change a frame's shape).
    """
    b, f, rows, cols = grids.shape
    h, w = content_extent(grids, pad_value)  # [B, F]
    square = (h == w).all(dim=1)  # [B]
    choice = torch.where(square, choice, choice % 4)[:, None, None, None]  # [B, 1, 1, 1]
    h, w = h[:, :, None, None], w[:, :, None, None]  # [B, F, 1, 1]
    i = torch.arange(rows, device=grids.device)[:, None]  # [H, 1]
    j = torch.arange(cols, device=grids.device)[None, :]  # [1, W]
    swap = (choice & 4) != 0
    p, q = torch.where(swap, j, i), torch.where(swap, i, j)  # [B, 1, H, W] source before flips
    source_row = torch.where((choice & 1) != 0, h - 1 - p, p)  # [B, F, H, W]
    source_col = torch.where((choice & 2) != 0, w - 1 - q, q)
    inside = (i < h) & (j < w)
    source = torch.where(inside, source_row * cols + source_col, i * cols + j)
    out = grids.reshape(b, f, rows * cols).gather(2, source.reshape(b, f, rows * cols))
    return out.reshape(grids.shape)


class WindowAugment:
    """The ``[data] augment`` transforms of one data file's training windows.

    ``draw`` takes the batch's random numbers from the sampler's generator (right after the
    windows are drawn); ``apply`` transforms a batch's ``context_obs`` [B, Wc, H, W] and
    ``target_obs`` [B, H, W] together.
    """

    def __init__(self, names: tuple[str, ...], info: EnvInfo, obs_shape: tuple[int, ...]):
        self.names = tuple(names)
        self.pad_value = info.pad_value
        self.movable: torch.Tensor | None = None
        self.size = 0
        if "colours" in self.names:
            background = 0 if info.background_value is None else info.background_value
            fixed = {background} | ({self.pad_value} if self.pad_value is not None else set())
            self.size = max(int(info.cell_values), *(v + 1 for v in fixed))
            values = [v for v in range(int(info.cell_values)) if v not in fixed]
            self.movable = torch.tensor(values, dtype=torch.int64)  # [M]
        self.dihedral = "dihedral" in self.names
        self.obs_shape = tuple(obs_shape)

    def draw(self, batch_size: int, generator: torch.Generator) -> AugmentDraw:
        """This batch's random choices, on the generator's device."""
        device = generator.device
        keys = choice = None
        if self.movable is not None:
            keys = torch.rand((batch_size, len(self.movable)), generator=generator, device=device)
        if self.dihedral:
            choice = torch.randint(8, (batch_size,), generator=generator, device=device)
        return AugmentDraw(keys=keys, dihedral=choice)

    def apply(self, batch: Any, draw: AugmentDraw) -> Any:
        """``batch`` (a ``sampler.Batch``) with its context and target grids transformed."""
        context, target = batch.context_obs, batch.target_obs  # [B, Wc, H, W], [B, H, W]
        grids = torch.cat([context, target[:, None]], dim=1)  # [B, F, H, W]
        if draw.keys is not None:
            keys = draw.keys.to(grids.device, non_blocking=True)
            grids = permute_values(grids, value_table(keys, self.movable, self.size))
        if draw.dihedral is not None:
            choice = draw.dihedral.to(grids.device, non_blocking=True)
            grids = dihedral(grids, choice, self.pad_value)
        return attrs.evolve(batch, context_obs=grids[:, :-1], target_obs=grids[:, -1])


def window_augment(names: tuple[str, ...], data: Any) -> WindowAugment | None:
    """The ``WindowAugment`` of ``[data] augment`` = ``names`` on ``data`` (a
    ``TrajectoryData``), None when ``names`` is empty. Raises ``RecipeError`` naming
    ``data.augment`` when the file's observations cannot take it: not integer grids with the
    env's ``cell_values`` (both), not ``[H, W]`` (dihedral), raw states or actions of more than
    one value beside the grids (augmentation would not transform them consistently)."""
    if not names:
        return None
    info = EnvInfo.from_metadata((getattr(data, "attrs", None) or {}).get("env_metadata"))
    where = f"data.augment: {list(names)} on {data.path}"
    kind = str(data.obs_dtype)
    if not (kind.startswith("int") or kind.startswith("uint")) or not info.is_grid:
        raise RecipeError(
            f"{where}: expected integer grid observations (the env's metadata publishes "
            f"cell_values), got {kind} observations"
            + ("" if info.is_grid else " without cell_values")
        )
    if "dihedral" in names and len(data.obs_shape) != 2:
        raise RecipeError(
            f"{where}: 'dihedral' expected [H, W] grid observations, got shape "
            f"{list(data.obs_shape)}"
        )
    if data.state_shape is not None:
        raise RecipeError(
            f"{where}: the file has /states, which augmentation cannot transform with the grids"
        )
    actions = file_actions(data)
    if actions is not None and actions.numel() and bool((actions != actions.flatten()[0]).any()):
        raise RecipeError(
            f"{where}: the file's /actions take more than one value; augmentation transforms "
            "the grids, not the actions"
        )
    return WindowAugment(tuple(names), info, data.obs_shape)
