"""Adaptive weights of the recipe's losses (``train.loss_weighting``; docs/training.md).

T losses with recipe weights c [T] (the ``[[losses]]`` weights) and unweighted values L [T]:

    fixed        total = sum_i c_i L_i                                 (no module: today's path)
    uncertainty  total = sum_i [c_i exp(-s_i) L_i + s_i / 2]           over the losses with c_i > 0
    gradnorm     total = sum_i c_i m_i L_i, m adapted by GradNorm, sum_i m_i = T'   (c_i > 0: T')

The weighting module lives in ``JEPAModel`` (``loss_weighting``), so its parameters (s, m) are
trained by the run's AdamW (no weight decay: 1-d), saved in every checkpoint with the model
and restored by a resume. ``effective_weights()`` gives the weight each L_i enters the total
with (logged as ``loss_weight/<label>``). The quantizer's auxiliary loss stays outside (weight
1), a loss with c_i = 0 stays at 0 (a figure, not a training signal). Both rules assume
losses >= 0 (every built-in loss is): a negative L_i drives s_i to -inf.
"""

from __future__ import annotations

import torch
from torch import nn

from lejepa_core.training.weighting_mode import parse_loss_weighting

LOSS_WEIGHT_PREFIX = "loss_weight/"
"""``loss_weight/<label>`` in the ``train`` records of metrics.jsonl: c_i x the adaptive factor."""

MIN_MULTIPLIER = 1e-3
"""GradNorm multipliers are kept >= this before the renormalisation (a weight never flips sign)."""


class UncertaintyWeighting(nn.Module):
    """Kendall, Gal & Cipolla (2018): a learnable log-variance s_i per weighted loss,

        total = sum_i [c_i exp(-s_i) L_i + s_i / 2],   s = 0 at the start.

    Their regression form is exp(-s_i) L_i / 2 + s_i / 2 with s_i = log sigma_i^2; the factor
    1/2 on L_i is dropped and c_i kept so that step 0 is exactly the fixed recipe (s = 0
    gives c_i), and what the adaptation changes shows as exp(-s_i). At the optimum of s_i
    (d/ds_i = 0) c_i exp(-s_i) = 1 / (2 L_i) whatever c_i: the recipe weights set the start,
    not the end. s_i moves at AdamW's pace (about lr per step).
    """

    def __init__(self, weights: list[float]):
        super().__init__()
        self.register_buffer("base", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.log_variance = nn.Parameter(torch.zeros(len(weights)))  # s [T]

    def effective_weights(self) -> torch.Tensor:
        """[T]: c_i exp(-s_i), detached."""
        return (self.base * torch.exp(-self.log_variance)).detach()

    def forward(self, values: list[torch.Tensor], shared: list[nn.Parameter]) -> torch.Tensor:
        """values: T 0-d losses -> the 0-d total (``shared`` unused)."""
        losses = torch.stack(values)  # [T]
        s = self.log_variance
        self.used = self.effective_weights()  # what this step weighs with (logged)
        regulariser = torch.where(self.base > 0, s / 2, torch.zeros_like(s))
        return (self.base * torch.exp(-s) * losses + regulariser).sum()


class GradNormWeighting(nn.Module):
    """GradNorm (Chen et al. 2018) on the context encoder's trainable parameters W (the
    parameters every loss may reach; the ones ``grad_share/<label>`` measures):

        g_i = ||grad_W L_i||, G_i = c_i m_i g_i, G_mean = mean_i G_i
        r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))       (relative inverse training rate)
        L_grad = sum_i |G_i - G_mean r_i^alpha|            (G_mean r_i^alpha held constant)

    The network trains on sum_i c_i m_i L_i with m held constant; m receives dL_grad/dm_i =
    sign(G_i - G_mean r_i^alpha) c_i g_i (injected into the total's gradient with a term of
    value 0, so the same optimizer step, DDP all-reduce and accumulation apply to it) and is
    renormalised at the next forward: clamped to >= MIN_MULTIPLIER, then sum_i m_i = T' over
    the T' losses with c_i > 0 (m = 1 at the start). L_i(0): the first training step's values
    (a buffer, saved with the model). Cost: one ``torch.autograd.grad`` per weighted loss per
    training step, each a backward pass from L_i to W.
    """

    def __init__(self, weights: list[float], alpha: float):
        super().__init__()
        self.alpha = alpha
        base = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("base", base, persistent=False)
        self.register_buffer("active", base > 0, persistent=False)
        self.active_indices = [i for i, w in enumerate(weights) if w > 0]
        self.multipliers = nn.Parameter(torch.ones(len(weights)))  # m [T]
        self.register_buffer("initial_losses", torch.ones(len(weights)))  # L(0) [T]
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def effective_weights(self) -> torch.Tensor:
        """[T]: c_i m_i (m as renormalised at the last forward), detached."""
        return (self.base * self.multipliers).detach()

    @torch.no_grad()
    def renormalise(self) -> None:
        """m >= MIN_MULTIPLIER, sum over the weighted losses = their count (in place)."""
        m = self.multipliers.clamp_(min=MIN_MULTIPLIER)
        count = float(len(self.active_indices))
        scaled = m * (count / (m * self.active).sum().clamp_min(MIN_MULTIPLIER))
        m.copy_(torch.where(self.active, scaled, torch.ones_like(m)))

    def forward(self, values: list[torch.Tensor], shared: list[nn.Parameter]) -> torch.Tensor:
        """values: T 0-d losses, shared: W -> the 0-d total (its gradient on m: GradNorm's)."""
        self.renormalise()
        losses = torch.stack(values)  # [T]
        weights = self.used = self.effective_weights()  # [T], held constant for the network
        total = (weights * losses).sum()
        if not (self.training and torch.is_grad_enabled() and shared):
            return total  # validation, or nothing shared to balance on
        grad = self.multiplier_gradient(values, weights, shared)
        inject = (self.multipliers * grad).sum()
        return total + (inject - inject.detach())  # value + 0, gradient on m: grad

    def multiplier_gradient(
        self, values: list[torch.Tensor], weights: torch.Tensor, shared: list[nn.Parameter]
    ) -> torch.Tensor:
        """dL_grad/dm [T] (0 for losses with c_i = 0); records L(0) on the first call."""
        zero = weights.new_zeros(())
        norms = []
        for i, value in enumerate(values):
            norm = zero
            if i in self.active_indices and value.requires_grad:
                grads = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
                found = [g.detach().float().norm() for g in grads if g is not None]
                norm = torch.stack(found).norm() if found else zero
            norms.append(norm)
        g = torch.stack(norms)  # [T] ||grad_W L_i||
        with torch.no_grad():
            losses = torch.stack([v.detach().float() for v in values])
            self.initial_losses.copy_(torch.where(self.started, self.initial_losses, losses))
            self.started.fill_(True)
            tiny = torch.finfo(torch.float32).tiny
            ratio = (losses / self.initial_losses.clamp_min(tiny)).clamp_min(tiny)  # L_i / L_i(0)
            count = len(self.active_indices)
            norm_weighted = weights * g  # G_i
            mean_ratio = (ratio * self.active).sum() / count
            mean_norm = (norm_weighted * self.active).sum() / count
            target = mean_norm * (ratio / mean_ratio) ** self.alpha
            grad = torch.sign(norm_weighted - target) * self.base * g
            return torch.where(self.active, grad, torch.zeros_like(grad))


def build_weighting(text: str, weights: list[float]) -> nn.Module | None:
    """The module of ``train.loss_weighting`` for recipe weights c [T]; None for "fixed"."""
    mode, alpha = parse_loss_weighting(text)
    if mode == "uncertainty":
        return UncertaintyWeighting(weights)
    if mode == "gradnorm":
        return GradNormWeighting(weights, alpha)
    return None


def loss_weight_metrics(labels: list[str], weighting: nn.Module | None) -> dict[str, torch.Tensor]:
    """``{"loss_weight/<label>": 0-d tensor}`` of the weights the last forward used (taken
    before the optimizer step changed them); {} for fixed weights. No host sync."""
    if weighting is None:
        return {}
    weights = getattr(weighting, "used", None)
    weights = weighting.effective_weights() if weights is None else weights
    return {f"{LOSS_WEIGHT_PREFIX}{label}": weights[i] for i, label in enumerate(labels)}


def training_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters whose gradient norm is logged and clipped: all but the loss
    weighting's (its gradients are on another scale and would move the network's clipping)."""
    weighting = getattr(model, "loss_weighting", None)
    own = set() if weighting is None else {id(p) for p in weighting.parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in own]
