"""Spatial latents of integer grids: the ``cells`` encoder and the ``transport`` predictor.

Shape legend: ``B`` batch, ``W`` context frames, ``H x W_`` observation grid, ``R x Q`` the
latent grid (``spec.latent_grid``: rows, cols), ``C`` features per location
(``spec.latent_channels``), ``P`` ``spec.latent_patch``, ``V`` cell values, ``n`` offsets
``(2 * radius + 1) ** 2``, ``G`` quantizer windows.

A *grid latent* is ``z: [B, D]`` with ``D = R * Q * C``, viewed as ``[B, R, Q, C]`` (row-major,
channels last); location ``(r, c)`` covers the observation cells ``[r*P:(r+1)*P, c*P:(c+1)*P]``
counted from the top-left, so a latent smaller than the observation ignores the bottom-right
margin (ARC's procedural 16 x 16 grids inside 30 x 30: ``latent_grid = [16, 16]``).

``cells``      one-hot cell values -> a linear embedding per location plus a convolutional
               branch (3 x 3 neighbourhoods) that starts at zero: the untrained latent is an
               invertible linear code of the cells when ``C >= V * P * P``.
``transport``  a convolutional trunk over the W context frames, conditioned on k (FiLM),
               predicts for every location a distribution over the last frame's locations
               within ``radius`` and moves their features (a soft warp: rigid motion is a copy,
               not a regression), plus a residual correction (new colours, appearing cells).
               ``mode = "splat"`` turns the warp around: every location of the last frame
               sends its features by its own predicted motion (softmax splatting, Niklaus &
               Liu 2020), so a cell's move is read where the cell is. Starts as copy-last.

``latent_windows`` cuts a grid latent into ``window x window`` blocks of locations, the
vectors the quantizers code one by one (``window`` parameter of ``vq``, ``gumbel``, ``fsq``).
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from lejepa_core import Encoder, Predictor, hookimpl
from lejepa_core.params import each, one_of, param, positive
from lejepa_plugins.layers import (
    ACTIVATIONS,
    TIME_EMBEDDINGS,
    TimeEmbedding,
    activation_module,
    grid_values,
    one_hot_colours,
)
from lejepa_plugins.predictors import check_context


def latent_grid(spec, component: str) -> tuple[int, int, int]:
    """``(R, Q, C)`` of a grid latent; ValueError naming ``model.latent_grid`` otherwise."""
    if len(spec.latent_grid) != 2:
        raise ValueError(
            f"{component} needs a grid latent: set model.latent_grid = [rows, cols] "
            f"(latent_dim = rows * cols * channels), got latent_grid = {list(spec.latent_grid)}"
        )
    rows, cols = spec.latent_grid
    return rows, cols, spec.latent_channels


def latent_windows(z: torch.Tensor, spec, window: int) -> torch.Tensor:
    """``z: [..., D]`` grid latents -> ``[..., G, window * window * C]``, ``G`` blocks of
    ``window x window`` locations in raster order (each block's locations row-major)."""
    rows, cols, channels = latent_grid(spec, "a quantizer window")
    leading = z.shape[:-1]
    x = z.reshape(-1, rows // window, window, cols // window, window, channels)
    x = x.permute(0, 1, 3, 2, 4, 5)  # [N, R/w, Q/w, w, w, C]
    return x.reshape(*leading, (rows // window) * (cols // window), window * window * channels)


def from_windows(x: torch.Tensor, spec, window: int) -> torch.Tensor:
    """The inverse of ``latent_windows``: ``[..., G, w*w*C] -> [..., D]``."""
    rows, cols, channels = latent_grid(spec, "a quantizer window")
    leading = x.shape[:-2]
    x = x.reshape(-1, rows // window, cols // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(*leading, rows * cols * channels)


def window_dim(spec, window: int, component: str) -> int:
    """The length of one quantized vector: ``latent_dim`` (window 0) or ``w * w * C``; checks
    that ``window`` divides the latent grid."""
    if window == 0:
        return spec.latent_dim
    rows, cols, channels = latent_grid(spec, f"{component} with window = {window}")
    if rows % window or cols % window:
        raise ValueError(f"window: expected a divisor of latent_grid {rows} x {cols}, got {window}")
    return window * window * channels


# ------------------------------------------------------------------------------------ cells


class CellsEncoder(Encoder):
    """Integer grid -> per-location features: linear embedding of each patch's one-hot cells +
    a zero-initialised convolutional branch. ``[B, H, W_] -> [B, R * Q * C]``."""

    @attrs.frozen(kw_only=True)
    class Params:
        width: int = param(48, "channels of the convolutional branch", positive)
        depth: int = param(
            2, "3 x 3 convolutions of the branch (receptive field 2 * depth + 1)", positive
        )
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "activation after each convolution", one_of(ACTIVATIONS)
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.rows, self.cols, channels = latent_grid(spec, "cells encoder")
        self.cell_values, _ = grid_values(spec, "cells encoder")
        patch = spec.latent_patch
        height, width = spec.obs_shape
        if self.rows * patch > height or self.cols * patch > width:
            raise ValueError(
                f"cells encoder: latent_grid {self.rows} x {self.cols} with latent_patch {patch} "
                f"covers {self.rows * patch} x {self.cols * patch} cells; expected at most the "
                f"observation's {height} x {width}"
            )
        v = self.cell_values
        self.embed = nn.Conv2d(v * patch * patch, channels, 1)  # linear code of a patch
        layers: list[nn.Module] = []
        for i in range(params.depth):
            layers += [
                nn.Conv2d(v if i == 0 else params.width, params.width, 3, padding=1),
                activation_module(params.activation),
            ]
        self.branch = nn.Sequential(*layers)
        self.branch_out = nn.Conv2d(params.width * patch * patch, channels, 1)
        nn.init.zeros_(self.branch_out.weight)
        nn.init.zeros_(self.branch_out.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        patch = self.spec.latent_patch
        grid = obs[:, : self.rows * patch, : self.cols * patch]
        x = one_hot_colours(grid, self.cell_values).permute(0, 3, 1, 2)  # [B, V, R*P, Q*P]
        h = self.branch(x)  # [B, width, R*P, Q*P]
        if patch > 1:
            x, h = F.pixel_unshuffle(x, patch), F.pixel_unshuffle(h, patch)
        z = self.embed(x) + self.branch_out(h)  # [B, C, R, Q]
        return z.permute(0, 2, 3, 1).flatten(1)  # [B, R*Q*C]


# -------------------------------------------------------------------------------- transport


class FiLMBlock(nn.Module):
    """GroupNorm, FiLM from the horizon embedding, two convolutions, skip. [B, h, R, Q]."""

    def __init__(self, width: int, dilation: int, time_dim: int, activation: str):
        super().__init__()
        self.norm = nn.GroupNorm(8 if width % 8 == 0 else 1, width)
        self.film = nn.Linear(time_dim, 2 * width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = activation_module(activation)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(t)[:, :, None, None].chunk(2, dim=1)  # [B, h, 1, 1] each
        y = self.norm(x) * (1 + scale) + shift
        return x + self.conv2(self.act(self.conv1(self.act(y))))


class TransportPredictor(Predictor):
    """Soft warp of the last frame's grid latent by per-location offset weights + a residual.
    ``[B, W, D], [B] -> [B, D]``; starts as copy-last."""

    @attrs.frozen(kw_only=True)
    class Params:
        width: int = param(64, "channels of the convolutional trunk", positive)
        depth: int = param(4, "FiLM residual blocks of the trunk", positive)
        dilations: tuple[int, ...] = param(
            (1, 2), "dilation of each block's first convolution, cycled", each(positive)
        )
        radius: int = param(
            4, "largest move in locations per axis: offsets in [-radius, radius]^2", positive
        )
        residual: bool = param(True, "add a correction to the warped features (starts at 0)")
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "activation of the trunk", one_of(ACTIVATIONS)
        )
        time_embedding: Literal["linear", "sinusoidal"] = param(
            "sinusoidal", "horizon embedding", one_of(TIME_EMBEDDINGS)
        )
        time_dim: int = param(16, "width of the horizon embedding", positive)
        copy_bias: float = param(
            3.0,
            "initial logit of offset 0 above log(n - 1): the untrained warp copies "
            "e^b / (1 + e^b) of the last frame (3.0: 95 %)",
        )
        mode: Literal["gather", "splat"] = param(
            "gather",
            "gather: every location draws from the last frame's locations within radius; "
            "splat: every location of the last frame sends its features to the locations "
            "within radius (its own motion: k x velocity), arrivals mixed by a learned "
            "importance (softmax splatting)",
            one_of(("gather", "splat")),
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.rows, self.cols, self.channels = latent_grid(spec, "transport predictor")
        frames, width = spec.context_frames, params.width
        self.embed_k = TimeEmbedding(params.time_embedding, params.time_dim, spec.max_horizon)
        self.stem = nn.Conv2d(frames * self.channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            FiLMBlock(
                width,
                params.dilations[i % len(params.dilations)],
                params.time_dim,
                params.activation,
            )
            for i in range(params.depth)
        )
        self.offsets = (2 * params.radius + 1) ** 2
        self.logits = nn.Conv2d(width, self.offsets, 1)
        nn.init.zeros_(self.logits.weight)
        with torch.no_grad():
            self.logits.bias.zero_()
            self.logits.bias[self.offsets // 2] = math.log(self.offsets - 1) + params.copy_bias
        self.correction = nn.Conv2d(width, self.channels, 1) if params.residual else None
        if self.correction is not None:
            nn.init.zeros_(self.correction.weight)
            nn.init.zeros_(self.correction.bias)
        if params.mode == "splat":
            # importance of a source where arrivals meet, and the features of a location
            # that nothing reaches (a cell an object left); both start at zero
            self.importance = nn.Conv2d(width, 1, 1)
            self.fill = nn.Conv2d(width, self.channels, 1)
            for layer in (self.importance, self.fill):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, z_context: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        check_context(z_context, k, self.spec.context_frames, self.spec.latent_dim)
        b, frames = z_context.shape[:2]
        r, q, c = self.rows, self.cols, self.channels
        maps = z_context.reshape(b, frames, r, q, c).permute(0, 1, 4, 2, 3)  # [B, W, C, R, Q]
        x = self.stem(maps.reshape(b, frames * c, r, q))  # [B, width, R, Q]
        t = self.embed_k(k)
        for block in self.blocks:
            x = block(x, t)
        weights = self.logits(x).softmax(dim=1)  # [B, n, R, Q]
        last = maps[:, -1]  # [B, C, R, Q]
        if self.params.mode == "splat":
            out = self._splat(last, weights, x)
        else:
            out = self._gather(last, weights)
        if self.correction is not None:
            out = out + self.correction(x)
        return out.permute(0, 2, 3, 1).reshape(b, -1)  # [B, R*Q*C]

    def _gather(self, last: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Location t takes sum_o weights[o, t] * last[t + o]. [B, C, R, Q], [B, n, R, Q]."""
        b, c, r, q = last.shape
        radius = self.params.radius
        sources = F.unfold(last, 2 * radius + 1, padding=radius)  # [B, C * n, R * Q]
        sources = sources.view(b, c, self.offsets, r, q)
        return (sources * weights[:, None]).sum(dim=2)  # [B, C, R, Q]

    def _splat(self, last: torch.Tensor, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Location s sends weights[o, s] of last[s] to s + o (F.fold, unfold's transpose);
        each arrival counts e^importance[s], a target is the weighted mean of its arrivals,
        and a target with (almost) none falls back to ``fill``. [B, C, R, Q], [B, n, R, Q],
        trunk [B, width, R, Q] -> [B, C, R, Q]."""
        b, c, r, q = last.shape
        size, radius = 2 * self.params.radius + 1, self.params.radius
        importance = 4.0 * torch.tanh(self.importance(x) / 4.0)  # [B, 1, R, Q], in (-4, 4)
        mass = weights * importance.exp()  # [B, n, R, Q]
        sent = (last[:, :, None] * mass[:, None]).reshape(b, c * self.offsets, r * q)
        received = F.fold(sent, (r, q), size, padding=radius)  # [B, C, R, Q]
        total = F.fold(mass.reshape(b, self.offsets, r * q), (r, q), size, padding=radius)
        floor = 0.05  # below 5 % of a source's features a target becomes fill, smoothly
        missing = (floor - total).clamp_min(0.0)
        return (received + missing * self.fill(x)) / total.clamp_min(floor)


@hookimpl
def register_encoders(register):
    register("cells", CellsEncoder)


@hookimpl
def register_predictors(register):
    register("transport", TransportPredictor)
