"""The one probe: ridge regression from latents to the state (or one-hot grid cells).

Shape legend: ``N`` samples, ``D`` latent_dim, ``S`` flattened state features, ``C`` cells,
``V`` cell values. Evaluation and the report fit the same probe on the same samples.
"""

from __future__ import annotations

import attrs
import torch


def ridge_fit(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression ``y ~ x @ weight + bias`` in float64 on centred data.

    x: [N, D], y: [N, S] -> weight [D, S], bias [S]. ``alpha`` is relative to the mean
    eigenvalue of ``x^T x`` (scale-free).
    """
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    ridge = alpha * gram.diagonal().mean().clamp_min(1e-12)
    weight = torch.linalg.solve(
        gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), xc.T @ yc
    )
    return weight, y_mean - x_mean @ weight


def ridge_predict(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x: [N, D] -> [N, S] (float32)."""
    return (x.double() @ weight + bias).float()


def r2_score(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """1 - SS_res / SS_tot summed over all columns of ``[N, S]`` (each column centred on its
    own mean): the fraction of the group's variance explained."""
    prediction, target = prediction.double(), target.double()
    ss_res = (prediction - target).square().sum()
    ss_tot = (target - target.mean(0)).square().sum()
    return float(1.0 - ss_res / ss_tot.clamp_min(1e-300))


def one_hot_cells(grids: torch.Tensor, cell_values: int) -> torch.Tensor:
    """[N, *grid] ints in ``0 .. cell_values-1`` -> [N, C * V] float one-hot."""
    flat = grids.reshape(grids.shape[0], -1).long().clamp(0, cell_values - 1)
    return torch.nn.functional.one_hot(flat, cell_values).reshape(flat.shape[0], -1).float()


def decode_cells(scores: torch.Tensor, shape: tuple[int, ...], cell_values: int) -> torch.Tensor:
    """[N, C * V] scores -> [N, *shape] the highest-scoring value of each cell."""
    n = scores.shape[0]
    return scores.reshape(n, -1, cell_values).argmax(-1).reshape(n, *shape)


@attrs.frozen(kw_only=True)
class Probe:
    """A fitted ridge probe. ``decode(z [N, D])`` -> ``[N, *target_shape]``: float state, or
    the integer grid when ``cell_values`` is set (one-hot regression decoded by argmax)."""

    weight: torch.Tensor  # [D, S] or [D, C * V], float64
    bias: torch.Tensor
    target_shape: tuple[int, ...]
    cell_values: int | None = None
    alpha: float = 1e-3
    samples: int = 0  # N of the fit

    @classmethod
    def fit(
        cls,
        z: torch.Tensor,
        targets: torch.Tensor,
        *,
        cell_values: int | None = None,
        alpha: float = 1e-3,
    ) -> Probe:
        """z [N, D], targets [N, *target_shape] (ints in ``0..cell_values-1`` for grids)."""
        y = (
            one_hot_cells(targets, cell_values)
            if cell_values is not None
            else targets.flatten(1).float()
        )
        weight, bias = ridge_fit(z.float(), y, alpha)
        return cls(
            weight=weight,
            bias=bias,
            target_shape=tuple(targets.shape[1:]),
            cell_values=cell_values,
            alpha=alpha,
            samples=int(z.shape[0]),
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        scores = ridge_predict(z.float(), self.weight, self.bias)
        if self.cell_values is not None:
            return decode_cells(scores, self.target_shape, self.cell_values)
        return scores.reshape(z.shape[0], *self.target_shape)
