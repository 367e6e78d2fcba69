"""Built-in image encoders and the identity encoder: one frame (or one embedding) -> one latent.

Shape legend: ``B`` batch, ``C`` channels, ``H x W`` image, ``K`` feature maps, ``h x w`` the
last feature map, ``P`` patch_size, ``T`` tokens, ``D`` latent_dim.

=============  ======================================================================
``conv``       stem convolution -> stages of (stride-2 convolution, residual blocks) ->
               pooling (``spatial_softmax``: the expected (x, y) of each feature map;
               ``flatten``; ``mean``) -> Linear. ``[B, C, H, W]`` or ``[B, H, W]`` floats.
``vit``        P x P patch embedding -> learned positions -> pre-norm transformer -> CLS or
               mean pooling -> Linear. Same inputs as ``conv``.
``identity``   ``[B, D]`` -> ``[B, D]`` unchanged: observations that already are latents
               (embeddings computed elsewhere, docs/embeddings.md).
=============  ======================================================================

Hand-written from ``torch.nn`` (and ``layers.TransformerEncoder``): at 32 x 32 inputs these
are a few dozen lines each, and timm's models (built for 224 x 224 ImageNet) bring timm and
torchvision, which pins its own torch version (docs/components.md#image-encoders).
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from lejepa_core import Encoder, NoParams
from lejepa_core.params import non_negative, one_of, param, positive
from lejepa_plugins.layers import (
    ACTIVATIONS,
    TransformerEncoder,
    TransformerParams,
    activation_module,
    is_integer_dtype,
)


def image_channels(spec, name: str) -> tuple[int, int, int]:
    """(C, H, W) of image observations ``[C, H, W]`` or ``[H, W]`` (C = 1); ValueError naming
    the shape and dtype otherwise."""
    shape = tuple(spec.obs_shape)
    if is_integer_dtype(spec.obs_dtype) or len(shape) not in (2, 3):
        raise ValueError(
            f"{name} encoder: expected float images [C, H, W] or [H, W], got obs_shape "
            f"{shape} of {spec.obs_dtype}"
        )
    return (1, *shape) if len(shape) == 2 else shape  # type: ignore[return-value]


def as_images(obs: torch.Tensor, channels: int) -> torch.Tensor:
    """``[B, H, W]`` or ``[B, C, H, W]`` -> float ``[B, C, H, W]``."""
    x = obs.float()
    return x.unsqueeze(1) if x.dim() == 3 and channels == 1 else x


def _norm(channels: int, group_norm: bool) -> nn.Module:
    """GroupNorm with 8 groups (1 when ``channels`` is no multiple of 8), or nothing."""
    if not group_norm:
        return nn.Identity()
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class ResidualBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))``, 3 x 3, ``[B, K, h, w]`` -> same shape."""

    def __init__(self, channels: int, activation: str, group_norm: bool):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels, group_norm),
            activation_module(activation),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels, group_norm),
            activation_module(activation),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SpatialSoftmax(nn.Module):
    """``[B, K, h, w]`` -> ``[B, 2K]``: per feature map, the expected column and row coordinate
    (in [-1, 1]) under a softmax over its ``h * w`` cells with a learned temperature per map
    (Levine et al. 2016's feature points): positions that a linear map reads off. A low initial
    ``temperature`` makes the softmax peaked from the start (at 1, on normalised features, it is
    nearly uniform: every map reads the centre, latents ~0.03 in scale)."""

    def __init__(self, channels: int, height: int, width: int, temperature: float = 1.0):
        super().__init__()
        start = torch.full((channels,), math.log(temperature))
        self.log_temperature = nn.Parameter(start)  # [K]
        cols = torch.linspace(-1.0, 1.0, width).repeat(height)  # [h*w], raster order
        rows = torch.linspace(-1.0, 1.0, height).repeat_interleave(width)  # [h*w]
        self.register_buffer("grid", torch.stack([cols, rows], dim=-1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.exp(-self.log_temperature)[None, :, None]  # [1, K, 1]
        weights = torch.softmax(x.flatten(2) * scale, dim=-1)  # [B, K, h*w]
        return (weights @ self.grid).flatten(1)  # [B, K, 2] -> [B, 2K]


class ConvEncoder(Encoder):
    """Residual convolutional encoder for float images ``[B, C, H, W]`` / ``[B, H, W]`` -> ``[B, D]``."""

    @attrs.frozen(kw_only=True)
    class Params:
        channels: int = param(32, "channels of the stem; each stage doubles them", positive)
        stem_stride: int = param(
            2, "stride of the 3 x 3 stem convolution (2: the blocks work at H/2 x W/2)", positive
        )
        stages: int = param(1, "stride-2 stages after the stem (each halves H and W)", non_negative)
        blocks: int = param(1, "residual blocks per stage (and after the stem)", non_negative)
        max_channels: int = param(128, "cap on the channels of a stage", positive)
        pooling: Literal["spatial_softmax", "flatten", "mean"] = param(
            "spatial_softmax",
            "spatial_softmax: expected (x, y) of each final feature map; flatten: every cell "
            "of the last map; mean: global average (translation invariant: loses positions)",
            one_of(("spatial_softmax", "flatten", "mean")),
        )
        keypoints: int = param(
            32,
            "spatial_softmax: feature maps (a 1 x 1 convolution) whose (x, y) are read",
            positive,
        )
        temperature: float = param(
            0.05, "spatial_softmax: initial softmax temperature of every map (learned)", positive
        )
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "activation", one_of(ACTIVATIONS)
        )
        group_norm: bool = param(True, "GroupNorm inside the residual blocks and stages")

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        in_channels, height, width = image_channels(spec, "conv")
        self.in_channels = in_channels
        act, norm = params.activation, params.group_norm
        width_now = params.channels
        stride = params.stem_stride
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width_now, 3, stride, padding=1)]
        height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
        layers += [ResidualBlock(width_now, act, norm) for _ in range(params.blocks)]
        for _ in range(params.stages):
            out = min(2 * width_now, params.max_channels)
            layers += [
                _norm(width_now, norm),
                activation_module(act),
                nn.Conv2d(width_now, out, 3, stride=2, padding=1),
            ]
            layers += [ResidualBlock(out, act, norm) for _ in range(params.blocks)]
            width_now = out
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        layers += [_norm(width_now, norm), activation_module(act)]
        self.body = nn.Sequential(*layers)
        if params.pooling == "spatial_softmax":
            self.pool = nn.Sequential(
                nn.Conv2d(width_now, params.keypoints, 1),
                SpatialSoftmax(params.keypoints, height, width, params.temperature),
            )
            pooled = 2 * params.keypoints
        elif params.pooling == "flatten":
            self.pool = nn.Flatten(1)
            pooled = width_now * height * width
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            pooled = width_now
        self.head = nn.Linear(pooled, spec.latent_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.body(as_images(obs, self.in_channels))  # [B, K, h, w]
        return self.head(self.pool(x))  # [B, D]


class ViTEncoder(Encoder):
    """Vision transformer for float images ``[B, C, H, W]`` / ``[B, H, W]`` -> ``[B, D]``."""

    @attrs.frozen(kw_only=True)
    class Params(TransformerParams):
        patch_size: int = param(4, "side P of the square patches (H, W padded up)", positive)
        pooling: Literal["cls", "mean"] = param(
            "cls", "CLS token or mean over patch tokens", one_of(("cls", "mean"))
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.in_channels, height, width = image_channels(spec, "vit")
        p = params.patch_size
        self.pad = (0, -width % p, 0, -height % p)  # F.pad order: left, right, top, bottom
        num_tokens = math.ceil(height / p) * math.ceil(width / p)
        self.embed = nn.Conv2d(self.in_channels, params.dim, p, stride=p)  # patch embedding
        self.positions = nn.Parameter(torch.randn(1, num_tokens, params.dim) * 0.02)  # [1, T, dim]
        if params.pooling == "cls":
            self.cls = nn.Parameter(torch.randn(1, 1, params.dim) * 0.02)  # [1, 1, dim]
        self.transformer = TransformerEncoder.from_params(params)
        self.head = nn.Linear(params.dim, spec.latent_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = F.pad(as_images(obs, self.in_channels), self.pad)  # [B, C, H', W']
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.positions  # [B, T, dim]
        if self.params.pooling == "cls":
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            pooled = self.transformer(tokens)[:, 0]  # [B, dim]
        else:
            pooled = self.transformer(tokens).mean(dim=1)  # [B, dim]
        return self.head(pooled)  # [B, D]


class IdentityEncoder(Encoder):
    """``[B, D]`` -> ``[B, D]`` unchanged (cast to float): the observations are the latents."""

    Params = NoParams

    def __init__(self, params, spec):
        super().__init__(params, spec)
        shape = tuple(spec.obs_shape)
        if shape != (spec.latent_dim,):
            raise ValueError(
                f"identity encoder: expected observations [latent_dim] = [{spec.latent_dim}] "
                f"(embedding vectors), got obs_shape {shape}; set model.latent_dim = "
                f"{shape[-1] if len(shape) == 1 else 'the embedding size'}"
            )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float()
