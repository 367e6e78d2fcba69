"""Built-in maskers: ``feature`` (hide named feature groups), ``block`` (I-JEPA multi-block), ``none``.

Shape legend: ``B`` batch (``B*W`` when the trainer flattens context frames), ``N`` objects,
``F`` features (last observation axis), ``H, W`` grid height and width.

A masker maps ``obs: [B, *obs_shape]`` and a ``torch.Generator`` (or None: the global RNG) to
``(masked_obs, mask)``: ``masked_obs`` has the shape and dtype of ``obs``; ``mask`` is bool, True
where hidden, with the dimensions of ``obs`` and size 1 along the axes it does not vary over
(broadcastable to ``obs``). Every random number comes from ``generator``: the same generator
state gives the same masks.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from torch import nn

from lejepa_core import Masker, NoParams, hookimpl
from lejepa_core.params import in_range, one_of, param, positive

MODES = ("coordinates", "velocities", "pair", "single", "all", "none")
"""Feature-masking modes, in the order of ``FeatureMasker.sample_modes``'s indices."""


def _range_pair(low: float, high: float):
    """Validator of a ``(min, max)`` tuple with low <= min <= max <= high."""

    def check(instance, attribute, value) -> None:
        if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
            raise ValueError(
                f"{attribute.name}: expected (min, max) with {low} <= min <= max <= {high}, got {tuple(value)!r}"
            )

    return check


def _is_float_dtype(name: str) -> bool:
    return getattr(torch, name, None) is not None and getattr(torch, name).is_floating_point


def _check_fill(fill_value: float, obs_dtype: str) -> None:
    """An integer observation dtype needs an integral fill value inside its range."""
    if _is_float_dtype(obs_dtype):
        return
    info = torch.iinfo(getattr(torch, obs_dtype))
    if fill_value != int(fill_value) or not info.min <= fill_value <= info.max:
        raise ValueError(
            f"fill_value: observations are {obs_dtype}, expected an integer in [{info.min}, {info.max}], got {fill_value!r}"
        )


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


class FeatureMasker(Masker):
    """Hide feature groups of the last obs axis per sample: x/y, vx/vy, a random pair, one, or all."""

    @attrs.frozen(kw_only=True)
    class Params:
        p_coordinates: float = param(
            0.2, "probability of hiding the coordinate features", in_range(0.0, 1.0)
        )
        p_velocities: float = param(
            0.2, "probability of hiding the velocity features", in_range(0.0, 1.0)
        )
        p_pair: float = param(
            0.1, "probability of hiding a random pair of features", in_range(0.0, 1.0)
        )
        p_single: float = param(0.1, "probability of hiding one random feature", in_range(0.0, 1.0))
        p_all: float = param(0.0, "probability of hiding every feature", in_range(0.0, 1.0))
        coordinate_names: tuple[str, ...] = param(
            ("x", "y"), "feature names hidden by the coordinates mode"
        )
        velocity_names: tuple[str, ...] = param(
            ("vx", "vy"), "feature names hidden by the velocities mode"
        )
        mask_token: Literal["constant", "learned"] = param(
            "constant",
            "hidden value: 'constant' (fill_value) or 'learned' (a trained vector [F], starting at fill_value)",
            one_of(("constant", "learned")),
        )
        fill_value: float = param(
            0.0, "value written into hidden features (initial value of a learned token)"
        )
        per_object: bool = param(
            False,
            "for obs [B, N, F]: draw the mode per object instead of once per sample for all objects",
        )

        def __attrs_post_init__(self) -> None:
            total = (
                self.p_coordinates + self.p_velocities + self.p_pair + self.p_single + self.p_all
            )
            if total > 1.0 + 1e-9:
                raise ValueError(
                    f"p_coordinates + p_velocities + p_pair + p_single + p_all must be <= 1, got {total:g} "
                    f"({self.p_coordinates}, {self.p_velocities}, {self.p_pair}, {self.p_single}, {self.p_all})"
                )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        if len(spec.obs_shape) == 0:
            raise ValueError("feature masker: observations need a feature axis, got obs_shape ()")
        num_features = spec.obs_shape[-1]
        names = tuple(spec.feature_names)
        if names and len(names) != num_features:
            raise ValueError(
                f"feature masker: {len(names)} feature_names {names} for a last obs axis of size {num_features}"
            )
        self.num_features = num_features
        self.register_buffer(
            "coordinate_mask",
            self._group_mask("coordinates", params.coordinate_names, params.p_coordinates, names),
        )
        self.register_buffer(
            "velocity_mask",
            self._group_mask("velocities", params.velocity_names, params.p_velocities, names),
        )
        if params.p_pair > 0 and num_features < 2:
            raise ValueError(
                f"feature masker: p_pair = {params.p_pair} needs >= 2 features, got {num_features}"
            )
        if params.mask_token == "learned":
            if not _is_float_dtype(spec.obs_dtype):
                raise ValueError(
                    f"feature masker: mask_token 'learned' needs float observations, got {spec.obs_dtype}"
                )
            self.token = nn.Parameter(torch.full((num_features,), float(params.fill_value)))  # [F]
        else:
            _check_fill(params.fill_value, spec.obs_dtype)
            self.token = None
        probabilities = torch.tensor(
            [
                params.p_coordinates,
                params.p_velocities,
                params.p_pair,
                params.p_single,
                params.p_all,
            ],
            dtype=torch.float64,
        )
        self.register_buffer("cumulative", probabilities.cumsum(0), persistent=False)  # [5]

    def _group_mask(
        self, mode: str, group: tuple[str, ...], probability: float, names: tuple[str, ...]
    ) -> torch.Tensor:
        """[F] bool of the features named in ``group``; ValueError if used but unavailable."""
        mask = torch.zeros(self.num_features, dtype=torch.bool)
        if probability == 0:
            return mask
        missing = [name for name in group if name not in names]
        if missing or not group:
            raise ValueError(
                f"feature masker: p_{mode} = {probability} needs features {group}, "
                f"missing {tuple(missing)}; available feature_names: {names or '(none)'}"
            )
        for name in group:
            mask[names.index(name)] = True
        return mask

    def sample_modes(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a mode per unit: (modes [*shape] int64 indexing ``MODES``, mask [*shape, F] bool)."""
        u = _rand(shape, generator, device).double()
        modes = torch.searchsorted(self.cumulative.to(device), u.reshape(-1), right=True).reshape(
            shape
        )
        # rank of each feature in a random permutation: "rank < 2" is a uniform random pair
        ranks = _rand((*shape, self.num_features), generator, device).argsort(-1).argsort(-1)
        m = modes[..., None]
        mask = (
            ((m == 0) & self.coordinate_mask)
            | ((m == 1) & self.velocity_mask)
            | ((m == 2) & (ranks < 2))
            | ((m == 3) & (ranks < 1))
            | (m == 4)
        )
        return modes, mask

    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """obs: [B, ..., F] -> (masked_obs like obs, mask [B, 1.., F] or [B, ..., F] when per_object)."""
        if obs.shape[-1] != self.num_features:
            raise ValueError(
                f"feature masker: expected last obs axis {self.num_features}, got shape {tuple(obs.shape)}"
            )
        if self.params.per_object:
            units = tuple(obs.shape[:-1])
        else:
            units = (obs.shape[0],) + (1,) * (obs.dim() - 2)
        _, mask = self.sample_modes(units, generator, obs.device)
        if self.token is not None:
            hidden = self.token.to(obs.dtype)
        else:
            hidden = obs.new_full((), self.params.fill_value)  # a fill: no host copy
        return torch.where(mask, hidden, obs), mask


class BlockMasker(Masker):
    """I-JEPA-style multi-block masking: hide random rectangles of the last two obs axes (H, W)."""

    @attrs.frozen(kw_only=True)
    class Params:
        num_blocks: int = param(4, "rectangles per sample (they may overlap)", positive)
        block_scale: tuple[float, ...] = param(
            (0.15, 0.2), "(min, max) area of one block as a fraction of H*W", _range_pair(0.0, 1.0)
        )
        aspect_ratio: tuple[float, ...] = param(
            (0.75, 1.5),
            "(min, max) height/width ratio of a block (drawn log-uniformly)",
            _range_pair(1e-3, 1e3),
        )
        fill_value: float = param(
            0.0,
            "value written into hidden cells (integer grids: an integer; 0 by default, not the pad value)",
        )

        def __attrs_post_init__(self) -> None:
            if self.block_scale[0] <= 0:
                raise ValueError(
                    f"block_scale: expected a positive minimum, got {tuple(self.block_scale)!r}"
                )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        if len(spec.obs_shape) < 2:
            raise ValueError(
                f"block masker: needs observations with >= 2 axes (.., H, W), got obs_shape {spec.obs_shape}"
            )
        _check_fill(params.fill_value, spec.obs_dtype)
        self.height, self.width = spec.obs_shape[-2:]

    def sample_blocks(self, batch: int, generator: torch.Generator | None, device) -> torch.Tensor:
        """[batch, num_blocks, 4] int64 rectangles (top, left, height, width), inside the grid."""
        H, W = self.height, self.width
        u = _rand((batch, self.params.num_blocks, 4), generator, device)
        (s_lo, s_hi), (a_lo, a_hi) = self.params.block_scale, self.params.aspect_ratio
        area = (s_lo + u[..., 0] * (s_hi - s_lo)) * H * W
        log_lo, log_hi = math.log(a_lo), math.log(a_hi)
        ratio = torch.exp(log_lo + u[..., 1] * (log_hi - log_lo))  # height / width
        h = torch.sqrt(area * ratio).round().clamp(1, H)
        w = torch.sqrt(area / ratio).round().clamp(1, W)
        top = (u[..., 2] * (H - h + 1)).floor().clamp(max=H - h)
        left = (u[..., 3] * (W - w + 1)).floor().clamp(max=W - w)
        return torch.stack([top, left, h, w], dim=-1).long()

    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """obs: [B, ..., H, W] -> (masked_obs like obs, mask [B, 1.., H, W])."""
        if tuple(obs.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"block masker: expected (.., {self.height}, {self.width}) grids, got shape {tuple(obs.shape)}"
            )
        B = obs.shape[0]
        blocks = self.sample_blocks(B, generator, obs.device)  # [B, nb, 4]
        top, left, h, w = (blocks[..., i, None] for i in range(4))  # each [B, nb, 1]
        rows = torch.arange(self.height, device=obs.device)
        cols = torch.arange(self.width, device=obs.device)
        in_rows = (rows >= top) & (rows < top + h)  # [B, nb, H]
        in_cols = (cols >= left) & (cols < left + w)  # [B, nb, W]
        mask = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)  # [B, H, W]
        mask = mask.reshape(B, *([1] * (obs.dim() - 3)), self.height, self.width)
        hidden = obs.new_full((), self.params.fill_value)  # a fill: no host copy
        return torch.where(mask, hidden, obs), mask


class NoMasker(Masker):
    """Identity: nothing hidden (mask all False)."""

    Params = NoParams

    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """obs: [B, *obs] -> (obs, mask [B, 1, ...] all False)."""
        mask = torch.zeros(
            (obs.shape[0],) + (1,) * (obs.dim() - 1), dtype=torch.bool, device=obs.device
        )
        return obs, mask


@hookimpl
def register_maskers(register):
    register("feature", FeatureMasker)
    register("block", BlockMasker)
    register("none", NoMasker)
