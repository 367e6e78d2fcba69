"""The ``object`` encoder: ARC grids as sets of objects.

Shape legend: ``B`` batch, ``H x W`` grid (30 x 30 in ARC), ``n = H * W`` cells, ``K`` objects
in the whole batch, ``M`` max_objects (tokens per grid), ``F`` object features, ``S``
shape_size, ``D`` latent_dim.

An object is a connected component of cells of one colour (4-connectivity; pad cells are
never objects). Cell values ``V`` and the pad value come from the env's metadata
(``spec.env.cell_values`` / ``pad_value``; ARC: 11 values, 0..9 colours and 10 the pad): a
"colour" is any value but the pad. The pipeline, all batched torch operations (no per-grid
Python loop):

1. ``connected_components`` (``connected_components.py``): star hooking and pointer jumping
   over the grid's same-colour 4-neighbour links, a fixed schedule of rounds that provably
   suffices (no convergence check: no host sync). Each object's label is the raster index of
   its first cell.
2. ``extract_objects``: every cell index is a potential object slot of its grid ``[B, n]``;
   scatter reductions give size (> 0 exactly at the labels in use), bounding box and centroid;
   a sort of the slots keeps the ``M`` largest objects; a ``S x S`` nearest-neighbour resample
   of the bounding box gives a shape descriptor. Tokens ``[B, M, F]`` with a padding mask, fixed
   shapes throughout (no ``nonzero`` / ``unique``: no host sync).
3. ``ObjectEncoder``: a grid token (colour histogram, grid extent, object count) plus the
   object tokens -> transformer -> grid token (or mean) -> Linear -> ``[B, D]``; or, with
   ``readout = "colour_slots"``, one slot of ``D / C`` values per colour (``C = cell_values - 1``
   colours, the pad excluded): the largest object of that colour, through a shared Linear, or a
   learned "absent" vector when the grid has none (``colour_slots``). A slot keeps its object
   from frame to frame (colours do not change unless a recolour rule is on), so the latent
   carries each object's position where a pooled vector mixes them.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from lejepa_core import Encoder
from lejepa_core.params import non_negative, one_of, param, positive
from lejepa_plugins.connected_components import connected_components
from lejepa_plugins.layers import (
    TransformerEncoder,
    TransformerParams,
    grid_values,
    is_integer_dtype,
    masked_mean,
)

# ----------------------------------------------------------------------------- object tokens


def object_feature_dim(shape_size: int, cell_values: int) -> int:
    """F: colour one-hot (``cell_values - 1``: every value but the pad; ARC 10), size (2),
    bounding box (4), bbox extent (2), centroid (2), shape (S*S)."""
    return (cell_values - 1) + 2 + 4 + 2 + 2 + shape_size * shape_size


class ObjectTokens(NamedTuple):
    """features: [B, M, F] (zeros at padding); padding_mask: [B, M] bool, True where no object;
    num_objects: [B] objects found per grid before the cap at M; labels: [B, H, W] from
    ``connected_components``. A NamedTuple: dynamo traces it (a frozen attrs class breaks the
    graph)."""

    features: torch.Tensor
    padding_mask: torch.Tensor
    num_objects: torch.Tensor
    labels: torch.Tensor


def extract_objects(
    grid: torch.Tensor,
    *,
    cell_values: int,
    pad_value: int,
    max_objects: int,
    shape_size: int = 3,
    include_background: bool = False,
) -> ObjectTokens:
    """Grids ``[B, H, W]`` of values ``0..cell_values-1`` -> the ``max_objects`` largest objects
    of each grid as feature rows (cells equal to ``pad_value``, and to 0 unless
    ``include_background``, are never objects).

    Features of one object (positions normalised by H and W; ``[r0, r1] x [c0, c1]`` its
    inclusive bounding box): one-hot colour (the ``cell_values - 1`` values but the pad, in
    order); ``size / n`` and ``log1p(size) / log1p(n)``;
    ``r0 / H, c0 / W, (r1 + 1) / H, (c1 + 1) / W``; bbox height / H and width / W; centroid
    ``(mean row + 0.5) / H`` and column likewise; ``S x S`` binary shape mask (the bounding
    box resampled by nearest neighbour, raster order). Ties in size keep raster order.
    """
    batch, height, width = grid.shape
    n = height * width
    device = grid.device
    ignore = (pad_value,) if include_background else (pad_value, 0)
    labels = connected_components(grid, ignore)  # [B, H, W]

    # every cell index is a potential object of its grid: statistics over [B, n] slots, fixed
    # shapes (no nonzero / unique / bincount: no host sync); slot n collects the non-objects
    flat = labels.reshape(batch, n)  # [B, n]
    slot = torch.where(flat >= 0, flat, n)  # [B, n]
    cell = torch.arange(n, device=device)  # [n]
    cell_row = (cell // width).expand(batch, n)
    cell_col = (cell % width).expand(batch, n)

    def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
        out = torch.zeros(batch, n + 1, dtype=torch.long, device=device)
        return out.scatter_reduce(1, slot, values, how, include_self=False)[:, :n]  # [B, n]

    size = reduce(torch.ones_like(slot), "sum")  # [B, n]; > 0 exactly at each object's label
    is_object = size > 0
    num_objects = is_object.sum(dim=1)  # [B]
    # the M largest objects of each grid, ties in raster order (the label); non-objects last
    rank_key = torch.where(is_object, (n - size) * n + cell, 2 * n * n + cell)  # [B, n]
    keep = min(max_objects, n)
    label = torch.argsort(rank_key, dim=1)[:, :keep]  # [B, M'] labels of the kept objects

    def kept(values: torch.Tensor) -> torch.Tensor:
        return values.gather(1, label)  # [B, n] -> [B, M']

    valid = kept(is_object)  # [B, M']
    size_kept = kept(size)
    r0, r1 = kept(reduce(cell_row, "amin")), kept(reduce(cell_row, "amax"))
    c0, c1 = kept(reduce(cell_col, "amin")), kept(reduce(cell_col, "amax"))
    box_h, box_w = r1 - r0 + 1, c1 - c0 + 1
    count = size_kept.clamp(min=1).float()
    mean_row = kept(reduce(cell_row, "sum")).float() / count
    mean_col = kept(reduce(cell_col, "sum")).float() / count
    colour = grid.reshape(batch, n).long().gather(1, label)  # [B, M'] colour of the first cell
    colour = torch.where(valid, colour, 0 if pad_value != 0 else 1)  # any value but the pad

    # shape: sample S x S points of the bounding box, 1 where the cell belongs to the object
    steps = 2 * torch.arange(shape_size, device=device) + 1  # [S]
    sample_r = r0[..., None] + (steps * box_h[..., None]) // (2 * shape_size)  # [B, M', S]
    sample_c = c0[..., None] + (steps * box_w[..., None]) // (2 * shape_size)  # [B, M', S]
    sample = sample_r[..., :, None] * width + sample_c[..., None, :]  # [B, M', S, S]
    sampled = flat.gather(1, sample.reshape(batch, -1)).view(sample.shape)
    shape = (sampled == label[..., None, None]).float().flatten(2)  # [B, M', S*S]

    features = torch.cat(
        [
            colour_one_hot(colour, cell_values, pad_value),
            (size_kept.float() / n)[..., None],
            (torch.log1p(size_kept.float()) / math.log1p(n))[..., None],
            torch.stack(
                [r0 / height, c0 / width, (r1 + 1) / height, (c1 + 1) / width], dim=-1
            ).float(),
            torch.stack([box_h / height, box_w / width], dim=-1).float(),
            torch.stack([(mean_row + 0.5) / height, (mean_col + 0.5) / width], dim=-1),
            shape,
        ],
        dim=-1,
    )  # [B, M', F]
    features = features * valid[..., None]  # zeros at padding
    padding = ~valid
    if keep < max_objects:  # more tokens than cells
        features = F.pad(features, (0, 0, 0, max_objects - keep))
        padding = F.pad(padding, (0, max_objects - keep), value=True)
    return ObjectTokens(
        features=features,
        padding_mask=padding,
        num_objects=num_objects,
        labels=labels,
    )


def colour_one_hot(colour: torch.Tensor, cell_values: int, pad_value: int) -> torch.Tensor:
    """Object colours ``[...]`` (never the pad) -> ``[..., cell_values - 1]``: the one-hot of every
    value but ``pad_value`` (ARC, pad 10: exactly ``one_hot(colour, 10)``)."""
    keep = [v for v in range(cell_values) if v != pad_value]
    return F.one_hot(colour, cell_values).float()[..., keep]


def grid_features(
    grid: torch.Tensor,
    num_objects: torch.Tensor,
    max_objects: int,
    *,
    cell_values: int,
    pad_value: int,
) -> torch.Tensor:
    """Whole-grid features ``[B, V + 3]`` (ARC: 14): histogram of the ``V = cell_values``
    values (fractions of H*W), rows and columns inside the grid (not ``pad_value``; fractions
    of H, W), ``min(num_objects / M, 1)``."""
    values = grid.long().flatten(1)  # [B, n]
    histogram = F.one_hot(values, cell_values).float().mean(dim=1)  # [B, V]
    inside = grid != pad_value  # [B, H, W]
    rows = inside.any(dim=2).float().mean(dim=1, keepdim=True)  # [B, 1]
    cols = inside.any(dim=1).float().mean(dim=1, keepdim=True)  # [B, 1]
    count = (num_objects.float() / max_objects).clamp(max=1.0)[:, None]  # [B, 1]
    return torch.cat([histogram, rows, cols, count], dim=1)


def colour_slots(tokens: torch.Tensor, colours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-colour slots: the token of the first (largest) object of each colour.

    tokens: [B, M, E] object tokens in size order; colours: [B, M, C] one-hot colour of each
    object (all zero at padding) -> (slots [B, C, E], present [B, C] bool). A colour without
    an object gets a zero slot and ``present`` False.
    """
    first = colours * (colours.cumsum(dim=1) == 1)  # [B, M, C]: 1 at each colour's first object
    slots = torch.einsum("bmc,bme->bce", first, tokens)  # [B, C, E]
    return slots, first.sum(dim=1) > 0


def centroid_column(cell_values: int) -> int:
    """Index of the centroid's row in ``extract_objects``' features (its column follows)."""
    return (cell_values - 1) + 2 + 4 + 2


def position_features(position: torch.Tensor, frequencies: int) -> torch.Tensor:
    """position: [..., 2] in [0, 1] -> [..., 4 F]: ``sin, cos(2^i pi p)`` for ``i < F``, both
    coordinates."""
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=position.device)  # [F]
    angles = (position[..., None] * scales).flatten(-2)  # [..., 2 F]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_feature_dim(cell_values: int) -> int:
    """Width of ``grid_features``: the histogram (``cell_values``), rows, columns, count."""
    return cell_values + 3


# ---------------------------------------------------------------------------------- encoder


class ObjectEncoder(Encoder):
    """Object-centric ARC encoder: same-colour connected components as tokens -> transformer -> pooled. [B, H, W] int -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params(TransformerParams):
        max_objects: int = param(64, "object tokens per grid; the largest are kept", positive)
        shape_size: int = param(
            3, "side S of the S x S shape mask of each object's bounding box", positive
        )
        include_background: bool = param(False, "make objects of colour 0 (ARC's background) too")
        pooling: Literal["grid_token", "mean"] = param(
            "grid_token",
            "read out the grid token, or the mean over the grid token and the objects",
            one_of(("grid_token", "mean")),
        )
        position_frequencies: int = param(
            0,
            "append sin and cos of 2^i * pi * centroid (row and column, i < this) to each "
            "object's features: positions as many features, not two numbers among many",
            non_negative,
        )
        readout: Literal["pooled", "colour_slots"] = param(
            "pooled",
            "pooled: one vector per grid (pooling -> Linear -> D); colour_slots: D / C values "
            "per colour (C = cell_values - 1), each the largest object of that colour (latent_dim "
            "must be a multiple of C)",
            one_of(("pooled", "colour_slots")),
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        if len(spec.obs_shape) != 2 or not is_integer_dtype(spec.obs_dtype):
            raise ValueError(
                "object encoder: expected integer grids [H, W], got obs_shape "
                f"{tuple(spec.obs_shape)} with obs_dtype {spec.obs_dtype!r}"
            )
        # plain ints, not buffers: checkpoints hold only the parameters below
        self.cell_values, self.pad_value = grid_values(spec, "object encoder")
        width = object_feature_dim(params.shape_size, self.cell_values)
        self.embed_object = nn.Linear(width + 4 * params.position_frequencies, params.dim)
        self.embed_grid = nn.Linear(grid_feature_dim(self.cell_values), params.dim)
        self.grid_token = nn.Parameter(torch.randn(1, 1, params.dim) * 0.02)  # [1, 1, dim]
        self.transformer = TransformerEncoder.from_params(params)
        if params.readout == "colour_slots":
            colours = self.cell_values - 1
            if spec.latent_dim % colours:
                raise ValueError(
                    f"object encoder: readout 'colour_slots' needs latent_dim a multiple of "
                    f"{colours} (cell_values - 1 colours), got latent_dim {spec.latent_dim}"
                )
            slot_dim = spec.latent_dim // colours
            self.head = nn.Linear(params.dim, slot_dim)
            self.absent = nn.Parameter(torch.randn(colours, slot_dim) * 0.02)  # [C, D / C]
        else:
            self.head = nn.Linear(params.dim, spec.latent_dim)

    def tokenize(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grids ``[B, H, W]`` -> object features ``[B, M, F]``, padding mask ``[B, M]`` and grid
        features ``[B, V + 3]``, without gradient (tokenisation is discrete). Fixed shapes and a
        fixed schedule (no data-dependent step): a compiled ``forward`` traces it whole."""
        p = self.params
        with torch.no_grad():
            objects = extract_objects(
                obs,
                cell_values=self.cell_values,
                pad_value=self.pad_value,
                max_objects=p.max_objects,
                shape_size=p.shape_size,
                include_background=p.include_background,
            )
            global_features = grid_features(
                obs,
                objects.num_objects,
                p.max_objects,
                cell_values=self.cell_values,
                pad_value=self.pad_value,
            )  # [B, V + 3]
        features = objects.features
        if p.position_frequencies:
            start = centroid_column(self.cell_values)
            centroid = features[..., start : start + 2]  # [B, M, 2] in (0, 1)
            fourier = position_features(centroid, p.position_frequencies)  # [B, M, 4 F]
            features = torch.cat([features, fourier * (~objects.padding_mask)[..., None]], -1)
        return features, objects.padding_mask, global_features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        p = self.params
        object_features, padding_mask, global_features = self.tokenize(obs)
        grid = self.grid_token + self.embed_grid(global_features).unsqueeze(1)  # [B, 1, dim]
        x = torch.cat([grid, self.embed_object(object_features)], dim=1)  # [B, 1 + M, dim]
        # [B, 1 + M]; the grid token is never padding
        mask = F.pad(padding_mask, (1, 0), value=False)
        x = self.transformer(x, mask)  # [B, 1 + M, dim]
        if p.readout == "colour_slots":
            colours = object_features[..., : self.cell_values - 1]  # [B, M, C] one-hot
            slots, present = colour_slots(x[:, 1:], colours)  # [B, C, dim], [B, C]
            slots = torch.where(present[..., None], self.head(slots), self.absent)
            return slots.flatten(1)  # [B, C * D / C]
        pooled = x[:, 0] if p.pooling == "grid_token" else masked_mean(x, mask)  # [B, dim]
        return self.head(pooled)  # [B, D]
