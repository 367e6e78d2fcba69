"""Component interfaces: what a plugin implements.

Shape legend: ``B`` batch, ``W`` context frames, ``D`` latent_dim, ``*obs`` one observation.

Every component class carries ``Params``, a frozen attrs class of its recipe parameters
(``@attrs.frozen(kw_only=True)``, every field with a default and a ``metadata={"help": ...}``)
and is built as ``cls(params, spec)`` where ``spec`` is the ``ModelSpec`` of the run.
Components are plain ``nn.Module``s built *from* their parameters.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from lejepa_core.envinfo import EnvInfo

KINDS = ("encoder", "predictor", "quantizer", "loss", "masker")


@attrs.frozen(kw_only=True)
class ModelSpec:
    """What every component may know about the run it is built for.

    obs_shape: shape of one observation, e.g. ``(3, 4)`` for 3 balls x (x, y, vx, vy).
    obs_dtype: torch dtype name of observations as stored (``"float32"``, ``"int8"``).
    feature_names: names of the last observation axis (``("x", "y", "vx", "vy")``) or ``()``.
    latent_dim: D.
    context_frames: W, the number of context frames the predictor sees.
    horizons: the set of k the run trains on (``(1, 2, 4, 8, 10)``).
    env: what the environment publishes about its observations (feature groups, dt, box,
        grid cell values, ...: ``lejepa_core.envinfo``), read from the dataset file or the env.
    latent_grid: ``(rows, cols)`` when the latent is a grid of feature vectors (``z.view(B,
        rows, cols, latent_channels)``, row-major, channels last), location ``(r, c)`` covering
        the observation cells ``[r*P:(r+1)*P, c*P:(c+1)*P]`` with ``P = latent_patch``; ``()``
        for one vector. Spatial encoders produce it; spatial predictors, quantizer windows and
        the per-location grid probe read it (docs/grids.md).
    """

    obs_shape: tuple[int, ...]
    latent_dim: int
    obs_dtype: str = "float32"
    feature_names: tuple[str, ...] = ()
    context_frames: int = 1
    horizons: tuple[int, ...] = (1,)
    env: EnvInfo = attrs.field(factory=EnvInfo)
    latent_grid: tuple[int, ...] = ()
    latent_patch: int = 1

    @property
    def max_horizon(self) -> int:
        return max(self.horizons)

    @property
    def latent_channels(self) -> int:
        """Features per ``latent_grid`` location (``latent_dim`` for a one-vector latent)."""
        return self.latent_dim // math.prod(self.latent_grid)


@attrs.frozen(kw_only=True)
class NoParams:
    """Parameter class of a component without parameters."""


class Component(nn.Module):
    """Common base: ``Params`` class, construction from ``(params, spec)``."""

    Params: ClassVar[type] = NoParams
    kind: ClassVar[str] = ""

    def __init__(self, params: Any, spec: ModelSpec):
        super().__init__()
        self.params = params
        self.spec = spec


class Encoder(Component, abc.ABC):
    """``forward(obs: [B, *obs_shape]) -> z: [B, latent_dim]``."""

    kind = "encoder"

    @abc.abstractmethod
    def forward(self, obs: torch.Tensor) -> torch.Tensor: ...


class Predictor(Component, abc.ABC):
    """``forward(z_context: [B, W, D], k: [B] int) -> [B, D]``.

    Returns the predicted latent ``k`` steps after the last of the ``W`` context frames.
    """

    kind = "predictor"

    @abc.abstractmethod
    def forward(self, z_context: torch.Tensor, k: torch.Tensor) -> torch.Tensor: ...


@attrs.frozen(kw_only=True)
class QuantizerOutput:
    """z_q: [B, D] quantized latents (straight-through gradients); codes: [B] or [B, G] int;
    loss: scalar auxiliary loss (commitment, ...; 0 when none), already weighted by the
    quantizer's own parameters; metrics: scalar floats or 0-d tensors (``usage``,
    ``perplexity``, ...)."""

    z_q: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, Any] = attrs.field(factory=dict)


class Quantizer(Component, abc.ABC):
    """``forward(z: [B, D]) -> QuantizerOutput``; arithmetic in float32 under autocast.

    ``feeds_predictor``: True (default) when the predictor reads the quantized context; a
    quantizer that sets it False is a side branch (its codes, auxiliary loss and metrics are
    computed, the predictor reads the context latents unquantized).
    """

    kind = "quantizer"
    feeds_predictor: bool = True

    @abc.abstractmethod
    def forward(self, z: torch.Tensor) -> QuantizerOutput: ...


@attrs.define(kw_only=True)
class StepOutputs:
    """Everything a loss may read about one training step.

    prediction: [B, D] predicted target latents.
    target: [B, D] target latents (no gradient when the target encoder is an EMA copy).
    context: [B, W, D] context latents before quantization.
    context_quantized: [B, W, D] after quantization (``context`` itself when no quantizer).
    k: [B] int horizons.
    context_unmasked: [B, W, D] latents of the unmasked context view, computed only when a
        loss lists ``"context_unmasked"`` in its ``requires``.
    mask: the masker's mask (shape is the masker's business) or None.
    quantizer_output: the ``QuantizerOutput`` of the context, or None.
    generator: a ``torch.Generator`` on the training device, seeded identically on every
        rank, for losses that draw random numbers (e.g. SIGReg's directions).
    step: the global optimisation step.
    """

    prediction: torch.Tensor
    target: torch.Tensor
    context: torch.Tensor
    k: torch.Tensor
    context_quantized: torch.Tensor | None = None
    context_unmasked: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    quantizer_output: QuantizerOutput | None = None
    generator: torch.Generator | None = None
    step: int = 0


@attrs.frozen(kw_only=True)
class LossOutput:
    """value: scalar tensor (unweighted; the trainer applies the recipe's weight);
    metrics: scalar floats or 0-d tensors, logged under ``loss/<name>/<metric>``."""

    value: torch.Tensor
    metrics: dict[str, Any] = attrs.field(factory=dict)


class Loss(Component, abc.ABC):
    """``forward(outputs: StepOutputs) -> LossOutput``.

    ``requires`` names the optional ``StepOutputs`` fields the loss reads, so the trainer
    computes them only when needed (e.g. ``frozenset({"context_unmasked"})``).
    """

    kind = "loss"
    requires: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def forward(self, outputs: StepOutputs) -> LossOutput: ...


class Masker(Component, abc.ABC):
    """``forward(obs: [B, *obs_shape], generator) -> (masked_obs, mask)``.

    Applied to context observations only. ``mask`` is a bool tensor, True where hidden,
    broadcastable to ``obs``. May read ``spec.feature_names`` (e.g. ``x, y, vx, vy``).
    The trainer calls it on ``[B*W, *obs]`` (frames flattened into the batch), or, with
    ``train.mask_frames = "shared"``, once per frame on ``[B, *obs]`` with the generator's state
    restored before each call: draw every random number from ``generator`` so that equal
    states give equal masks.
    """

    kind = "masker"

    @abc.abstractmethod
    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


INTERFACES: dict[str, type] = {
    "encoder": Encoder,
    "predictor": Predictor,
    "quantizer": Quantizer,
    "loss": Loss,
    "masker": Masker,
}


# ---------------------------------------------------------------- actions and planning (control)
# Shape legend: ``L`` action steps, ``A`` action features, ``N`` candidate action sequences,
# ``H`` planning horizon, ``*act`` one action (``()`` for Discrete).


class ActionEncoder(Component, abc.ABC):
    """``forward(actions: [B, L, *act]) -> [B, L, out_dim]``: actions as vectors.

    Built as ``cls(params, spec)``; the action space is ``spec.env.action_space`` (the JSON
    form of ``lejepa_core.data.schema.space_to_json``). Set ``self.out_dim`` in ``__init__``.
    """

    kind = "action_encoder"
    out_dim: int = 0

    @abc.abstractmethod
    def forward(self, actions: torch.Tensor) -> torch.Tensor: ...


class Planner(abc.ABC):
    """``plan(problem, generator) -> actions [H, *act]``: the best action sequence found.

    ``problem`` is a ``lejepa_core.control.problem.PlanningProblem``: ``horizon`` H, the
    ``action_space``, ``cost(actions [N, H, *act]) -> [N]`` (lower is better; the learned
    model or the true simulator behind it) and ``budget`` (candidate sequences per call:
    ``samples`` x ``iterations`` must not exceed it). Built as ``cls(params, spec)``.
    """

    Params: ClassVar[type] = NoParams
    kind: ClassVar[str] = "planner"

    def __init__(self, params: Any, spec: ModelSpec | None = None):
        self.params = params
        self.spec = spec

    @abc.abstractmethod
    def plan(self, problem: Any, generator: torch.Generator) -> torch.Tensor: ...


CONTROL_INTERFACES: dict[str, type] = {"action_encoder": ActionEncoder, "planner": Planner}
"""Component kinds outside a recipe's model tables: built by a predictor or ``lejepa plan``."""


def takes_actions(predictor: Any) -> bool:
    """Whether a predictor's ``forward`` accepts ``actions`` (and ``action_mask``): its class
    attribute ``takes_actions`` when set, else an ``actions`` parameter in its signature.
    Passive predictors (``forward(z_context, k)``) are called without them."""
    flag = getattr(type(predictor), "takes_actions", None)
    if flag is not None:
        return bool(flag)
    import inspect

    try:
        return "actions" in inspect.signature(predictor.forward).parameters
    except (TypeError, ValueError):
        return False
