"""Integer-grid evaluation (ARC and any env whose observations are grids of cell values).

Shape legend: ``N`` samples, ``*grid`` one observation (``[H, W]``).

The probe is ridge regression from latents onto one-hot cells (``cell_values`` from the env's
metadata, ``LoadedRun.cell_values()``), decoded by argmax. Figures: the probe's cell accuracy
on validation target frames, and per k the cell accuracy of decoded predicted grids (direct and
rolled out) against copying the last context grid, beside the probe floor (the true target
latents decoded: the probe's own share of the error, no prediction involved).
"""

from __future__ import annotations

from typing import Any

import torch

from lejepa_core.eval.probe import Probe
from lejepa_core.eval.samples import PROBE_FLOOR, Samples, estimators_in


def cell_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of equal cells of two ``[N, *grid]`` integer tensors."""
    return float((predicted.long() == truth.long()).float().mean())


@torch.no_grad()
def evaluate_grid(probe: Probe, val: Samples, per_k: dict[int, Samples]) -> dict[str, Any]:
    """eval.json's grid figures: ``cell_values``, ``probe_cell_accuracy`` and ``per_k`` rows
    (``model/cell_accuracy``, ``rollout/cell_accuracy`` where there is a rollout,
    ``copy_last/cell_accuracy``, ``probe_floor/cell_accuracy``)."""
    if probe.cell_values is None:
        raise ValueError("evaluate_grid: the probe was fitted without cell_values")
    rows = []
    for k, samples in per_k.items():
        truth = samples.target_state
        row = {
            "k": k,
            "samples": samples.size,
            "model/cell_accuracy": cell_accuracy(probe.decode(samples.z_hat), truth),
        }
        if samples.z_rollout is not None:
            row["rollout/cell_accuracy"] = cell_accuracy(probe.decode(samples.z_rollout), truth)
        row["copy_last/cell_accuracy"] = cell_accuracy(samples.last_state, truth)
        row[f"{PROBE_FLOOR}/cell_accuracy"] = cell_accuracy(probe.decode(samples.z_target), truth)
        rows.append(row)
    return {
        "kind": "grid",
        "cell_values": probe.cell_values,
        "estimators": estimators_in(rows, "cell_accuracy"),
        "probe_cell_accuracy": cell_accuracy(probe.decode(val.z_target), val.target_state),
        "per_k": rows,
    }
