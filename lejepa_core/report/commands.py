"""``lejepa report`` and ``lejepa compare`` (added to the CLI group by ``lejepa_core.cli``).

Domain errors are raised, never printed: the group maps them to exit codes (a directory that
is not a run directory is a ``CheckpointError``: one line, exit 2). The report's modules
(matplotlib, Jinja2, torch) are imported inside the commands, so ``lejepa --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from lejepa_core.errors import CheckpointError

RUN_TEXT_FILES = ("resolved_recipe.toml", "metrics.jsonl", "summary.json", "eval.json")


def _not_utf8(run_dirs: list[str]) -> CheckpointError:
    """The one-line error naming the first file of ``run_dirs`` that is not UTF-8 text (the
    ``UnicodeDecodeError`` a reader raised does not say which file it was reading)."""
    for run_dir in run_dirs:
        for name in RUN_TEXT_FILES:
            path = Path(run_dir) / name
            try:
                path.read_bytes().decode("utf-8")
            except OSError:
                continue
            except UnicodeDecodeError as exc:
                return CheckpointError(
                    f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                    f"{exc.start}); a run's files are UTF-8"
                )
    return CheckpointError(f"{', '.join(run_dirs)}: a file of the run is not UTF-8 text")


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

    try:
        path = write_report(
            run_dir, model_pictures=model_pictures, device=device, episodes=episodes, max_k=max_k
        )
    except UnicodeDecodeError:
        raise _not_utf8([run_dir]) from None
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

    try:
        path = write_compare(list(run_dirs), out)
    except UnicodeDecodeError:
        raise _not_utf8(list(run_dirs)) from None
    click.echo(f"written: {path}")
