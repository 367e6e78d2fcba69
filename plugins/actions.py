"""Built-in action encoder: actions of a Discrete, MultiDiscrete or Box space as vectors.

Shape legend: ``B`` batch, ``L`` action steps, ``*act`` one action, ``A`` ``out_dim``.

``default``: ``actions [B, L, *act] -> [B, L, A]``.
Discrete: an embedding table row per action value. MultiDiscrete: one table per component,
summed. Box: the action scaled to [-1, 1] by the space's finite bounds (as is where a bound is
infinite), flattened, then a Linear layer. The space is ``spec.env.action_space`` (the
dataset file's, in ``data.schema.space_to_json`` form).
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch
from torch import nn

from lejepa_core import hookimpl
from lejepa_core.interfaces import ActionEncoder
from lejepa_core.params import param, positive

SPACES = ("Discrete", "MultiDiscrete", "Box")


class DefaultActionEncoder(ActionEncoder):
    """Embedding of Discrete / MultiDiscrete actions, Linear of bound-scaled Box actions. [B, L, *act] -> [B, L, A]."""

    @attrs.frozen(kw_only=True)
    class Params:
        dim: int = param(16, "width A of an action's vector", positive)

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        space = spec.env.action_space or {}
        kind = space.get("type")
        if kind not in SPACES:
            raise ValueError(
                f"action_space: the default action encoder embeds {', '.join(SPACES)} actions, "
                f"got {kind or 'no action space'}"
            )
        self.space_type = kind
        self.out_dim = params.dim
        if kind == "Discrete":
            self.start = int(space.get("start", 0))
            self.table = nn.Embedding(int(space["n"]), params.dim)
        elif kind == "MultiDiscrete":
            nvec = [int(n) for n in np.ravel(space["nvec"])]
            start = np.ravel(space.get("start", [0] * len(nvec))).astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]]) - start  # value -> row
            self.register_buffer("offsets", torch.as_tensor(offsets), persistent=False)
            self.table = nn.Embedding(int(sum(nvec)), params.dim)
        else:
            shape = tuple(int(s) for s in space["shape"])
            low = np.broadcast_to(np.asarray(space["low"], np.float64), shape).ravel()
            high = np.broadcast_to(np.asarray(space["high"], np.float64), shape).ravel()
            finite = np.isfinite(low) & np.isfinite(high) & (high > low)
            centre = np.where(finite, (low + high) / 2, 0.0)
            half = np.where(finite, (high - low) / 2, 1.0)
            self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32), False)
            self.register_buffer("half_range", torch.tensor(half, dtype=torch.float32), False)
            self.action_dims = len(shape)
            self.linear = nn.Linear(math.prod(shape), params.dim)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if self.space_type == "Discrete":
            return self.table(actions.long() - self.start)  # [B, L, A]
        if self.space_type == "MultiDiscrete":
            rows = actions.long().reshape(*actions.shape[:2], -1) + self.offsets  # [B, L, M]
            return self.table(rows).sum(2)  # [B, L, A]
        flat = actions.float().reshape(*actions.shape[:2], -1)  # [B, L, prod(act)]
        return self.linear((flat - self.centre) / self.half_range)


@hookimpl
def register_action_encoders(register):
    register("default", DefaultActionEncoder)
