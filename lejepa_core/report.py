"""The HTML report of a run (``lejepa report RUN_DIR``) and of several runs (``lejepa compare``).

``write_report(run_dir)`` reads the run directory and writes ``RUN_DIR/report/report.html``
(self-contained: every picture is embedded as a base64 PNG data URI, so the file opens
offline in any browser and can be mailed on its own) and the same pictures as PNG files beside
it in ``RUN_DIR/report/``. What each picture shows and how to read it: ``docs/report.md``.

    resolved_recipe.toml, summary.json  -> the header (summary table, the recipe)
    metrics.jsonl                        -> curves (report_plots.CURVE_FIGURES), per-k table
    eval.json (after ``lejepa eval``)    -> probe-decoded errors per k
    checkpoints/best.pt (else last.pt)   -> latent PCA, ball rollouts or ARC grids
      + the data file of the recipe         (evaluate.load_run rebuilds the model)

Plots whose inputs are missing (no quantizer, no eval.json, no checkpoint, data file gone) are
left out; the report says which and why. Shape legend: ``T`` frames of an episode, ``W``
context frames, ``K`` horizons drawn, ``D`` latent_dim, ``N`` balls.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from lejepa_core.errors import CheckpointError, LejepaError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPORT_DIR = "report"
REPORT_FILE = "report.html"


# ----------------------------------------------------------------------------- reading a run
@attrs.define
class RunFiles:
    """What a run directory holds. recipe: the parsed resolved recipe (plain dict)."""

    path: Path
    name: str
    recipe_text: str
    recipe: dict[str, Any]
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    summary: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    skipped_lines: int = 0

    def curves(self, name: str | None = None):
        from lejepa_core.report_plots import Curves

        train = self.recipe.get("train", {})
        return Curves(
            name=name or self.name,
            train=self.train,
            val=self.val,
            grad_clip=train.get("grad_clip"),
            latent_dim=self.recipe.get("model", {}).get("latent_dim"),
            codebook_size=codebook_size(self.recipe),
        )


def codebook_size(recipe: dict[str, Any]) -> int | None:
    """``quantizer.codebook_size``, or the product of fsq ``levels``; None without a quantizer."""
    quantizer = recipe.get("quantizer")
    if not quantizer:
        return None
    if "codebook_size" in quantizer:
        return int(quantizer["codebook_size"])
    if "levels" in quantizer:
        return int(math.prod(quantizer["levels"]))
    return None


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(train, val, skipped) records of ``metrics.jsonl``, each split sorted by step.

    A resumed run appends to the file, so a step may appear twice: the later record wins.
    Lines that are not JSON objects (a line cut off by a crash) are skipped and counted.
    """
    by_split: dict[str, dict[int, dict[str, Any]]] = {"train": {}, "val": {}}
    skipped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if (
            not isinstance(record, dict)
            or record.get("split") not in by_split
            or not isinstance(record.get("step"), int)
        ):
            skipped += 1
            continue
        by_split[record["split"]][record["step"]] = record
    train, val = ([split[s] for s in sorted(split)] for split in by_split.values())
    return train, val, skipped


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    return value if isinstance(value, dict) else None


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run directory; ``CheckpointError`` naming it and what is missing otherwise."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a run directory (no such directory)")
    missing = [
        name for name in ("metrics.jsonl", "resolved_recipe.toml") if not (path / name).is_file()
    ]
    if missing:
        raise CheckpointError(f"{path}: not a run directory (no {' and no '.join(missing)})")
    recipe_text = (path / "resolved_recipe.toml").read_text(encoding="utf-8")
    try:
        recipe = tomllib.loads(recipe_text)
    except tomllib.TOMLDecodeError as exc:
        raise CheckpointError(f"{path / 'resolved_recipe.toml'}: not valid TOML ({exc})") from None
    train, val, skipped = read_metrics(path / "metrics.jsonl")
    return RunFiles(
        path=path,
        name=path.resolve().name,
        recipe_text=recipe_text,
        recipe=recipe,
        train=train,
        val=val,
        summary=_read_json(path / "summary.json"),
        evaluation=_read_json(path / "eval.json"),
        skipped_lines=skipped,
    )


# ----------------------------------------------------------------------------- figures
@attrs.define
class Picture:
    """One PNG of the report: file stem, title, alt text, caption (how to read it)."""

    stem: str
    title: str
    alt: str
    caption: str
    png: bytes


CAPTIONS = {
    "losses": "Each loss part as logged (unweighted; the total is the weighted sum). Solid: training mean between "
    "log points; dashed: validation. A log scale is used when a part spans more than a factor 50.",
    "validation_loss": "Validation total loss after each epoch; the star marks the best epoch, the one saved as "
    "checkpoints/best.pt and used by the latent and rollout pictures below.",
    "prediction": "Validation predictions of all horizons against two baselines on the same samples: copying the "
    "last context latent (nothing changes), and predicting the mean validation target. The model is useful "
    "where its error-to-signal ratio is below both baselines (cosine above them).",
    "effective_rank": "Effective rank (exp entropy of the normalised singular values) of the validation latents. "
    "A fall towards 1 is collapse; latent_dim is the ceiling.",
    "quantizer": "Fraction of the codebook used per batch and over the running window, and code perplexity "
    "(the effective number of codes). Falling usage is codebook collapse.",
    "optimisation": "Global gradient norm before clipping (dotted line: the clip threshold; points above it were "
    "clipped) and the learning rate of the warm-up + cosine schedule.",
    "per_k": "Per horizon k: error-to-signal ratio and cosine from the validation record, and (after lejepa eval) "
    "the probe-decoded state error or cell accuracy against the physics baselines.",
    "latents": "Target latents of whole validation episodes projected on their first two principal components, "
    "coloured by time; red crosses: the model's predictions from the last context frame (square) for "
    "k = 1..K, circles: the true target latents they should land on.",
    "rollouts": "Ball positions of validation episodes: the true path (dots, one colour per ball) and the positions "
    "a ridge probe decodes from the predicted latents for k = 1..K (crosses), starting at the last "
    "context frame (square). The probe is fitted on target latents of training episodes.",
    "arc_grids": "For validation episodes: the last context grid, the true next grid and the grid a ridge probe "
    "(one-hot cell colours, argmax) decodes from the predicted latent for k = 1, in the ARC palette.",
}


def _picture(stem: str, title: str, figure: Any) -> Picture | None:
    from lejepa_core.report_plots import figure_png

    if figure is None:
        return None
    return Picture(
        stem=stem,
        title=title,
        alt=f"{title}: {CAPTIONS[stem]}",
        caption=CAPTIONS[stem],
        png=figure_png(figure),
    )


def curve_pictures(runs: list[Any]) -> list[Picture]:
    """Every curve figure that the runs' records can fill (``runs``: report_plots.Curves)."""
    from lejepa_core.report_plots import CURVE_FIGURES

    pictures = [_picture(stem, title, function(runs)) for stem, title, function in CURVE_FIGURES]
    return [p for p in pictures if p is not None]


def per_k_rows(run: RunFiles) -> tuple[list[str], list[list[str]], Picture | None, str]:
    """(columns, rows, bar chart, source note) of the per-horizon figures."""
    from lejepa_core.report_plots import per_k_figure

    last = run.val[-1] if run.val else {}
    ks = sorted({int(key.rsplit("/k", 1)[1]) for key in last if key.startswith("err_signal/k")})
    evaluation = run.evaluation or {}
    eval_rows = {int(row["k"]): row for row in evaluation.get("per_k", [])}
    ks = sorted(set(ks) | set(eval_rows))
    if not ks:
        return [], [], None, ""
    columns: list[tuple[str, Any]] = []
    panels = []
    for metric, title, ylabel in (
        ("err_signal", "Error-to-signal ratio", "ratio"),
        ("cosine", "Cosine similarity", "cosine"),
    ):
        bars = {}
        for prefix, name in (
            ("", "model"),
            ("baseline/copy_last/", "copy-last latent"),
            ("baseline/mean/", "mean target"),
        ):
            key = f"{prefix}{metric}"
            if any(f"{key}/k{k}" in last for k in ks):
                bars[name] = [last.get(f"{key}/k{k}") for k in ks]
                columns.append((f"{metric} {name}", bars[name]))
        panels.append((f"{title} (validation, epoch {last.get('epoch', '?')})", ylabel, bars))
    estimators = (
        ("model", "model"),
        ("copy_last", "copy last state"),
        ("constant_velocity", "constant velocity"),
    )
    for suffix, title, ylabel in (
        ("mae_positions", "Decoded position error", "mean |error| (state units)"),
        ("mae_velocities", "Decoded velocity error", "mean |error| (state units)"),
        ("cell_accuracy", "Decoded grid cell accuracy", "fraction of cells"),
    ):
        bars = {}
        for estimator, name in estimators:
            key = f"{estimator}/{suffix}"
            if any(key in row for row in eval_rows.values()):
                bars[name] = [eval_rows.get(k, {}).get(key) for k in ks]
                columns.append((f"{title.split()[1]} {suffix.split('_')[0]} {name}", bars[name]))
        if bars:
            panels.append((f"{title} (eval.json)", ylabel, bars))
    header = ["k"] + [name for name, _ in columns]
    rows = [[str(k)] + [_fmt(values[i]) for _, values in columns] for i, k in enumerate(ks)]
    source = f"err_signal and cosine: last validation record (step {last.get('step', '?')}, epoch {last.get('epoch', '?')}); "
    source += (
        "decoded errors: eval.json."
        if eval_rows
        else "no eval.json: run `lejepa eval RUN_DIR` for the probe-decoded errors."
    )
    return header, rows, _picture("per_k", "Per-horizon figures", per_k_figure(ks, panels)), source


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


# ----------------------------------------------------------------------------- HTML
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 1100px; }
pre { background: #f7f7f7; padding: 0.8em; overflow: auto; font-size: 0.85em; max-height: 32em; margin: 0; }
.top { display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; } h3 { font-size: 1em; margin: 0.3em 0; }
.note { color: #8a5a00; }
"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_figure(picture: Picture) -> str:
    data = base64.b64encode(picture.png).decode("ascii")
    return (
        f'<figure id="{picture.stem}"><img src="data:image/png;base64,{data}" alt="{html.escape(picture.alt, quote=True)}">'
        f"<figcaption><b>{html.escape(picture.title)}.</b> {html.escape(picture.caption)} "
        f"(<code>{picture.stem}.png</code>)</figcaption></figure>"
    )


def html_page(title: str, body: list[str]) -> str:
    from lejepa_core import __version__

    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>written {stamp} by lejepa {__version__}</p>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def summary_rows(run: RunFiles) -> list[list[str]]:
    """Key figures of summary.json (plain values) and eval.json (probe quality)."""
    rows = [["run directory", str(run.path)]]
    for key, value in (run.summary or {}).items():
        if not isinstance(value, (dict, list)):
            rows.append([key, _fmt(value)])
    evaluation = run.evaluation or {}
    for group, value in evaluation.get("r2", {}).items():
        rows.append([f"probe R^2 ({group}, eval.json)", _fmt(value)])
    if "probe_cell_accuracy" in evaluation:
        rows.append(["probe cell accuracy (eval.json)", _fmt(evaluation["probe_cell_accuracy"])])
    return rows


def _section(title: str, parts: list[str]) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(parts)


def _clear_old_pictures(folder: Path) -> None:
    """Remove PNGs an earlier report wrote (known names only) so no stale picture remains."""
    from lejepa_core.report_plots import CURVE_FIGURES

    for stem in [s for s, _, _ in CURVE_FIGURES] + list(CAPTIONS):
        (folder / f"{stem}.png").unlink(missing_ok=True)


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
    the rollouts / ARC grids (skipped with a note when either is missing); episodes: how many
    validation episodes they show; max_k: the largest horizon they predict.
    """
    run = read_run(run_dir)
    notes: list[str] = []
    if run.skipped_lines:
        notes.append(f"metrics.jsonl: {run.skipped_lines} unreadable line(s) skipped")
    curves = curve_pictures([run.curves()])
    header, rows, per_k_picture, source = per_k_rows(run)
    model: list[Picture] = []
    if model_pictures:
        try:
            from lejepa_core.report_model import model_figures

            figures, model_notes = model_figures(run, device=device, episodes=episodes, max_k=max_k)
        except LejepaError as exc:
            figures, model_notes = [], [f"latent and rollout pictures skipped: {exc}"]
        notes += model_notes
        model = [
            p for p in (_picture(stem, title, fig) for stem, title, fig in figures) if p is not None
        ]
    else:
        notes.append("latent and rollout pictures not drawn (--no-model)")

    folder = run.path / REPORT_DIR
    folder.mkdir(exist_ok=True)
    _clear_old_pictures(folder)
    pictures = curves + ([per_k_picture] if per_k_picture else []) + model
    for picture in pictures:
        (folder / f"{picture.stem}.png").write_bytes(picture.png)

    top = (
        f'<div class="top"><div><h3>summary.json</h3>{html_table(["figure", "value"], summary_rows(run))}</div>'
        f"<div><h3>resolved_recipe.toml</h3><pre>{html.escape(run.recipe_text)}</pre></div></div>"
    )
    body = [_section("Summary and recipe", [top])]
    if notes:
        body.append(
            "<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes) + "</ul>"
        )
    body.append(
        _section(
            "Training curves",
            [html_figure(p) for p in curves] or ["<p>metrics.jsonl holds no records yet.</p>"],
        )
    )
    if header:
        parts = [f"<p>{html.escape(source)}</p>", html_table(header, rows)]
        body.append(
            _section(
                "Per horizon k", parts + ([html_figure(per_k_picture)] if per_k_picture else [])
            )
        )
    if model:
        body.append(
            _section("The trained model on validation episodes", [html_figure(p) for p in model])
        )
    path = folder / REPORT_FILE
    path.write_text(html_page(f"lejepa report: {run.name}", body), encoding="utf-8")
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


def write_compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> Path:
    """The curves of several runs on shared axes, a table of their summaries and of the recipe
    keys that differ, in one self-contained HTML file ``out``; returns its path."""
    if not run_dirs:
        raise CheckpointError("compare: give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    names = run_names([r.path for r in runs])
    pictures = curve_pictures([run.curves(name) for run, name in zip(runs, names, strict=True)])
    keys = ["status", "step", "best_val_loss", "best_epoch", "clip_fraction", "wall_seconds"]
    rows = []
    for run, name in zip(runs, names, strict=True):
        summary = run.summary or {}
        last = run.val[-1] if run.val else {}
        rows.append(
            [name]
            + [_fmt(summary.get(k)) for k in keys]
            + [_fmt(last.get("err_signal")), _fmt(last.get("baseline/copy_last/err_signal"))]
        )
    flat = [_flatten(run.recipe) for run in runs]
    differing = sorted(
        k
        for k in set().union(*flat)
        if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1
    )
    recipe_rows = [[key] + [_fmt(f.get(key, "-")) for f in flat] for key in differing]
    body = [
        _section(
            "Runs",
            [
                html_table(["run"] + keys + ["final err_signal", "copy-last"], rows),
                "<p>"
                + "<br>".join(
                    html.escape(f"{n}: {r.path}") for n, r in zip(names, runs, strict=True)
                )
                + "</p>",
            ],
        )
    ]
    body.append(
        _section(
            "Training curves (colour: run; line style: series)", [html_figure(p) for p in pictures]
        )
    )
    body.append(
        _section(
            "Recipe keys that differ",
            [
                html_table(["key"] + names, recipe_rows)
                if recipe_rows
                else "<p>none: the runs share one recipe.</p>"
            ],
        )
    )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_page(f"lejepa compare: {', '.join(names)}", body), encoding="utf-8")
    return path
