"""The grid probe: ridge regression onto one-hot cells, decoded so that objects can win.

A ridge probe decoded by plain argmax regresses every cell towards its mean, and an object
value (about 2 % of ARC cells, 0.2 % per colour) never beats the background unless the latent
is nearly certain: it decodes blank grids from latents that do hold the objects. This probe
divides each cell's scores by the value's prior at that cell (its frequency among the fit's
grids, floored at ``PRIOR_FLOOR``) raised to ``BALANCE`` before the argmax: a value whose
score rises well above its prior wins. Closed form (the ridge of ``probe.ridge_fit``), one
solve, deterministic. Only cells whose value varies among the fit's grids are regressed (on a
16 x 16 procedural grid padded to 30 x 30: 256 of 900); the others decode as the value they
always held.

Measured on hand-made latents of procedural grids (a random linear map of the in-grid one-hot
cells; ``benchmarks/grid_probe.py``, docs/metrics.md#grid-figures): D = 256, object recall 0.32
(plain argmax) -> 0.67 (BALANCE 0.25), cell accuracy 0.986 -> 0.990; D = 2560 (the map is
invertible): 0.96 -> 0.98. A one-hidden-layer MLP probe trained with object-weighted
cross-entropy (600 Adam steps, ~1,000 fit samples) reached 0.21 / 0.27: it is not shipped.

Shape legend: ``N`` samples, ``D`` latent_dim, ``H x W`` one grid, ``C`` varying cells,
``V`` cell values.
"""

from __future__ import annotations

import attrs
import torch

from lejepa_core.eval.grid_rules import GridRules
from lejepa_core.eval.probe import one_hot_cells, ridge_fit, ridge_predict

BALANCE = 0.25
PRIOR_FLOOR = 1e-3


@attrs.define(kw_only=True)
class _BalancedRidge:
    """What both grid probes hold: a ridge onto one-hot cells and each cell's value prior."""

    weight: torch.Tensor  # float64 ridge weights
    bias: torch.Tensor
    prior: torch.Tensor  # [..., V] value frequency per decoded cell (floored)
    varying: torch.Tensor  # bool: the cells the ridge decodes
    constant: torch.Tensor  # long: the value of every other cell
    rules: GridRules
    samples: int
    alpha: float
    balance: float

    def _balanced_values(self, scores: torch.Tensor) -> torch.Tensor:
        """Cell scores [N, C, V] (C cells, in ``prior``'s order) -> values [N, C]: the argmax
        of score / prior^balance (``rules.decode``)."""
        prior = self.prior.reshape(-1, self.prior.shape[-1])
        return self.rules.decode(scores / prior**self.balance)


@attrs.define(kw_only=True)
class GridProbe(_BalancedRidge):
    """A fitted prior-balanced ridge grid probe: ``decode(z [N, D])`` -> ``[N, H, W]``.
    ``weight`` [D, C * V], ``prior`` [C, V] (C varying cells), ``varying`` / ``constant``
    [H*W]."""

    shape: tuple[int, int]

    @classmethod
    def fit(
        cls,
        z: torch.Tensor,
        grids: torch.Tensor,
        rules: GridRules,
        *,
        alpha: float = 1e-3,
        balance: float = BALANCE,
    ) -> GridProbe:
        """Fit on latents ``z`` [N, D] of grids [N, H, W] (ints in ``0 .. V-1``)."""
        z = z.detach().float().cpu()
        grids = grids.long().cpu().clamp(0, rules.cell_values - 1)
        n, v = z.shape[0], rules.cell_values
        flat = grids.flatten(1)  # [N, H*W]
        varying = (flat != flat[:1]).any(0)  # [H*W]
        y = one_hot_cells(flat[:, varying], v)  # [N, C * V]
        weight, bias = ridge_fit(z, y, alpha)
        prior = y.reshape(n, -1, v).mean(0).clamp_min(PRIOR_FLOOR)  # [C, V]
        return cls(
            weight=weight,
            bias=bias,
            prior=prior,
            varying=varying,
            constant=flat[0].clone(),
            shape=tuple(grids.shape[1:]),
            rules=rules,
            samples=n,
            alpha=alpha,
            balance=balance,
        )

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, D] -> [N, H, W] long (on z's device)."""
        n = z.shape[0]
        out = self.constant.repeat(n, 1)  # [N, H*W]
        if bool(self.varying.any()):
            scores = ridge_predict(z.detach().float().cpu(), self.weight, self.bias)
            out[:, self.varying] = self._balanced_values(
                scores.reshape(n, -1, self.rules.cell_values)
            )
        return out.reshape(n, *self.shape).to(z.device)


@attrs.define(kw_only=True)
class LocalGridProbe(_BalancedRidge):
    """The grid probe of a grid latent (``ModelSpec.latent_grid``): one ridge shared by every
    location maps its ``C`` features to its ``P x P`` cells' one-hot values, decoded with the
    same per-cell prior balance as ``GridProbe``. A linear read-out of each location alone
    (a 1 x 1 convolution), so it tests that the features *at* a place hold that place's cells.
    Cells outside the latent's region or never varying in the fit decode as their constant
    value. ``decode(z [N, R*Q*C])`` -> ``[N, H, W]``. ``weight`` [C, P*P*V], ``prior``
    [R*P, Q*P, V] (every cell of the region), ``varying`` / ``constant`` [H, W]."""

    layout: tuple[int, int, int, int]  # R, Q, C, P

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.constant.shape)

    @classmethod
    def fit(
        cls,
        z: torch.Tensor,
        grids: torch.Tensor,
        rules: GridRules,
        layout: tuple[int, int, int, int],
        *,
        alpha: float = 1e-3,
        balance: float = BALANCE,
    ) -> LocalGridProbe:
        """Fit on grid latents ``z`` [N, R*Q*C] of grids [N, H, W]; ``layout`` (R, Q, C, P)."""
        rows, cols, channels, patch = layout
        v = rules.cell_values
        grids = grids.long().cpu().clamp(0, v - 1)
        n, height, width = grids.shape
        region = grids[:, : rows * patch, : cols * patch]  # [N, R*P, Q*P]
        x = z.detach().float().cpu().reshape(n * rows * cols, channels)
        y = _patch_one_hot(region, patch, v)  # [N*R*Q, P*P*V]
        weight, bias = ridge_fit(x, y, alpha)
        varying = torch.zeros(height, width, dtype=torch.bool)
        varying[: rows * patch, : cols * patch] = (region != region[:1]).any(0)
        prior = torch.nn.functional.one_hot(region, v).double().mean(0).clamp_min(PRIOR_FLOOR)
        return cls(
            weight=weight,
            bias=bias,
            prior=prior,
            varying=varying,
            constant=grids[0].clone(),
            layout=(rows, cols, channels, patch),
            rules=rules,
            samples=n,
            alpha=alpha,
            balance=balance,
        )

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, R*Q*C] -> [N, H, W] long (on z's device)."""
        rows, cols, channels, patch = self.layout
        n, v = z.shape[0], self.rules.cell_values
        x = z.detach().float().cpu().reshape(n * rows * cols, channels)
        scores = ridge_predict(x, self.weight, self.bias).double()  # [N*R*Q, P*P*V]
        scores = scores.reshape(n, rows, cols, patch, patch, v).permute(0, 1, 3, 2, 4, 5)
        scores = scores.reshape(n, rows * patch * cols * patch, v)
        decoded = self._balanced_values(scores).reshape(n, rows * patch, -1)
        out = self.constant.repeat(n, 1, 1)  # [N, H, W]
        region = out[:, : rows * patch, : cols * patch]
        keep = self.varying[: rows * patch, : cols * patch]
        region[:, keep] = decoded[:, keep]
        return out.to(z.device)


def _patch_one_hot(region: torch.Tensor, patch: int, cell_values: int) -> torch.Tensor:
    """[N, R*P, Q*P] ints -> [N*R*Q, P*P*V] one-hot of each location's cells (row-major)."""
    n, height, width = region.shape
    rows, cols = height // patch, width // patch
    blocks = region.reshape(n, rows, patch, cols, patch).permute(0, 1, 3, 2, 4)
    return one_hot_cells(blocks.reshape(n * rows * cols, patch * patch), cell_values)
