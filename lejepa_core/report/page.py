"""The HTML pages: ``write_report`` (one run) and ``write_compare`` (several runs).

The pages are Jinja2 templates (``templates/``, ``autoescape=True``: every run name, recipe
value and note is escaped by the template, none by hand). ``report.html`` is self-contained:
every picture is embedded as a base64 PNG data URI, so the file opens offline and can be
mailed on its own; the same pictures are written as PNG files beside it.

    resolved_recipe.toml, summary.json  -> the header (health checks, summary table, the recipe)
    metrics.jsonl                        -> curves, per-k table (figures.CURVES, PER_K)
    eval.json (after ``lejepa eval``)    -> probe-decoded errors per k
    checkpoints/best.pt (else last.pt)   -> latent PCA, rollouts or grids (figures.MODEL)
      + the data file of the recipe         (eval.load.load_run rebuilds the model)
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from lejepa_core import __version__, artifacts
from lejepa_core.errors import CheckpointError, LejepaError
from lejepa_core.report import figures
from lejepa_core.report.curves import Curves
from lejepa_core.report.grid_rows import grid_notes, grid_rows
from lejepa_core.report.per_k import fmt, per_k
from lejepa_core.report.run_files import HEALTH_COLUMNS, RunFiles, read_run
from lejepa_core.report.views import load_views

REPORT_DIR = "report"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("lejepa_core.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    """A page from ``templates/<template>``, with the title stamp every page carries."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return _TEMPLATES.get_template(template).render(stamp=stamp, version=__version__, **context)


def summary_rows(run: RunFiles) -> list[list[str]]:
    """Key figures of summary.json (plain values) and eval.json (probe quality)."""
    rows = [["run directory", str(run.path)]]
    summary = run.summary.to_dict() if run.summary is not None else {}
    for key, value in summary.items():
        if not isinstance(value, (dict, list)):
            rows.append([key, fmt(value)])
    evaluation = run.evaluation or {}
    for group, value in evaluation.get("r2", {}).items():
        rows.append([f"probe R^2 ({group}, eval.json)", fmt(value)])
    if "probe_cell_accuracy" in evaluation:
        rows.append(["probe cell accuracy (eval.json)", fmt(evaluation["probe_cell_accuracy"])])
    rows += grid_rows(evaluation)
    return rows


def health_rows(run: RunFiles) -> list[list[str]] | None:
    """summary.json's tripped health checks, one row of ``HEALTH_COLUMNS`` each; ``[]`` when
    every check passed; None when the run recorded no checks (the page leaves them out)."""
    if run.health is None:
        return None
    return [[fmt(entry.get(column)) for column in HEALTH_COLUMNS] for entry in run.health]


def _model_pictures(
    run: RunFiles, *, device: str, episodes: int, max_k: int
) -> tuple[list[figures.Picture], list[str]]:
    try:
        views = load_views(run, device=device, episodes=episodes, max_k=max_k)
    except (figures.NotDrawn, LejepaError) as exc:
        return [], [f"latent and rollout pictures skipped: {exc}"]
    try:
        return figures.draw(figures.MODEL, views)
    finally:
        views.loaded.data.close()


def _clear_old_pictures(folder: Path) -> None:
    """Remove PNGs an earlier report wrote (known names only) so no stale picture remains."""
    for entry in figures.FIGURES:
        (folder / f"{entry.stem}.png").unlink(missing_ok=True)


def write_report(
    run_dir: str | Path,
    *,
    model_pictures: bool = True,
    device: str = "cpu",
    episodes: int = 3,
    max_k: int = 10,
) -> Path:
    """Write ``RUN_DIR/report/report.html`` and its PNGs; returns the HTML path.

    model_pictures: also load the best checkpoint and the data file for the latent PCA and
    the rollouts / grids (skipped with a note when either is missing); episodes: how many
    validation episodes they show; max_k: the largest horizon they predict.
    """
    run = read_run(run_dir)
    notes = list(run.notes) + grid_notes(run.evaluation or {})
    curves, curve_notes = figures.draw(figures.CURVES, [Curves.of(run)])
    table = per_k(run)
    per_k_pictures, per_k_notes = figures.draw(figures.PER_K, table) if table else ([], [])
    model: list[figures.Picture] = []
    if model_pictures:
        model, model_notes = _model_pictures(run, device=device, episodes=episodes, max_k=max_k)
    else:
        model_notes = ["latent and rollout pictures not drawn (--no-model)"]
    notes += curve_notes + per_k_notes + model_notes

    folder = run.path / REPORT_DIR
    folder.mkdir(exist_ok=True)
    _clear_old_pictures(folder)
    for picture in curves + per_k_pictures + model:
        (folder / f"{picture.stem}.png").write_bytes(picture.png)
    path = folder / artifacts.REPORT
    page = render(
        "report.html.j2",
        title=f"lejepa report: {run.name}",
        run=run,
        summary_rows=summary_rows(run),
        health_header=list(HEALTH_COLUMNS),
        health_rows=health_rows(run),
        notes=notes,
        curves=curves,
        per_k=table,
        per_k_pictures=per_k_pictures,
        model=model,
    )
    path.write_text(page, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- compare
def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: data}


def run_names(paths: list[Path]) -> list[str]:
    """Legend names: the directory names, with parents added until they are unique."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


COMPARE_COLUMNS = [
    "run",
    "status",
    "step",
    "best validation (monitor)",
    "best_epoch",
    "clip_fraction",
    "wall_seconds",
    "final err_signal",
    "copy-last",
]


def compare_row(name: str, run: RunFiles) -> list[str]:
    """One run's row of the compare table (``COMPARE_COLUMNS``)."""
    summary = run.summary.to_dict() if run.summary is not None else {}
    best = "n/a" if run.summary is None else f"{fmt(run.summary.best_val)} ({run.summary.monitor})"
    last = run.last_val
    return [
        name,
        fmt(summary.get("status")),
        fmt(summary.get("step")),
        best,
        *(fmt(summary.get(key)) for key in ("best_epoch", "clip_fraction", "wall_seconds")),
        fmt(last.get(artifacts.ERR_SIGNAL)),
        fmt(last.get(artifacts.COPY_LAST_PREFIX + artifacts.ERR_SIGNAL)),
    ]


def write_compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> Path:
    """The curves of several runs on shared axes, a table of their summaries and of the recipe
    keys that differ, in one self-contained HTML file ``out``; returns its path."""
    if not run_dirs:
        raise CheckpointError("compare: give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    names = run_names([r.path for r in runs])
    pictures, notes = figures.draw(
        figures.CURVES, [Curves.of(run, name) for run, name in zip(runs, names, strict=True)]
    )
    flat = [_flatten(run.recipe) for run in runs]
    differing = sorted(
        k
        for k in set().union(*flat)
        if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1
    )
    page = render(
        "compare.html.j2",
        title=f"lejepa compare: {', '.join(names)}",
        runs=list(zip(names, runs, strict=True)),
        columns=COMPARE_COLUMNS,
        rows=[compare_row(name, run) for name, run in zip(names, runs, strict=True)],
        notes=[
            f"{name}: {note}" for name, run in zip(names, runs, strict=True) for note in run.notes
        ]
        + notes,
        curves=pictures,
        recipe_header=["key", *names],
        recipe_rows=[[key] + [fmt(f.get(key, "-")) for f in flat] for key in differing],
    )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
