"""Built-in losses, registered through the ``lejepa`` entry-point group like any plugin.

Shape legend: ``B`` batch, ``W`` context frames, ``D`` latent_dim.

Every loss returns its *unweighted* value (the trainer applies the recipe's weight) and
detached scalar metrics. Reductions follow one rule: a mean over the batch is a mean over the
batch of a per-sample value, and each docstring states that per-sample value (for the
prediction losses it is a mean over ``D``, so ``l1`` reads on the same scale as the
error-to-signal ratio's numerator). Nothing is divided by a quantity that grows with the
model (see docs/components_losses.md for the table of parameters and when to use each).
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from lejepa_core import Loss, LossOutput, StepOutputs, hookimpl
from lejepa_core.errors import TrainingError
from lejepa_core.metrics import cosine_similarity, error_to_signal_ratio
from lejepa_core.params import non_negative, one_of, param, positive
from lejepa_plugins.sigreg import SIGRegLoss


def _check_pair(name: str, prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.ndim != 2 or prediction.shape != target.shape:
        raise ValueError(
            f"{name}: expected prediction and target of one shape [B, D], got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )


def _prediction_metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "error_to_signal": error_to_signal_ratio(prediction, target),
        "cosine": cosine_similarity(prediction, target),
    }


# --------------------------------------------------------------------------- prediction losses


@attrs.frozen(kw_only=True)
class PredictionParams:
    stop_gradient_target: bool = param(
        True,
        "detach the target latents (set false when a shared target encoder should learn "
        "from this loss, LeJEPA-style)",
    )


class _PredictionLoss(Loss):
    """Mean over the batch of ``per_sample(prediction [B, D], target [B, D]) -> [B]``."""

    Params = PredictionParams
    name = ""

    def per_sample(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, outputs: StepOutputs) -> LossOutput:
        prediction, target = outputs.prediction, outputs.target
        _check_pair(self.name, prediction, target)
        if self.params.stop_gradient_target:
            target = target.detach()
        value = self.per_sample(prediction.float(), target.float()).mean()
        return LossOutput(value=value, metrics=_prediction_metrics(prediction, target))


class L1Loss(_PredictionLoss):
    """Mean absolute error between prediction and target latents (mean over batch and D).

    Per sample: ``mean_d |prediction - target|``; value: mean over the batch, i.e. the MAE over
    all elements, the numerator of the error-to-signal ratio. Metrics: ``error_to_signal``,
    ``cosine``.
    """

    name = "l1"

    def per_sample(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).abs().mean(dim=-1)


class MSELoss(_PredictionLoss):
    """Mean squared error between prediction and target latents (mean over batch and D).

    Per sample: ``mean_d (prediction - target)^2``; value: mean over the batch. Metrics:
    ``error_to_signal``, ``cosine``.
    """

    name = "mse"

    def per_sample(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).square().mean(dim=-1)


@attrs.frozen(kw_only=True)
class SmoothL1Params(PredictionParams):
    beta: float = param(1.0, "quadratic below |error| < beta, linear above", positive)


class SmoothL1Loss(_PredictionLoss):
    """Huber-style smooth L1 between prediction and target latents (mean over batch and D).

    Per element ``0.5 e^2 / beta`` if ``|e| < beta`` else ``|e| - 0.5 beta``; per sample: mean
    over D; value: mean over the batch. Metrics: ``error_to_signal``, ``cosine``.
    """

    Params = SmoothL1Params
    name = "smooth_l1"

    def per_sample(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        elementwise = F.smooth_l1_loss(prediction, target, reduction="none", beta=self.params.beta)
        return elementwise.mean(dim=-1)


class CosineLoss(_PredictionLoss):
    """One minus the cosine similarity of prediction and target latents (mean over batch).

    Per sample: ``1 - cos(prediction, target)`` in [0, 2]; value: mean over the batch.
    Ignores the latents' norm. Metrics: ``error_to_signal``, ``cosine``.
    """

    name = "cosine"

    def per_sample(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(prediction, target, dim=-1, eps=1e-8)


# --------------------------------------------------------------------------- InfoNCE


class InfoNCELoss(Loss):
    """InfoNCE: retrieve each sample's target among the batch's targets (cross-entropy).

    Logits ``[B, B] = normalise(prediction) @ normalise(target).T / temperature``; per sample:
    cross-entropy with its own target as the positive; value: mean over the batch (not over
    B x B), so a model that learned nothing reads ``ln B``. ``symmetric`` averages with the
    target-to-prediction direction. A learnable temperature is a log-parameter of this module
    (the optimiser must include the loss's parameters), projected onto
    ``[min_temperature, max_temperature]`` before every use. Metrics: ``accuracy`` (top-1
    retrieval, prediction to target), ``temperature``, ``chance_level`` (``ln B``).

    ``negatives`` picks the candidates: ``batch`` (the batch's targets, above); ``episode``
    (the sample's own target against its own ``W`` context latents, the same episode at
    earlier times: logits ``[B, 1 + W]``, so the latents must tell the times of one episode
    apart rather than the episodes); ``batch_and_episode`` (both: ``[B, B + W]``). The context
    negatives keep their gradient (they push the context encoder's frames apart in time).

    Under DDP the negatives are the local batch's by default (``gather = false``: the value
    depends on the per-rank batch size). ``gather = true`` all-gathers the targets (and, when
    ``symmetric``, the predictions) of every rank: logits ``[B, B_global]``, positives at this
    rank's offset, ``chance_level`` ``ln B_global``; the gradient flows through the local part
    only (the other ranks' rows are constants here; each rank's own loss covers its rows).
    """

    @attrs.frozen(kw_only=True)
    class Params:
        temperature: float = param(
            0.1, "softmax temperature (initial value if learnable)", positive
        )
        learnable_temperature: bool = param(False, "learn the temperature (log-parameter)")
        min_temperature: float = param(0.01, "lower bound of a learnable temperature", positive)
        max_temperature: float = param(1.0, "upper bound of a learnable temperature", positive)
        symmetric: bool = param(False, "average both directions (prediction->target and back)")
        stop_gradient_target: bool = param(True, "detach the target latents")
        gather: bool = param(False, "under DDP, negatives from every rank's batch (all-gather)")
        negatives: Literal["batch", "episode", "batch_and_episode"] = param(
            "batch",
            "batch: the other samples' targets; episode: the sample's own context frames (the "
            "same episode at earlier times); batch_and_episode: both",
            one_of(("batch", "episode", "batch_and_episode")),
        )

        def __attrs_post_init__(self) -> None:
            if self.symmetric and self.negatives != "batch":
                raise ValueError(
                    f"symmetric: expected false with negatives = {self.negatives!r} (the "
                    "target-to-prediction direction has no episode negatives)"
                )
            if not self.min_temperature <= self.temperature <= self.max_temperature:
                raise ValueError(
                    f"temperature: expected a value in [min_temperature, max_temperature] = "
                    f"[{self.min_temperature}, {self.max_temperature}], got {self.temperature}"
                )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        log_temperature = torch.tensor(math.log(params.temperature))
        if params.learnable_temperature:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)
        self._log_bounds = (math.log(params.min_temperature), math.log(params.max_temperature))

    def temperature(self) -> torch.Tensor:
        """Current temperature, 0-d (projected into its range first when learnable)."""
        if self.params.learnable_temperature:
            with torch.no_grad():
                self.log_temperature.clamp_(*self._log_bounds)
        return self.log_temperature.exp()

    def _candidates(self, z: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``z: [B, D]`` -> (the rows to score against ``[B_global, D]``, this rank's offset
        in them): all ranks' rows with ``gather`` under a process group (the local part keeps
        its gradient), else ``z`` itself and 0."""
        if not self.params.gather:
            return z, 0
        from lejepa_core.training import distributed

        parts = distributed.all_gather_rows(z.detach())
        if len(parts) == 1:
            return z, 0
        rank = torch.distributed.get_rank()
        parts[rank] = z
        return torch.cat(parts), sum(part.shape[0] for part in parts[:rank])

    def forward(self, outputs: StepOutputs) -> LossOutput:
        prediction, target = outputs.prediction, outputs.target
        _check_pair("infonce", prediction, target)
        if self.params.stop_gradient_target:
            target = target.detach()
        temperature = self.temperature()
        prediction = F.normalize(prediction.float(), dim=-1)
        target = F.normalize(target.float(), dim=-1)
        negatives = self.params.negatives
        if negatives == "episode":
            logits = (prediction * target).sum(-1, keepdim=True) / temperature  # [B, 1]
            labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        else:
            all_targets, offset = self._candidates(target)  # [B_global, D]
            logits = prediction @ all_targets.T / temperature  # [B, B_global]
            labels = offset + torch.arange(logits.shape[0], device=logits.device)
        if negatives != "batch":
            context = F.normalize(outputs.context.float(), dim=-1)  # [B, W, D]
            own = torch.einsum("bd,bwd->bw", prediction, context) / temperature  # [B, W]
            logits = torch.cat([logits, own], dim=1)
        value = F.cross_entropy(logits, labels)
        if self.params.symmetric:
            all_predictions, _ = self._candidates(prediction)
            value = 0.5 * (
                value + F.cross_entropy(target @ all_predictions.T / temperature, labels)
            )
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        metrics = {
            "accuracy": accuracy,
            "temperature": temperature.detach(),
            "chance_level": math.log(logits.shape[1]),
        }
        return LossOutput(value=value, metrics=metrics)


# --------------------------------------------------------------------------- VICReg


def vicreg_variance(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """``mean_d relu(gamma - sqrt(var_d(z) + eps))`` of ``z: [N, D]`` (unbiased variance)."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def vicreg_covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal covariances of ``z: [N, D]``, divided by D."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (n - 1)
    off_diagonal = covariance - torch.diag_embed(torch.diagonal(covariance))
    return off_diagonal.square().sum() / d


def context_deltas(context: torch.Tensor) -> torch.Tensor:
    """context [B, W, D] -> [B, W - 1, D] float differences of consecutive frames (W >= 2)."""
    if context.ndim != 3 or context.shape[1] < 2:
        raise ValueError(
            "context_delta: needs context latents [B, W, D] with W >= 2 (data.context_frames), "
            f"got {tuple(context.shape)}"
        )
    context = context.float()
    return context[:, 1:] - context[:, :-1]


class VICRegLoss(Loss):
    """VICReg (Bardes, Ponce & LeCun 2022): variance, invariance and covariance terms.

    ``on = "prediction_target"``: invariance = MSE of prediction vs target (mean over batch
    and D), variance = mean of the two branches' hinge ``mean_d relu(gamma - std_d)``,
    covariance = sum over the two branches of ``sum_{i != j} C_ij^2 / D``, as in the official
    implementation. ``on = "context"``: variance and covariance of the context latents
    ``[B*W, D]`` alone (an anti-collapse regulariser for the encoder; no invariance term).
    ``on = "context_delta"``: the same on the differences of consecutive context frames
    ``[B*(W-1), D]``: the variance hinge keeps what changes within an episode from shrinking
    (its gradient does not vanish at zero, unlike SIGReg's on near-zero differences).
    Value: the weighted sum of the terms (weights 25, 25, 1 as in the paper). Metrics: the
    unweighted ``invariance``, ``variance``, ``covariance``. Needs at least 2 samples.
    """

    @attrs.frozen(kw_only=True)
    class Params:
        on: Literal["prediction_target", "context", "context_delta"] = param(
            "prediction_target",
            "prediction vs target, the context latents alone, or the differences of "
            "consecutive context frames (what changes within an episode)",
            one_of(("prediction_target", "context", "context_delta")),
        )
        invariance_weight: float = param(25.0, "weight of the MSE term (lambda)", non_negative)
        variance_weight: float = param(25.0, "weight of the std hinge term (mu)", non_negative)
        covariance_weight: float = param(1.0, "weight of the covariance term (nu)", non_negative)
        gamma: float = param(1.0, "target standard deviation of every dimension", positive)
        eps: float = param(1e-4, "added to the variance under the square root", positive)

    def forward(self, outputs: StepOutputs) -> LossOutput:
        p = self.params
        if p.on == "context":
            branches = [outputs.context.reshape(-1, outputs.context.shape[-1]).float()]
            invariance = None
        elif p.on == "context_delta":
            branches = [context_deltas(outputs.context).reshape(-1, outputs.context.shape[-1])]
            invariance = None
        else:
            _check_pair("vicreg", outputs.prediction, outputs.target)
            branches = [outputs.prediction.float(), outputs.target.float()]
            invariance = (branches[0] - branches[1]).square().mean()
        if branches[0].shape[0] < 2:
            raise ValueError(f"vicreg: expected at least 2 samples, got {branches[0].shape[0]}")
        variance = torch.stack([vicreg_variance(z, p.gamma, p.eps) for z in branches]).mean()
        covariance = torch.stack([vicreg_covariance(z) for z in branches]).sum()
        value = p.variance_weight * variance + p.covariance_weight * covariance
        metrics = {"variance": variance.detach(), "covariance": covariance.detach()}
        if invariance is not None:
            value = value + p.invariance_weight * invariance
            metrics["invariance"] = invariance.detach()
        return LossOutput(value=value, metrics=metrics)


# --------------------------------------------------------------------------- relational


def pairwise_distances(z: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of the ``B (B - 1) / 2`` pairs ``i < j`` of ``z: [B, D]``.

    Taken from the ``[B, B]`` distance matrix (``torch.cdist``, computed pair by pair rather
    than through the Gram form, so near-equal latents keep their precision): memory
    ``O(B^2)``, never the ``[pairs, D]`` differences. Zero distances get a zero gradient
    rather than NaN.
    """
    distances = torch.cdist(
        z.unsqueeze(0), z.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist"
    )[0]  # [B, B]
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    return distances[i, j]


class RelationalLoss(Loss):
    """Keeps the batch's pairwise-distance structure between context and target latents.

    Distances of all pairs ``i < j`` among the last context frame ``[B, D]`` and among the
    targets ``[B, D]``, each set divided by its own scale (``mean_distance``: its mean;
    ``total_variance``: ``sqrt(2 * sum_d var_d)``, the RMS pair distance), so the value does
    not change when the latent space spreads (multiply both by 1000: same loss). Value: mean
    over pairs of ``(d_context - d_target)^2`` or of smooth L1. Metrics: ``context_scale``,
    ``target_scale`` (the divisors: watch the latent space's spread there).
    """

    @attrs.frozen(kw_only=True)
    class Params:
        normalisation: Literal["mean_distance", "total_variance"] = param(
            "mean_distance", "divide each distance matrix by its mean or by sqrt(2 * total var)"
        )
        penalty: Literal["squared", "smooth_l1"] = param(
            "squared", "penalty on the difference of normalised distances"
        )
        beta: float = param(0.1, "smooth_l1 threshold, in normalised distance units", positive)
        eps: float = param(1e-8, "floor of the scale (a collapsed batch)", positive)

    def _scale(self, z: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        if self.params.normalisation == "mean_distance":
            scale = distances.mean()
        else:
            scale = torch.sqrt(2.0 * z.var(dim=0).sum())
        return scale.clamp_min(self.params.eps)

    def forward(self, outputs: StepOutputs) -> LossOutput:
        context, target = outputs.context[:, -1].float(), outputs.target.float()
        _check_pair("relational", context, target)
        if context.shape[0] < 2:
            raise ValueError(f"relational: expected at least 2 samples, got {context.shape[0]}")
        d_context, d_target = pairwise_distances(context), pairwise_distances(target)
        context_scale = self._scale(context, d_context)
        target_scale = self._scale(target, d_target)
        difference = d_context / context_scale - d_target / target_scale
        if self.params.penalty == "squared":
            value = difference.square().mean()
        else:
            zeros = torch.zeros_like(difference)
            value = F.smooth_l1_loss(difference, zeros, beta=self.params.beta)
        metrics = {"context_scale": context_scale.detach(), "target_scale": target_scale.detach()}
        return LossOutput(value=value, metrics=metrics)


# --------------------------------------------------------------------------- invariance


class InvarianceLoss(Loss):
    """Masked-view latents against the unmasked view's (detached): MSE or L1, mean over all.

    ``outputs.context`` [B, W, D] vs ``outputs.context_unmasked`` [B, W, D] (no gradient to
    the unmasked view); per sample: mean over W and D; value: mean over the batch. Metrics:
    ``error_to_signal``, ``cosine`` (over the [B*W, D] rows).
    """

    requires = frozenset({"context_unmasked"})

    @attrs.frozen(kw_only=True)
    class Params:
        distance: Literal["mse", "l1"] = param("mse", "squared or absolute difference")

    def forward(self, outputs: StepOutputs) -> LossOutput:
        if outputs.context_unmasked is None:
            raise TrainingError(
                "invariance: outputs.context_unmasked is None; the trainer must compute the "
                "unmasked view's latents for losses whose `requires` lists 'context_unmasked'"
            )
        masked, unmasked = outputs.context, outputs.context_unmasked.detach()
        if masked.shape != unmasked.shape:
            raise ValueError(
                f"invariance: expected context and context_unmasked of one shape [B, W, D], "
                f"got {tuple(masked.shape)} and {tuple(unmasked.shape)}"
            )
        difference = masked.float() - unmasked.float()
        elementwise = difference.square() if self.params.distance == "mse" else difference.abs()
        value = elementwise.reshape(elementwise.shape[0], -1).mean(dim=1).mean()
        rows_masked = masked.reshape(-1, masked.shape[-1])
        rows_unmasked = unmasked.reshape(-1, unmasked.shape[-1])
        return LossOutput(value=value, metrics=_prediction_metrics(rows_masked, rows_unmasked))


# --------------------------------------------------------------------------- registration

LOSSES: dict[str, type[Loss]] = {
    "l1": L1Loss,
    "mse": MSELoss,
    "smooth_l1": SmoothL1Loss,
    "cosine": CosineLoss,
    "infonce": InfoNCELoss,
    "sigreg": SIGRegLoss,
    "vicreg": VICRegLoss,
    "relational": RelationalLoss,
    "invariance": InvarianceLoss,
}


@hookimpl
def register_losses(register):
    for name, cls in LOSSES.items():
        register(name, cls)
