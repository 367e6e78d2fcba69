"""Built-in encoders: one observation -> one latent vector.

Shape legend: ``B`` batch, ``D`` latent_dim, ``N`` objects, ``F`` features per object,
``H x W`` grid, ``C`` channels, ``P`` patch_size, ``T`` tokens.

Every encoder maps ``obs: [B, *spec.obs_shape] -> z: [B, D]`` and is registered below:

=============  ======================================================================
``mlp``        flatten (one-hot colours for int grids) -> MLP. Any observation.
``set``        DeepSets / attention pooling over the rows of ``[B, N, F]`` (objects).
``transformer`` tokens = objects (rows of ``[B, N, F]``) or patches of ``[B, H, W]``.
``grid_cnn``   one-hot ARC colours -> convolutions -> global pooling -> Linear.
``object``     connected components of ARC grids as tokens -> transformer (object_encoder.py).
``conv``       residual CNN for float images [C, H, W] / [H, W] (image_encoders.py).
``vit``        vision transformer for float images (image_encoders.py).
``identity``   embeddings computed elsewhere [D] -> [D] unchanged (image_encoders.py).
=============  ======================================================================

Observations may be float (physics ``(N, 4)``, pixels ``(H, W)``) or int8 ARC grids
(``(30, 30)``, colours 0..9, pad 10). Integer observations are cast here, never by the caller.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from torch import nn

from lejepa_core import Encoder, hookimpl
from lejepa_core.params import non_negative, one_of, param, positive
from lejepa_plugins.image_encoders import ConvEncoder, IdentityEncoder, ViTEncoder
from lejepa_plugins.layers import (
    ACTIVATIONS,
    MLP,
    TransformerEncoder,
    TransformerParams,
    activation_module,
    grid_values,
    is_integer_dtype,
    masked_mean,
    one_hot_colours,
    sinusoidal_features,
    sinusoidal_positions_2d,
)
from lejepa_plugins.object_encoder import ObjectEncoder

# --------------------------------------------------------------------------------------- mlp


class MLPEncoder(Encoder):
    """Flattens the observation (one-hot colours for int grids) and applies an MLP. [B, *obs] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        hidden_dim: int = param(256, "width of the hidden layers", positive)
        depth: int = param(2, "number of hidden layers (0: a single Linear)", non_negative)
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "hidden activation", one_of(ACTIVATIONS)
        )
        layer_norm: bool = param(True, "LayerNorm after each hidden Linear")
        one_hot: bool = param(
            True, "int observations: one-hot the env's cell values (else cast to float)"
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.one_hot = params.one_hot and is_integer_dtype(spec.obs_dtype)
        self.cell_values = grid_values(spec, "mlp encoder (one_hot)")[0] if self.one_hot else 1
        in_dim = math.prod(spec.obs_shape) * self.cell_values
        self.mlp = MLP(
            in_dim,
            params.hidden_dim,
            spec.latent_dim,
            depth=params.depth,
            activation=params.activation,
            layer_norm=params.layer_norm,
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = (
            one_hot_colours(obs, self.cell_values) if self.one_hot else obs.float()
        )  # [B, *obs(, V)]
        return self.mlp(x.flatten(1))  # [B, D]


# --------------------------------------------------------------------------------------- set


def _require_object_rows(name: str, spec) -> None:
    if len(spec.obs_shape) != 2:
        raise ValueError(
            f"{name} encoder: expected observations of objects [N, F] (2 axes), got obs_shape {tuple(spec.obs_shape)}"
        )


class SetEncoder(Encoder):
    """Permutation-invariant encoder over objects (rows of [B, N, F]): DeepSets or attention pooling. -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        hidden_dim: int = param(128, "width of phi (per object) and rho (pooled)", positive)
        phi_depth: int = param(2, "hidden layers of phi, the per-object MLP", non_negative)
        rho_depth: int = param(1, "hidden layers of rho, the MLP after pooling", non_negative)
        pooling: Literal["mean", "sum", "attention"] = param(
            "mean",
            "how objects are pooled: mean, sum or attention (learned query)",
            one_of(("mean", "sum", "attention")),
        )
        num_heads: int = param(
            4, "attention pooling: heads (hidden_dim must be a multiple)", positive
        )
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "hidden activation", one_of(ACTIVATIONS)
        )
        layer_norm: bool = param(True, "LayerNorm after each hidden Linear")

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        _require_object_rows("set", spec)
        num_features = spec.obs_shape[-1]
        hidden = params.hidden_dim
        mlp_kw = dict(activation=params.activation, layer_norm=params.layer_norm)
        self.phi = MLP(num_features, hidden, hidden, depth=params.phi_depth, **mlp_kw)
        if params.pooling == "attention":
            if hidden % params.num_heads:
                raise ValueError(
                    f"hidden_dim: expected a multiple of num_heads={params.num_heads}, got {hidden}"
                )
            self.query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)  # [1, 1, hidden]
            self.attention = nn.MultiheadAttention(hidden, params.num_heads, batch_first=True)
        self.rho = MLP(hidden, hidden, spec.latent_dim, depth=params.rho_depth, **mlp_kw)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.phi(obs.float())  # [B, N, hidden]
        if self.params.pooling == "sum":
            pooled = h.sum(dim=1)  # [B, hidden]
        elif self.params.pooling == "mean":
            pooled = h.mean(dim=1)  # [B, hidden]
        else:
            query = self.query.expand(h.shape[0], -1, -1)  # [B, 1, hidden]
            pooled, _ = self.attention(query, h, h, need_weights=False)  # [B, 1, hidden]
            pooled = pooled.squeeze(1)  # [B, hidden]
        return self.rho(pooled)  # [B, D]


# ------------------------------------------------------------------------------- transformer


class TransformerTokenEncoder(Encoder):
    """Transformer over objects (rows of [B, N, F]) or grid patches of [B, H, W]; CLS or mean pooling. -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params(TransformerParams):
        tokens: Literal["auto", "objects", "patches"] = param(
            "auto",
            "objects: one token per row of [N, F]; patches: P x P patches of [H, W]; "
            "auto: objects when the run names features (spec.feature_names), else patches",
            one_of(("auto", "objects", "patches")),
        )
        patch_size: int = param(
            3,
            "patches: side P of the square patches (the grid is padded up to a multiple)",
            positive,
        )
        positional: Literal["learned", "sinusoidal", "none"] = param(
            "learned",
            "positional embeddings: learned, sinusoidal (2-D for patches) or none "
            "(none + objects: permutation invariant)",
            one_of(("learned", "sinusoidal", "none")),
        )
        pooling: Literal["cls", "mean"] = param(
            "cls", "CLS token or mean over tokens", one_of(("cls", "mean"))
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        if len(spec.obs_shape) != 2:
            raise ValueError(
                f"transformer encoder: expected obs_shape [N, F] (objects) or [H, W] (grid), got {tuple(spec.obs_shape)}"
            )
        self.integer_obs = is_integer_dtype(spec.obs_dtype)
        mode = params.tokens
        if mode == "auto":
            mode = "objects" if spec.feature_names else "patches"
        self.mode = mode
        if mode == "objects":
            num_tokens, token_features = spec.obs_shape[0], spec.obs_shape[1]
            self.token_grid = None
        else:
            p = params.patch_size
            height, width = spec.obs_shape
            # patches along H, along W
            self.token_grid = (math.ceil(height / p), math.ceil(width / p))
            num_tokens = self.token_grid[0] * self.token_grid[1]
            self.cell_values, self.pad_value = (
                grid_values(spec, "transformer encoder") if self.integer_obs else (1, 0)
            )
            token_features = p * p * self.cell_values
        self.embed = nn.Linear(token_features, params.dim)
        if params.positional == "learned":
            # [1, T, dim]
            self.positions = nn.Parameter(torch.randn(1, num_tokens, params.dim) * 0.02)
        elif params.positional == "sinusoidal":
            table = (
                sinusoidal_features(torch.arange(num_tokens), params.dim)
                if self.token_grid is None
                else sinusoidal_positions_2d(*self.token_grid, params.dim)
            )
            self.register_buffer("positions", table.unsqueeze(0), persistent=False)  # [1, T, dim]
        else:
            self.positions = None
        if params.pooling == "cls":
            self.cls = nn.Parameter(torch.randn(1, 1, params.dim) * 0.02)  # [1, 1, dim]
        self.transformer = TransformerEncoder.from_params(params)
        self.head = nn.Linear(params.dim, spec.latent_dim)

    def patchify(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``obs: [B, H, W]`` -> patch features ``[B, T, P*P*C]`` and, for int grids, a padding
        mask ``[B, T]`` (True for patches entirely outside the grid)."""
        p = self.params.patch_size
        rows, cols = self.token_grid
        pad_h, pad_w = rows * p - obs.shape[1], cols * p - obs.shape[2]
        if self.integer_obs:
            # [B, rows*P, cols*P], padded with the pad value
            grid = nn.functional.pad(obs.long(), (0, pad_w, 0, pad_h), value=self.pad_value)
            # [B, rows, cols]: True where the whole patch is pad
            outside = (grid == self.pad_value).reshape(-1, rows, p, cols, p).all(dim=4).all(dim=2)
            x = one_hot_colours(grid, self.cell_values)  # [B, rows*P, cols*P, C=V]
        else:
            grid = nn.functional.pad(obs.float(), (0, pad_w, 0, pad_h))
            outside = None
            x = grid.unsqueeze(-1)  # [B, rows*P, cols*P, C=1]
        batch, channels = x.shape[0], x.shape[-1]
        x = x.reshape(batch, rows, p, cols, p, channels)  # [B, rows, P, cols, P, C]
        x = x.permute(0, 1, 3, 2, 4, 5)  # [B, rows, cols, P, P, C]
        x = x.reshape(batch, rows * cols, p * p * channels)  # [B, T, P*P*C]
        if outside is None:
            return x, None
        mask = outside.reshape(batch, rows * cols)  # [B, T]
        mask = mask & ~mask.all(dim=1, keepdim=True)  # an all-pad grid keeps every token
        return x, mask

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.mode == "objects":
            tokens, mask = obs.float(), None  # [B, N, F]
        else:
            tokens, mask = self.patchify(obs)  # [B, T, P*P*C], [B, T] | None
        x = self.embed(tokens)  # [B, T, dim]
        if self.positions is not None:
            x = x + self.positions
        if self.params.pooling == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1 + T, dim]
            if mask is not None:
                mask = nn.functional.pad(mask, (1, 0), value=False)  # [B, 1 + T]
            x = self.transformer(x, mask)
            pooled = x[:, 0]  # [B, dim]
        else:
            pooled = masked_mean(self.transformer(x, mask), mask)  # [B, dim]
        return self.head(pooled)  # [B, D]


# ---------------------------------------------------------------------------------- grid_cnn


class GridCNNEncoder(Encoder):
    """One-hot ARC colours (11 channels) -> convolutions -> global pooling over the grid -> Linear. [B, H, W] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        channels: int = param(64, "channels of every convolution", positive)
        depth: int = param(3, "number of convolutions", positive)
        kernel_size: int = param(3, "odd kernel side (same padding)", positive)
        pooling: Literal["mean", "max", "mean_max"] = param(
            "mean_max",
            "global pooling over cells inside the grid (pad cells excluded): mean, max, or both concatenated",
            one_of(("mean", "max", "mean_max")),
        )
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "activation after each convolution", one_of(ACTIVATIONS)
        )
        group_norm: bool = param(
            True,
            "GroupNorm (8 groups, or 1 when channels is not a multiple) after each convolution",
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        if len(spec.obs_shape) != 2:
            raise ValueError(
                f"grid_cnn encoder: expected a grid obs_shape [H, W], got {tuple(spec.obs_shape)}"
            )
        if params.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd value, got {params.kernel_size}")
        self.integer_obs = is_integer_dtype(spec.obs_dtype)
        layers: list[nn.Module] = []
        self.cell_values, self.pad_value = (
            grid_values(spec, "grid_cnn encoder") if self.integer_obs else (1, 0)
        )
        in_channels = self.cell_values
        for _ in range(params.depth):
            layers.append(
                nn.Conv2d(
                    in_channels,
                    params.channels,
                    params.kernel_size,
                    padding=params.kernel_size // 2,
                )
            )
            if params.group_norm:
                groups = 8 if params.channels % 8 == 0 else 1
                layers.append(nn.GroupNorm(groups, params.channels))
            layers.append(activation_module(params.activation))
            in_channels = params.channels
        self.convs = nn.Sequential(*layers)
        pooled_dim = params.channels * (2 if params.pooling == "mean_max" else 1)
        self.head = nn.Linear(pooled_dim, spec.latent_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.integer_obs:
            x = one_hot_colours(obs, self.cell_values).permute(0, 3, 1, 2)  # [B, V, H, W]
            inside = obs != self.pad_value  # [B, H, W]
            empty = ~inside.flatten(1).any(dim=1)  # [B] all-pad grids: pool every cell
            inside = inside | empty[:, None, None]
        else:
            x = obs.float().unsqueeze(1)  # [B, 1, H, W]
            inside = torch.ones_like(obs, dtype=torch.bool)
        h = self.convs(x).flatten(2)  # [B, C, H*W]
        inside = inside.flatten(1).unsqueeze(1)  # [B, 1, H*W]
        pooled = []
        if self.params.pooling in ("mean", "mean_max"):
            weights = inside.to(h.dtype)
            pooled.append((h * weights).sum(-1) / weights.sum(-1))  # [B, C]
        if self.params.pooling in ("max", "mean_max"):
            pooled.append(h.masked_fill(~inside, float("-inf")).amax(-1))  # [B, C]
        return self.head(torch.cat(pooled, dim=-1))  # [B, D]


# ------------------------------------------------------------------------------ registration


@hookimpl
def register_encoders(register):
    register("mlp", MLPEncoder)
    register("set", SetEncoder)
    register("transformer", TransformerTokenEncoder)
    register("grid_cnn", GridCNNEncoder)
    register("object", ObjectEncoder)
    register("conv", ConvEncoder)
    register("vit", ViTEncoder)
    register("identity", IdentityEncoder)
