"""SIGReg: LeJEPA's sketched isotropic-Gaussian regulariser (Balestriero & LeCun, 2025).

Shape legend: ``N`` samples, ``D`` latent_dim, ``M`` directions, ``T`` quadrature points.

The latents are projected on ``M`` random unit directions; each 1-D projection's empirical
characteristic function (ECF) is compared with the standard normal's, ``exp(-t^2/2)``, by the
Epps-Pulley statistic

    EP = N * integral over t of |ecf(t) - exp(-t^2/2)|^2 * exp(-t^2/2) dt,

integrated on ``[-t_max, t_max]`` with the trapezoid rule on ``T`` points of ``[0, t_max]``
(the integrand is even, so the weights of ``t > 0`` are doubled), as in the reference code
(``rbalestr-lab/lejepa``, ``SIGReg`` in MINIMAL.md and ``univariate/epps_pulley.py``). The loss
is the mean of EP over the directions.

Scale of the number: for ``N`` *independent* samples of an isotropic standard Gaussian,
``E[N * |ecf(t) - phi(t)|^2] = 1 - exp(-t^2)`` exactly, whatever ``N``, so the expected value
is a constant of the grid: ``null_level(17, 3.0) = 1.0525`` (the continuous integral over the
whole line is ``sqrt(2 pi) (1 - 1/sqrt 3) = 1.059``). A collapsed batch has an ECF that does
not converge to ``phi`` and its statistic grows linearly with ``N``. Samples that are not
independent read more: the W context frames of one window, flattened, are nearly W copies of
each sample and read up to W x the null level (``per_frame`` avoids it).

The statistic is N x a divergence, so at a fixed weight its pull grows with the batch while a
mean-reduced loss's does not; ``normalize`` divides it by N (a weight that means the same at
any batch and world size).
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch

from lejepa_core import Loss, LossOutput, StepOutputs
from lejepa_core.params import param, positive

#: Added to ``outputs.step`` to seed the fallback generator when ``outputs.generator`` is None.
FALLBACK_SEED = 0x51C4E6


def quadrature(num_points: int, t_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid of the Epps-Pulley integral.

    Returns ``t: [T]`` (``linspace(0, t_max, T)``), ``phi: [T]`` (``exp(-t^2/2)``, the standard
    normal's characteristic function, also the integration window) and ``weights: [T]``
    (trapezoid weights doubled for the mirrored ``t < 0`` half, times the window).
    """
    t = torch.linspace(0.0, t_max, num_points, dtype=torch.float64)
    dt = t_max / (num_points - 1)
    trapezoid = torch.full((num_points,), 2.0 * dt, dtype=torch.float64)
    trapezoid[0] = trapezoid[-1] = dt
    phi = torch.exp(-0.5 * t.square())
    return t.float(), phi.float(), (trapezoid * phi).float()


def null_level(num_points: int = 17, t_max: float = 3.0) -> float:
    """Expected SIGReg value for isotropic standard Gaussian samples (any ``N``): the grid's
    integral of ``1 - exp(-t^2)``."""
    t, _, weights = quadrature(num_points, t_max)
    return float((weights.double() * (1.0 - torch.exp(-t.double().square()))).sum())


def random_directions(
    dim: int, num_directions: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``[D, M]`` unit columns drawn from ``generator`` (on its device), moved to ``device``."""
    directions = torch.randn(
        dim, num_directions, generator=generator, device=generator.device, dtype=torch.float32
    )
    directions = directions / directions.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return directions.to(device)


def _distributed_world_size() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (identity without torch.distributed).

    The backward pass sums the gradients over ranks too, so after DDP averages parameter
    gradients each sample receives exactly the gradient of the one global statistic.
    """
    if _distributed_world_size() == 1:
        return tensor
    from torch.distributed import _functional_collectives as functional

    # the supported differentiable form (torch.distributed.nn.functional is deprecated in
    # 2.13); its backward is an all-reduce (sum) of the gradients
    return functional.all_reduce(tensor, "sum", torch.distributed.group.WORLD)


def epps_pulley(
    projections: torch.Tensor,
    num_points: int = 17,
    t_max: float = 3.0,
    grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Epps-Pulley statistic of each column of ``projections: [N, M]`` against N(0, 1).

    ``grid``: ``quadrature(num_points, t_max)`` already on the right device (optional).
    Returns ``(statistic: [M], num_samples: 0-d)``. Under torch.distributed the
    characteristic-function sums and the sample count are all-reduced (one call, gradients
    intact), so ``N`` is the global batch and the statistic is that of the global batch.
    """
    if grid is None:
        grid = quadrature(num_points, t_max)
    t, phi, weights = (x.to(projections.device) for x in grid)
    x_t = projections.float().unsqueeze(-1) * t  # [N, M, T]
    num_directions, num_points = projections.shape[1], t.shape[0]
    count = torch.full((1,), float(projections.shape[0]), device=projections.device)
    sums = torch.cat([x_t.cos().sum(0).flatten(), x_t.sin().sum(0).flatten(), count])
    sums = _all_reduce_sum(sums)
    num_samples = sums[-1].detach()
    cos_mean, sin_mean = (sums[:-1] / num_samples).view(2, num_directions, num_points)
    error = (cos_mean - phi).square() + sin_mean.square()  # [M, T]
    return (error @ weights) * num_samples, num_samples


def sigreg_statistic(
    z: torch.Tensor,
    directions: torch.Tensor,
    num_points: int = 17,
    t_max: float = 3.0,
    grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SIGReg of ``z: [N, D]`` along ``directions: [D, M]`` (unit columns).

    Returns ``(mean over directions of the Epps-Pulley statistic: 0-d, N: 0-d)``.
    """
    if z.ndim != 2 or directions.ndim != 2 or z.shape[1] != directions.shape[0]:
        raise ValueError(
            f"sigreg: expected z [N, D] and directions [D, M], got {tuple(z.shape)} and "
            f"{tuple(directions.shape)}"
        )
    projections = z.float() @ directions.float()  # [N, M]
    statistic, num_samples = epps_pulley(projections, num_points, t_max, grid)
    return statistic.mean(), num_samples


class SIGRegLoss(Loss):
    """LeJEPA's SIGReg: Epps-Pulley test of random 1-D projections against N(0, 1), x N.

    Reads ``outputs.context`` ([B, W, D], flattened to [B*W, D], or frame by frame with
    ``per_frame``), ``outputs.target`` or ``outputs.prediction`` ([B, D]) according to ``on``;
    ``"both"`` averages the context's and the target's statistics. Directions are fresh every
    step, drawn from ``outputs.generator`` (identically seeded on every rank) or, when it is
    None, from a generator seeded with ``FALLBACK_SEED + outputs.step``.

    Value: mean over directions (and frames), near ``null_level`` (1.05 for the default grid)
    for a healthy isotropic standard Gaussian batch of independent samples whatever its size;
    it grows linearly with N for a collapsed one. The W context frames of one window are not
    independent: flattened, Gaussian frames read up to W x ``null_level`` (as many near-copies
    of each sample); ``per_frame`` computes the statistic of each frame (N = B) and averages,
    so ``null_level`` applies again. ``normalize`` divides by N̄ (the mean N of the statistics
    averaged), giving a divergence whose weight means the same at any batch size and world size.

    Metrics: ``null_level`` (the grid's constant), ``null_level_effective`` (what Gaussian
    latents read for what is fed in, on the value's scale: W x null_level for flattened
    context frames, divided by N̄ when normalised), ``num_samples`` (N of the first statistic),
    ``weight_scale`` (N̄, or 1 when normalised: the value is weight_scale x a divergence, and
    the trainer logs ``effective_weight`` = weight x weight_scale) and, for ``"both"``,
    ``context`` and ``target`` (each statistic, unnormalised).
    """

    @attrs.frozen(kw_only=True)
    class Params:
        on: Literal["context", "target", "both", "prediction"] = param(
            "context",
            "which latents to regularise (context: its W frames flattened, or frame by frame "
            "with per_frame)",
        )
        num_directions: int = param(256, "random unit directions per step (M)", positive)
        num_points: int = param(17, "quadrature points in [0, t_max] (T, at least 2)", positive)
        t_max: float = param(3.0, "upper end of the integration grid", positive)
        per_frame: bool = param(
            False,
            "context: one statistic per context frame (N = B), averaged over the W frames, so "
            "null_level applies; flattened, the W correlated frames of a window read up to "
            "W x null_level even when Gaussian",
        )
        normalize: bool = param(
            False,
            "divide the statistic by N (batch x frames x world size): a divergence whose weight "
            "means the same at any batch and world size; to keep a recipe's figures, multiply "
            "its weight by N (the logged weight_scale)",
        )

        def __attrs_post_init__(self) -> None:
            if self.num_points < 2:
                raise ValueError(f"num_points: expected at least 2, got {self.num_points}")

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.null_level = null_level(params.num_points, params.t_max)
        t, phi, weights = quadrature(params.num_points, params.t_max)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("phi", phi, persistent=False)
        self.register_buffer("weights", weights, persistent=False)

    def _generator(self, outputs: StepOutputs, device: torch.device) -> torch.Generator:
        if outputs.generator is not None:
            return outputs.generator
        generator = torch.Generator(device=device)
        generator.manual_seed(FALLBACK_SEED + int(outputs.step))
        return generator

    def _latents(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        """name -> latents [B, W, D] (context) or [B, D]."""
        on = self.params.on
        return {
            "context": {"context": outputs.context},
            "target": {"target": outputs.target},
            "prediction": {"prediction": outputs.prediction},
            "both": {"context": outputs.context, "target": outputs.target},
        }[on]

    def _statistic(
        self, z: torch.Tensor, directions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """z: [B, W, D] or [B, D] -> (statistic: 0-d, N: 0-d, its null level in units of
        ``null_level``: W for flattened frames of a window, else 1)."""
        grid = (self.t, self.phi, self.weights)
        if z.ndim == 3 and self.params.per_frame:
            batch, frames = z.shape[:2]
            projections = (z.float() @ directions.float()).reshape(batch, -1)  # [B, W*M]
            statistic, num_samples = epps_pulley(projections, grid=grid)  # [W*M], N = B
            return statistic.mean(), num_samples, 1.0
        frames = z.shape[1] if z.ndim == 3 else 1
        statistic, num_samples = sigreg_statistic(z.reshape(-1, z.shape[-1]), directions, grid=grid)
        return statistic, num_samples, float(frames)

    def forward(self, outputs: StepOutputs) -> LossOutput:
        latents = self._latents(outputs)
        first = next(iter(latents.values()))
        generator = self._generator(outputs, first.device)
        directions = random_directions(
            first.shape[-1], self.params.num_directions, generator, first.device
        )
        statistics = {name: self._statistic(z, directions) for name, z in latents.items()}
        value = torch.stack([s for s, _, _ in statistics.values()]).mean()
        counts = torch.stack([n for _, n, _ in statistics.values()])
        null = self.null_level * sum(w for _, _, w in statistics.values()) / len(statistics)
        scale = counts.mean()  # N̄: the value is N̄ x a divergence
        weight_scale = scale
        if self.params.normalize:
            value, null, weight_scale = value / scale, null / scale, torch.ones_like(scale)
        metrics: dict[str, object] = {
            "null_level": self.null_level,
            "null_level_effective": null,
            "num_samples": counts[0],
            "weight_scale": weight_scale,
        }
        if len(statistics) > 1:
            metrics.update({name: s.detach() for name, (s, _, _) in statistics.items()})
        return LossOutput(value=value, metrics=metrics)


__all__ = [
    "FALLBACK_SEED",
    "SIGRegLoss",
    "epps_pulley",
    "null_level",
    "quadrature",
    "random_directions",
    "sigreg_statistic",
]
