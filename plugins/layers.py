"""Small building blocks shared by the built-in encoders and predictors.

Shape legend: ``B`` batch, ``N`` tokens, ``D`` width, ``H x W`` grid, ``T`` time_dim.

- ``MLP``: Linear -> (LayerNorm) -> activation, repeated, then a final Linear.
- ``TimeEmbedding``: horizon ``k: [B]`` -> ``[B, T]``, linear (``Linear(1 -> T)`` on
  ``k / max_horizon``) or sinusoidal (standard sin/cos features of ``k``).
- ``sinusoidal_features`` / ``sinusoidal_positions_2d``: fixed positional features.
- ``grid_values``: the ``(cell_values, pad_value)`` a grid component reads from ``spec.env``.
- ``one_hot_colours``: int grid ``[B, H, W]`` -> ``[B, H, W, V]`` (``V`` cell values).
- ``TransformerEncoder``: pre-norm ``nn.TransformerEncoder`` with batch-first tensors.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from lejepa_core.params import in_range, param, positive

ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


def activation_module(name: str) -> nn.Module:
    """``"gelu" | "relu" | "silu" | "tanh"`` -> a fresh activation module."""
    modules = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
    if name not in modules:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return modules[name]()


def is_integer_dtype(dtype_name: str) -> bool:
    """True for ``spec.obs_dtype`` names of integer tensors (``"int8"``, ``"uint8"``, ...)."""
    return not getattr(torch, dtype_name).is_floating_point


class MLP(nn.Module):
    """``x: [..., in_dim] -> [..., out_dim]``.

    ``depth`` hidden layers of width ``hidden_dim`` (``depth=0``: a single Linear), each
    Linear -> LayerNorm (optional) -> activation. ``output_init_scale`` (when not None) sets
    the final layer's weights to ``N(0, scale^2)`` and its bias to zero: near-zero outputs
    at initialisation, the residual predictors' copy-last bias.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        *,
        depth: int = 2,
        activation: str = "gelu",
        layer_norm: bool = False,
        output_init_scale: float | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers.append(nn.Linear(width, hidden_dim))
            if layer_norm:
                layers.append(nn.LayerNorm(hidden_dim))
            layers.append(activation_module(activation))
            width = hidden_dim
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_dim)
        if output_init_scale is not None:
            nn.init.normal_(self.out.weight, std=output_init_scale)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def sinusoidal_features(
    positions: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Standard transformer sin/cos features. ``positions: [...]`` -> ``[..., dim]``.

    Frequencies ``w_i = max_period^(-i / half)``, ``i < half = dim // 2``; the output is
    ``[sin(p w_0), ..., sin(p w_{half-1}), cos(p w_0), ...]``, zero-padded when ``dim`` is odd.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=positions.device)
        / max(half, 1)
    )  # [half]
    angles = positions.float().unsqueeze(-1) * freqs  # [..., half]
    features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., 2 * half]
    if dim % 2:
        features = F.pad(features, (0, 1))
    return features


def sinusoidal_positions_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D positional features of a ``height x width`` token grid -> ``[height * width, dim]``.

    Half of the channels encode the row, the other half the column (raster order).
    """
    row_dim = dim // 2
    rows = sinusoidal_features(torch.arange(height), row_dim)  # [height, row_dim]
    cols = sinusoidal_features(torch.arange(width), dim - row_dim)  # [width, dim - row_dim]
    grid = torch.cat(
        [
            rows[:, None, :].expand(height, width, row_dim),
            cols[None, :, :].expand(height, width, dim - row_dim),
        ],
        dim=-1,
    )  # [height, width, dim]
    return grid.reshape(height * width, dim)


TIME_EMBEDDINGS = ("linear", "sinusoidal")


class TimeEmbedding(nn.Module):
    """Horizon embedding ``k: [B] int -> [B, time_dim]``.

    ``"linear"``: ``Linear(1 -> time_dim)`` applied to ``k / max_horizon`` (the recipe's
    largest horizon, so trained horizons map into ``(0, 1]``).
    ``"sinusoidal"``: fixed ``sinusoidal_features(k, time_dim)``; no parameters.
    """

    def __init__(self, kind: str, time_dim: int, max_horizon: int):
        super().__init__()
        if kind not in TIME_EMBEDDINGS:
            raise ValueError(
                f"time_embedding: expected one of {', '.join(TIME_EMBEDDINGS)}, got {kind!r}"
            )
        self.kind = kind
        self.time_dim = time_dim
        self.max_horizon = max(int(max_horizon), 1)
        self.linear = nn.Linear(1, time_dim) if kind == "linear" else None

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        if self.linear is not None:
            return self.linear(k.float().unsqueeze(-1) / self.max_horizon)  # [B, time_dim]
        return sinusoidal_features(k, self.time_dim)  # [B, time_dim]


def grid_values(spec, component: str) -> tuple[int, int]:
    """``(cell_values, pad_value)`` of integer-grid observations, from the env's metadata
    (``spec.env``; ARC: ``(11, 10)``). ValueError naming the metadata keys when the data is
    not an integer grid or its env does not publish them."""
    env = spec.env
    if is_integer_dtype(spec.obs_dtype) and env.cell_values is not None:
        if env.pad_value is not None and 0 <= env.pad_value < env.cell_values:
            return env.cell_values, env.pad_value
    raise ValueError(
        f"{component} needs integer-grid observations whose env publishes "
        "metadata['cell_values'] and ['pad_value'] (pad_value in 0..cell_values-1); got "
        f"obs_dtype {spec.obs_dtype!r}, cell_values={env.cell_values!r}, "
        f"pad_value={env.pad_value!r}"
    )


def one_hot_colours(grid: torch.Tensor, cell_values: int) -> torch.Tensor:
    """Int grid ``[B, H, W]`` with values ``0..cell_values-1`` -> float one-hot
    ``[B, H, W, cell_values]``."""
    return F.one_hot(grid.long(), cell_values).float()


@attrs.frozen(kw_only=True)
class TransformerParams:
    """Parameters of a ``TransformerEncoder``, shared by the encoders built on one."""

    dim: int = param(128, "token width", positive)
    depth: int = param(2, "transformer layers", positive)
    num_heads: int = param(4, "attention heads (dim must be a multiple)", positive)
    mlp_ratio: float = param(4.0, "feed-forward width / dim", positive)
    dropout: float = param(0.0, "dropout inside the transformer", in_range(0.0, 1.0))


class TransformerEncoder(nn.Module):
    """Pre-norm transformer over tokens ``x: [B, N, dim] -> [B, N, dim]`` (final LayerNorm).

    ``padding_mask: [B, N]`` bool, True where a token is padding (ignored as a key).
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim: expected a multiple of num_heads={num_heads}, got {dim}")
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=num_heads,
            dim_feedforward=max(1, int(dim * mlp_ratio)),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    @classmethod
    def from_params(cls, params: TransformerParams) -> TransformerEncoder:
        return cls(params.dim, params.depth, params.num_heads, params.mlp_ratio, params.dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.blocks(x, src_key_padding_mask=padding_mask))  # [B, N, dim]


def masked_mean(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens ignoring padding. ``x: [B, N, D]``, ``padding_mask: [B, N]`` -> ``[B, D]``."""
    if padding_mask is None:
        return x.mean(dim=1)
    keep = (~padding_mask).unsqueeze(-1).to(x.dtype)  # [B, N, 1]
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
