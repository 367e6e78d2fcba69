"""``lejepa eval``'s grid tables: the probe sanity line, the variance share, and per k the
decoded-grid figures and frame retrieval of the model against the baselines."""

from __future__ import annotations

from typing import Any

COLUMNS = {  # eval.json figure -> table heading
    "active_accuracy": "active acc",
    "object_recall": "obj recall",
    "exact_match": "exact grid",
    "cell_accuracy": "cell acc",
}
RETRIEVAL = ("model", "rollout", "copy_last", "chance")
RETRIEVAL_NAMES = {"copy_last": "copy last (target encoder)"}
NAMES = {
    "model": "model",
    "rollout": "rollout",
    "blank": "blank grid",
    "copy_last": "copy last grid",
    "constant_velocity": "constant velocity",
    "probe_floor": "probe floor",
    "chance": "chance",
}


def number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def sanity_lines(result: dict[str, Any]) -> list[str]:
    """The probe sanity line (both probes on the true target latents) and what it means,
    the variance share: plain text for the console and the report."""
    lines = []
    sanity = result.get("probe_sanity")
    if sanity:
        probes = ", ".join(
            f"{'grid probe' if name == 'grid' else 'plain ridge'}: object recall {number(sanity[name]['object_recall'])}, active-cell "
            f"accuracy {number(sanity[name]['active_accuracy'])}"
            for name in ("grid", "ridge")
            if name in sanity
        )
        lines.append(f"probe sanity (true target latents of validation windows): {probes}")
        lines.append(("" if sanity.get("ok") else "WARNING: ") + sanity.get("note", ""))
    share = result.get("within_episode_share")
    if share is not None:
        lines.append(
            f"within-episode share of target-latent variance: {share:.4f} (near 0: the latent "
            "says which episode, not which moment)"
        )
    return lines


def print_grid(result: dict[str, Any], console: Any, table_class: Any, *, caption: str) -> None:
    """Print the sanity lines and the per-k table (estimators as rows, figures as columns)."""
    console.print(
        "probe cell accuracy (ridge, target latents -> grid): "
        f"{number(result.get('probe_cell_accuracy'))}; grid rules: "
        f"{result.get('grid_rules', 'generic')}"
    )
    for line in sanity_lines(result):
        console.print(line, markup=False, highlight=False)
    table = table_class(
        title="decoded predicted grids (grid probe: prior-balanced ridge)", caption=caption
    )
    for heading in ("k", "estimator", *COLUMNS.values()):
        table.add_column(heading, justify="left" if heading == "estimator" else "right")
    estimators = result["estimators"]
    for row in result["per_k"]:
        for i, estimator in enumerate(estimators):
            table.add_row(
                str(row["k"]) if i == 0 else "",
                NAMES.get(estimator, estimator),
                *(number(row.get(f"{estimator}/{figure}")) for figure in COLUMNS),
                end_section=i == len(estimators) - 1,
            )
    console.print(table)
    table = table_class(
        title="frame retrieval (no decoder): the nearest target latent of the sample's "
        "validation episode is the true frame t+k",
    )
    for heading in ("k", *(RETRIEVAL_NAMES.get(name, NAMES[name]) for name in RETRIEVAL)):
        table.add_column(heading, justify="right")
    for row in result["per_k"]:
        table.add_row(str(row["k"]), *(number(row.get(f"{name}/retrieval")) for name in RETRIEVAL))
    console.print(table)
