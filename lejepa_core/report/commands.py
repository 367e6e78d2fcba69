"""``lejepa report`` and ``lejepa compare`` (added to the CLI group by ``lejepa_core.cli``).

Domain errors are raised, never printed: the group maps them to exit codes (a directory that
is not a run directory is a ``CheckpointError``: one line, exit 2). The report's modules
(matplotlib, Jinja2, torch) are imported inside the commands, so ``lejepa --help`` stays light.
"""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--model/--no-model",
    "model_pictures",
    default=True,
    show_default=True,
    help="Load the best checkpoint and the data file for the latent PCA and the rollouts / grids.",
)
@click.option(
    "--episodes",
    type=click.IntRange(1, 12),
    default=3,
    show_default=True,
    help="Validation episodes in the model pictures.",
)
@click.option(
    "--max-k",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Largest horizon the model pictures predict.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Device for the model pictures (cpu, cuda, ...).",
)
def report_command(run_dir, model_pictures, episodes, max_k, device) -> None:
    """Write RUN_DIR/report/report.html (self-contained, pictures embedded) and its PNGs:
    curves, per-k figures, latent PCA, rollouts. See docs/report.md."""
    from lejepa_core.report.page import write_report

    path = write_report(
        run_dir, model_pictures=model_pictures, device=device, episodes=episodes, max_k=max_k
    )
    click.echo(f"written: {path}")


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="compare.html",
    show_default=True,
    help="The HTML file to write (self-contained, pictures embedded).",
)
def compare_command(run_dirs, out) -> None:
    """Draw the curves of several runs on shared axes (legend: run directory names), with their
    summaries and the recipe keys that differ, in one HTML file."""
    from lejepa_core.report.page import write_compare

    path = write_compare(list(run_dirs), out)
    click.echo(f"written: {path}")
