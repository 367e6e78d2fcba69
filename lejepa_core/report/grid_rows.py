"""The grid lines of the report's summary: the probe sanity line and the variance share
(``eval.json`` of a grid run; nothing for other runs)."""

from __future__ import annotations

from typing import Any

from lejepa_core.eval.grid_table import number


def grid_rows(evaluation: dict[str, Any]) -> list[list[str]]:
    """Summary rows: each probe on the true target latents, the within-episode share."""
    rows = []
    sanity = evaluation.get("probe_sanity") or {}
    for name, label in (("grid", "grid probe"), ("ridge", "plain ridge probe")):
        if name in sanity:
            figures = sanity[name]
            rows.append(
                [
                    f"{label} on true target latents (eval.json)",
                    f"object recall {number(figures['object_recall'])}, active-cell accuracy "
                    f"{number(figures['active_accuracy'])}",
                ]
            )
    share = evaluation.get("within_episode_share")
    if share is not None:
        rows.append(["within-episode share of target-latent variance (eval.json)", number(share)])
    return rows


def grid_notes(evaluation: dict[str, Any]) -> list[str]:
    """The page's warning when the grid probe cannot recover the objects from the true
    target latents: then no decoded grid figure says anything about the prediction."""
    sanity = evaluation.get("probe_sanity") or {}
    if sanity and not sanity.get("ok", True):
        return [f"probe sanity: {sanity.get('note', '')}"]
    return []
