"""Built-in predictors: context latents and a horizon -> the latent k steps ahead.

Shape legend: ``B`` batch, ``W`` context frames (``spec.context_frames``), ``D`` latent_dim,
``T`` time_dim, ``C`` context features, ``E`` attention width.

Every predictor maps ``z_context: [B, W, D]`` and ``k: [B]`` (int horizons) to ``[B, D]``,
the predicted latent ``k`` steps after the last context frame ``z_t = z_context[:, -1]``.

=============  ======================================================================
``residual``   z_hat = z_t + prior(z_t) + residual(context, embed(k)); starts as copy-last.
``mlp``        z_hat = MLP(context, embed(k)); a baseline without the skip connection.
``attention``  transformer over the W frames, then the same residual head as ``residual``.
``action_residual``  ``residual`` with the actions after the last context frame as features.
=============  ======================================================================

The residual head (``ResidualHead``) is the inductive bias of the background notes: a small
dynamics prior proposes a default change from the current latent alone, the residual MLP
learns corrections from the context and the horizon, and both final layers start near zero
so that the untrained predictor copies the last frame.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import nn

from lejepa_core import Predictor, hookimpl
from lejepa_core.params import in_range, non_negative, one_of, param, positive
from lejepa_plugins.layers import (
    ACTIVATIONS,
    MLP,
    TIME_EMBEDDINGS,
    TimeEmbedding,
    TransformerEncoder,
    sinusoidal_features,
)


def check_context(
    z_context: torch.Tensor, k: torch.Tensor, frames: int | None, latent_dim: int
) -> None:
    """Raise ValueError naming the shapes unless ``z_context: [B, frames, D]`` and ``k: [B]``."""
    if (
        z_context.dim() != 3
        or z_context.shape[2] != latent_dim
        or (frames is not None and z_context.shape[1] != frames)
    ):
        expected = f"[B, {frames if frames is not None else 'W'}, {latent_dim}]"
        raise ValueError(f"z_context: expected {expected}, got {list(z_context.shape)}")
    if k.shape != (z_context.shape[0],):
        raise ValueError(
            f"k: expected [{z_context.shape[0]}] (one horizon per sample), got {list(k.shape)}"
        )


def context_features(z_context: torch.Tensor, how: str) -> torch.Tensor:
    """``z_context: [B, W, D] -> [B, W * D]``.

    ``"flatten"``: the frames as they are. ``"deltas"``: the last frame followed by the
    differences between consecutive frames, newest first (``z_t, z_t - z_{t-1}, ...``).
    """
    if how == "deltas":
        deltas = z_context[:, 1:] - z_context[:, :-1]  # [B, W-1, D]
        z_context = torch.cat([z_context[:, -1:], deltas.flip(1)], dim=1)  # [B, W, D]
    return z_context.flatten(1)  # [B, W * D]


# ---------------------------------------------------------------------------- residual head


@attrs.frozen(kw_only=True)
class ResidualHeadParams:
    """Parameters shared by the ``residual`` and ``attention`` predictors."""

    hidden_dim: int = param(256, "width of the residual MLP", positive)
    depth: int = param(2, "hidden layers of the residual MLP", non_negative)
    activation: Literal["gelu", "relu", "silu", "tanh"] = param(
        "gelu", "hidden activation", one_of(ACTIVATIONS)
    )
    layer_norm: bool = param(False, "LayerNorm after each hidden Linear")
    use_prior: bool = param(
        True, "add the dynamics prior: a small MLP of z_t alone proposing a default change"
    )
    prior_hidden: int = param(64, "width of the dynamics prior's hidden layer", positive)
    prior_times_k: bool = param(
        False, "multiply the prior's change by k (a constant-velocity bias)"
    )
    time_embedding: Literal["linear", "sinusoidal"] = param(
        "linear",
        "horizon embedding: linear (Linear(1 -> time_dim) on k / max_horizon) or sinusoidal",
        one_of(TIME_EMBEDDINGS),
    )
    time_dim: int = param(16, "width of the horizon embedding", positive)
    output_init_scale: float = param(
        1e-3,
        "std of the final layers' initial weights (near zero: the untrained predictor copies z_t)",
        non_negative,
    )


class ResidualHead(nn.Module):
    """``z_hat = z_t + prior(z_t) [* k] + residual([features, embed(k)])``.

    ``z_t: [B, D]``, ``features: [B, C]`` (whatever summarises the context), ``k: [B]`` -> ``[B, D]``.
    """

    def __init__(
        self, params: ResidualHeadParams, feature_dim: int, latent_dim: int, max_horizon: int
    ):
        super().__init__()
        self.params = params
        self.embed_k = TimeEmbedding(params.time_embedding, params.time_dim, max_horizon)
        self.residual = MLP(
            feature_dim + params.time_dim,
            params.hidden_dim,
            latent_dim,
            depth=params.depth,
            activation=params.activation,
            layer_norm=params.layer_norm,
            output_init_scale=params.output_init_scale,
        )
        self.prior = (
            MLP(
                latent_dim,
                params.prior_hidden,
                latent_dim,
                depth=1,
                activation=params.activation,
                output_init_scale=params.output_init_scale,
            )
            if params.use_prior
            else None
        )

    def forward(self, z_t: torch.Tensor, features: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        change = self.residual(torch.cat([features, self.embed_k(k)], dim=-1))  # [B, D]
        if self.prior is not None:
            prior = self.prior(z_t)  # [B, D]
            if self.params.prior_times_k:
                prior = prior * k.to(prior.dtype).unsqueeze(-1)
            change = change + prior
        return z_t + change  # [B, D]


# -------------------------------------------------------------------------------- residual


CONTEXT_INPUTS = ("deltas", "flatten")


class ResidualPredictor(Predictor):
    """z_hat = z_t + dynamics_prior(z_t) + residual(context, embed(k)); initialised as copy-last. [B, W, D], [B] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params(ResidualHeadParams):
        context_input: Literal["deltas", "flatten"] = param(
            "deltas",
            "what the residual MLP sees: deltas (z_t, then z_t - z_{t-1}, ...) or the flattened frames",
            one_of(CONTEXT_INPUTS),
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.head = ResidualHead(
            params, spec.context_frames * spec.latent_dim, spec.latent_dim, spec.max_horizon
        )

    def forward(self, z_context: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        check_context(z_context, k, self.spec.context_frames, self.spec.latent_dim)
        features = context_features(z_context, self.params.context_input)  # [B, W * D]
        return self.head(z_context[:, -1], features, k)  # [B, D]


# ------------------------------------------------------------------------------------- mlp


class MLPPredictor(Predictor):
    """Direct prediction z_hat = MLP(context, embed(k)), no skip connection: a baseline. [B, W, D], [B] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        hidden_dim: int = param(256, "width of the hidden layers", positive)
        depth: int = param(2, "hidden layers", non_negative)
        activation: Literal["gelu", "relu", "silu", "tanh"] = param(
            "gelu", "hidden activation", one_of(ACTIVATIONS)
        )
        layer_norm: bool = param(False, "LayerNorm after each hidden Linear")
        time_embedding: Literal["linear", "sinusoidal"] = param(
            "linear",
            "horizon embedding: linear (Linear(1 -> time_dim) on k / max_horizon) or sinusoidal",
            one_of(TIME_EMBEDDINGS),
        )
        time_dim: int = param(16, "width of the horizon embedding", positive)
        context_input: Literal["deltas", "flatten"] = param(
            "flatten",
            "what the MLP sees: the flattened frames or deltas (z_t, then z_t - z_{t-1}, ...)",
            one_of(CONTEXT_INPUTS),
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.embed_k = TimeEmbedding(params.time_embedding, params.time_dim, spec.max_horizon)
        self.mlp = MLP(
            spec.context_frames * spec.latent_dim + params.time_dim,
            params.hidden_dim,
            spec.latent_dim,
            depth=params.depth,
            activation=params.activation,
            layer_norm=params.layer_norm,
        )

    def forward(self, z_context: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        check_context(z_context, k, self.spec.context_frames, self.spec.latent_dim)
        features = context_features(z_context, self.params.context_input)  # [B, W * D]
        return self.mlp(torch.cat([features, self.embed_k(k)], dim=-1))  # [B, D]


# ------------------------------------------------------------------------------- attention


class AttentionPredictor(Predictor):
    """Temporal transformer over the W context frames, then the residual head (prior + residual). [B, W, D], [B] -> [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params(ResidualHeadParams):
        dim: int = param(128, "attention width E", positive)
        attention_depth: int = param(2, "transformer layers over the frames", positive)
        num_heads: int = param(4, "attention heads (dim must be a multiple)", positive)
        positional: Literal["learned", "sinusoidal"] = param(
            "learned",
            "time-position embedding of the frames: learned or sinusoidal (of the frame's age)",
            one_of(("learned", "sinusoidal")),
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        frames = spec.context_frames
        self.embed_frame = nn.Linear(spec.latent_dim, params.dim)
        if params.positional == "learned":
            self.positions = nn.Parameter(torch.randn(1, frames, params.dim) * 0.02)  # [1, W, E]
        else:
            ages = torch.arange(frames - 1, -1, -1)  # the last frame has age 0
            self.register_buffer(
                "positions", sinusoidal_features(ages, params.dim).unsqueeze(0), persistent=False
            )
        self.transformer = TransformerEncoder(params.dim, params.attention_depth, params.num_heads)
        self.head = ResidualHead(params, params.dim, spec.latent_dim, spec.max_horizon)

    def forward(self, z_context: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        check_context(z_context, k, self.spec.context_frames, self.spec.latent_dim)
        x = self.embed_frame(z_context) + self.positions  # [B, W, E]
        summary = self.transformer(x)[:, -1]  # [B, E] read out at the newest frame
        return self.head(z_context[:, -1], summary, k)  # [B, D]


# ------------------------------------------------------------------------- action_residual


class ActionResidualPredictor(ResidualPredictor):
    """The residual predictor conditioned on the actions between the last context frame and t+k. [B, W, D], [B], [B, K, *act] -> [B, D]."""

    takes_actions = True

    @attrs.frozen(kw_only=True)
    class Params(ResidualPredictor.Params):
        action_encoder: str = param(
            "default", "registered action encoder (register_action_encoders)"
        )
        action_dim: int = param(16, "width A of an encoded action (the encoder's `dim`)", positive)
        action_dropout: float = param(
            0.1,
            "training only: share of windows whose actions are hidden, so the predictor also "
            "learns the action-marginal prediction it gives when called without actions",
            in_range(0.0, 1.0),
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        from lejepa_core.registry import get_registry

        # no action space known (a file without one, the conformance specs): no encoder; a call
        # with actions is then an error, a call without them predicts like `residual`
        self.action_encoder = None
        width = params.action_dim
        if spec.env.action_space is not None:
            cls = get_registry().get("action_encoder", params.action_encoder)
            fields = {f.name for f in attrs.fields(cls.Params)}
            encoder_params = cls.Params(**({"dim": params.action_dim} if "dim" in fields else {}))
            self.action_encoder = cls(encoder_params, spec)
            width = int(self.action_encoder.out_dim)
        self.width = width
        self.steps = spec.max_horizon  # K: action slots the predictor reads
        # features: the K encoded actions in order, their sum, and their sum weighted by the
        # time each acts before t + k (a push's displacement grows with it), over max_horizon
        self.head = ResidualHead(
            params,
            spec.context_frames * spec.latent_dim + (self.steps + 2) * width,
            spec.latent_dim,
            spec.max_horizon,
        )

    def action_features(
        self, actions: torch.Tensor | None, mask: torch.Tensor | None, k: torch.Tensor
    ) -> torch.Tensor:
        """actions [B, L, *act], mask [B, L] (None: none known) -> [B, (K + 2) * A]."""
        batch, width, steps = k.shape[0], self.width, self.steps
        device = k.device
        if actions is None:
            return torch.zeros(batch, (steps + 2) * width, device=device)
        if self.action_encoder is None:
            raise ValueError("actions given, but the run's data names no action space")
        if mask is None:
            mask = torch.arange(actions.shape[1], device=device)[None, :] < k[:, None]
        actions, mask = actions[:, :steps], mask[:, :steps]
        if self.training and self.params.action_dropout > 0:
            keep = torch.rand(batch, 1, device=device) >= self.params.action_dropout
            mask = mask & keep
        e = self.action_encoder(actions) * mask.unsqueeze(-1).to(torch.float32)  # [B, L, A]
        if e.shape[1] < steps:
            e = torch.cat([e, e.new_zeros(batch, steps - e.shape[1], width)], 1)  # [B, K, A]
        j = torch.arange(steps, device=device, dtype=e.dtype)
        lead = ((k[:, None].to(e.dtype) - j[None, :]).clamp(min=0) / steps).unsqueeze(-1)
        return torch.cat([e.flatten(1), e.sum(1), (e * lead).sum(1)], dim=-1)

    def forward(
        self,
        z_context: torch.Tensor,
        k: torch.Tensor,
        actions: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_context(z_context, k, self.spec.context_frames, self.spec.latent_dim)
        if actions is not None and actions.shape[0] != k.shape[0]:
            raise ValueError(
                f"actions: expected [{k.shape[0]}, K, *act], got {list(actions.shape)}"
            )
        features = context_features(z_context, self.params.context_input)  # [B, W * D]
        acted = self.action_features(actions, action_mask, k).to(features.dtype)
        return self.head(z_context[:, -1], torch.cat([features, acted], -1), k)  # [B, D]


# ------------------------------------------------------------------------------ registration


@hookimpl
def register_predictors(register):
    register("residual", ResidualPredictor)
    register("action_residual", ActionResidualPredictor)
    register("mlp", MLPPredictor)
    register("attention", AttentionPredictor)
