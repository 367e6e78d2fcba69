"""``lejepa report`` / ``lejepa compare``: the HTML parses and embeds every picture it wrote,
each with its caption from the figure registry, missing inputs leave their pictures out, the
template escapes what runs contain, compare shows each run's best value, a bad directory exits
2 with one line, and a headless browser renders the page (skipped where no chromium is
installed).

Two tiny runs are trained once for the module: 2 bouncing balls (2 epochs of 3 steps, then
``lejepa eval``) and procedural ARC grids with an fsq quantizer (1 epoch of 2 steps).
"""

from __future__ import annotations

import ast
import base64
import json
import math
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from lejepa_core.cli import main
from lejepa_core.errors import CheckpointError
from tests.conftest import tiny_recipe

CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)
CURVES = {
    "losses",
    "validation_loss",
    "prediction",
    "effective_rank",
    "optimisation",
    "gradient_share",
}
REPORT_PACKAGE = Path(__file__).resolve().parents[1] / "lejepa_core" / "report"


class Page(HTMLParser):
    """Collects <img> attributes, <h2> titles, the text of a page and each <figure>'s
    id, image and caption text."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self.figures: dict[str, dict[str, str]] = {}
        self._in_h2 = False
        self._figure: str | None = None
        self._in_caption = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
            if self._figure is not None:
                self.figures[self._figure]["alt"] = str(dict(attrs).get("alt"))
        if tag == "figure":
            self._figure = str(dict(attrs)["id"])
            self.figures[self._figure] = {"caption": ""}
        self._in_caption = self._in_caption or tag == "figcaption"
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False
        if tag == "figcaption":
            self._in_caption = False
        if tag == "figure":
            self._figure = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.headings.append(data)
        if self._in_caption and self._figure is not None:
            self.figures[self._figure]["caption"] += data

    def embedded_pngs(self) -> list[bytes]:
        prefix = "data:image/png;base64,"
        assert all(str(img.get("src", "")).startswith(prefix) for img in self.images), (
            "an image is not a data URI"
        )
        return [base64.b64decode(str(img["src"])[len(prefix) :]) for img in self.images]


def _evaluate(run_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["eval", str(run_dir), "--device", "cpu", "--batches", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):
    from lejepa_core.training.loop import train

    tmp = tmp_path_factory.mktemp("report")
    recipe = tiny_recipe(
        tmp,
        tiny_data,  # BouncingBalls publishes positions and box itself
        ("train.epochs=2", "train.steps_per_epoch=3", "log.every=1", "log.tensorboard=false"),
    )
    run_dir = train(recipe, out=tmp / "run").run_dir
    _evaluate(run_dir)
    return run_dir


ARC_RECIPE = """
[model]
latent_dim = 8
[encoder]
name = "object"
dim = 16
depth = 1
num_heads = 2
max_objects = 8
[predictor]
name = "residual"
hidden_dim = 16
depth = 1
[quantizer]
name = "fsq"
levels = [4, 3]
[masker]
name = "none"
[[losses]]
name = "infonce"
[data]
path = "{data_path}"
env_id = "lejepa/ArcGrid-v0"
env_kwargs = {{ source = "procedural", grid_size = 6, num_objects = 2, max_steps = 12 }}
episodes = 8
steps = 12
context_frames = 2
horizons = [1, 2]
val_fraction = 0.25
normalize = false
[train]
epochs = 1
steps_per_epoch = 2
batch_size = 8
val_windows = 8
threads = 1
[log]
every = 1
progress = false
tensorboard = false
"""


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """A tiny ARC-grid run with an fsq quantizer (codebook size 12)."""
    from lejepa_core.data.generate import generate_dataset
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.loop import train

    tmp = tmp_path_factory.mktemp("grid")
    data = tmp / "arc.h5"
    kwargs = {"source": "procedural", "grid_size": 6, "num_objects": 2, "max_steps": 12}
    generate_dataset(
        "lejepa/ArcGrid-v0", episodes=8, steps=12, out=data, env_kwargs=kwargs, progress=False
    )
    path = tmp / "arc.toml"
    path.write_text(ARC_RECIPE.format(data_path=data.as_posix()))
    return train(load_recipe(path), out=tmp / "run").run_dir


def _report(run_dir: Path, *args: str) -> Path:
    result = CliRunner().invoke(
        main, ["report", str(run_dir), "--episodes", "2", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    path = run_dir / "report" / "report.html"
    assert result.output.strip() == f"written: {path}"
    return path


@pytest.fixture(scope="module")
def report(tiny_run):
    return _report(tiny_run)


@pytest.fixture(scope="module")
def grid_report(grid_run):
    return _report(grid_run)


# Records as the training loop, the losses and the quantizers log them from issue 10 on, written
# by hand: the report must draw them when present and say so when absent.
LOGGED_TRAIN = [
    {
        "grad_norm": 2.0 + step,
        "grad_norm_max": 9.0 + step,
        "grad_share/infonce": 0.9,
        "grad_share/sigreg": 0.1 / step,
        "quantizer/usage": 0.25,
        "quantizer/usage_relative": 0.75,
        "quantizer/replaced_codes": 4.0 if step == 4 else 0.0,
        "quantizer/codebook_size": 12,
        "loss/sigreg": 3.9,
        "loss/sigreg/null_level": 1.0525,
        "loss/sigreg/null_level_effective": 4.13,
    }
    for step in range(3, 7)
]
LOGGED_VAL = {"baseline/copy_last_context/err_signal": 1.4, "baseline/copy_last/err_signal": 0.9}
HEALTH = [
    {
        "check": "grad_norm_high",
        "first_step": 3,
        "last_step": 6,
        "value": 81.0,
        "threshold": 30.0,
        "action": "warn",
    },
    {
        "check": "codebook_usage_low",
        "first_step": 5,
        "last_step": 6,
        "value": 0.04,
        "threshold": 0.05,
        "action": "stop",
    },
]


@pytest.fixture(scope="module")
def logged_run(grid_run, tmp_path_factory):
    """The grid run with hand-written records of every key issue 10 adds, and health checks."""
    run = tmp_path_factory.mktemp("logged") / "run"
    shutil.copytree(grid_run, run, ignore=shutil.ignore_patterns("report"))
    records = [
        {"step": i + 3, "epoch": 0, "split": "train", **r} for i, r in enumerate(LOGGED_TRAIN)
    ]
    records.append({"step": 6, "epoch": 0, "split": "val", "loss/total": 1.0, **LOGGED_VAL})
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "health": HEALTH}))
    return run


@pytest.fixture(scope="module")
def logged_report(logged_run):
    return _report(logged_run, "--no-model")


def test_report_embeds_every_picture_it_wrote(report):
    page = Page(report.read_text(encoding="utf-8"))
    written = {p.stem: p.read_bytes() for p in report.parent.glob("*.png")}
    assert CURVES | {"per_k", "latents", "rollouts"} <= set(written)
    assert "quantizer" not in written and "grids" not in written  # no quantizer, not a grid env
    embedded = page.embedded_pngs()
    assert sorted(embedded) == sorted(written.values())  # each PNG file once, nothing else
    assert all(len(str(img.get("alt") or "").strip()) > 20 for img in page.images)
    text = "".join(page.text)
    assert {"Summary and recipe", "Training curves", "Per horizon k"} <= set(page.headings)
    assert "decoded" in text and "eval.json" in text  # per-k columns from eval.json
    assert "latent_dim = 8" in text  # the resolved recipe is shown


def test_every_figure_has_its_caption_beside_it(report, grid_report, logged_report):
    from lejepa_core.report.figures import FIGURES

    assert len({f.stem for f in FIGURES}) == len(FIGURES)
    assert all(f.caption.strip() and f.title.strip() for f in FIGURES)
    drawn = {}
    for path in (report, grid_report, logged_report):
        drawn.update(Page(path.read_text(encoding="utf-8")).figures)
    # action-conditioned runs with a plan.json only: tests/test_control.py; image runs only:
    # tests/test_pixels_run.py
    elsewhere = {"plan", "frames", "latent_positions"}
    assert set(drawn) == {f.stem for f in FIGURES} - elsewhere  # the three runs draw the rest
    for entry in (f for f in FIGURES if f.stem not in elsewhere):
        caption = " ".join(drawn[entry.stem]["caption"].split())
        assert caption.startswith(f"{entry.title}. {entry.caption}"), entry.stem
        assert caption.endswith(f"({entry.stem}.png)")
        assert drawn[entry.stem]["alt"] == f"{entry.title}: {entry.caption}"


def test_grid_run_draws_grids_and_the_logged_codebook_size(grid_run, grid_report):
    from lejepa_core.report.curves import Curves
    from lejepa_core.report.run_files import read_run

    written = {p.stem for p in grid_report.parent.glob("*.png")}
    assert {"grids", "quantizer", "latents"} <= written and "rollouts" not in written
    assert Curves.of(read_run(grid_run)).codebook_size == 4 * 3  # fsq levels [4, 3], logged
    text = "".join(Page(grid_report.read_text(encoding="utf-8")).text)
    assert "rollouts.png not drawn" not in text  # grids are not a missing rollout


def test_views_read_the_env_info(tiny_run, grid_run):
    """Rollouts and grids from ``EnvInfo`` alone: without positions no rollout (a note), without
    a box the extent of the data, without a palette a default one, without a pad no crop."""
    import torch

    from lejepa_core.envinfo import EnvInfo
    from lejepa_core.report import views
    from lejepa_core.report.canvas import NotDrawn
    from lejepa_core.report.run_files import read_run

    def with_env(run_dir, **changes):
        loaded = views.load_views(read_run(run_dir), episodes=1, max_k=3)
        loaded.loaded.spec = attrs.evolve(
            loaded.loaded.spec, env=attrs.evolve(loaded.env, **changes)
        )
        return loaded

    balls = with_env(tiny_run, box=None)
    try:
        figure = views.rollout_figure(balls)
        assert "extent of the drawn paths" in figure.get_suptitle()
        assert views.grid_figure(balls) is None  # states, not grids
        balls.loaded.spec = attrs.evolve(
            balls.loaded.spec, env=attrs.evolve(balls.env, positions=())
        )
        with pytest.raises(NotDrawn, match="positions"):
            views.rollout_figure(balls)
    finally:
        balls.loaded.data.close()

    grid = with_env(grid_run, palette=(), pad_value=None)
    try:
        assert views.rollout_figure(grid) is None
        assert "qualitative palette" in views.grid_figure(grid).get_suptitle()
    finally:
        grid.loaded.data.close()
    cmap = views.grid_colours(EnvInfo(palette=[(255, 0, 0)], pad_value=3), 4)
    assert cmap.N == 4 and cmap.colors[0] == (1.0, 0.0, 0.0) and cmap.colors[3] == views.PAD_GREY
    padded = torch.full((5, 5), 9)
    padded[1:3, 2] = 0
    assert views.crop([padded], 9) == (slice(1, 3), slice(2, 3))
    assert views.crop([padded], None) == (slice(None), slice(None))


def test_report_without_eval_or_checkpoints_leaves_those_pictures_out(tiny_run, tmp_path):
    from lejepa_core.report import read_run
    from lejepa_core.report.canvas import NotDrawn
    from lejepa_core.report.per_k import per_k, per_k_figure
    from lejepa_core.report.views import load_views

    copy = tmp_path / "copy"
    shutil.copytree(
        tiny_run, copy, ignore=shutil.ignore_patterns("eval.json", "checkpoints", "report")
    )
    run = read_run(copy)
    table = per_k(run)
    assert table.header == ["figure", "k = 1", "k = 2", "k = 4"] and table.ks == [1, 2, 4]
    assert all(row[0].startswith(("err_signal", "cosine")) for row in table.rows)
    assert "no eval.json" in table.source
    assert per_k_figure(table) is not None
    with pytest.raises(NotDrawn, match="no checkpoints"):
        load_views(run)


def _labels(figure) -> list[str]:
    return [line.get_label() for ax in figure.axes for line in ax.get_lines()]


def _texts(figure) -> str:
    return " ".join(t.get_text() for ax in figure.axes for t in ax.texts + [ax.title])


def _curves(train=(), val=(), **kw):
    from lejepa_core.report.curves import Curves

    def records(split, rows):
        return [{"step": i + 1, "epoch": i, "split": split, **r} for i, r in enumerate(rows)]

    return Curves(name="run", train=records("train", train), val=records("val", val), **kw)


def test_optimisation_shows_the_window_maximum_beside_the_mean():
    from lejepa_core.report.gradients import optimisation_figure

    logged = optimisation_figure([_curves(LOGGED_TRAIN, grad_clip=5.0)])
    labels = _labels(logged)
    assert "mean over the log window" in labels and "maximum of the log window" in labels
    assert any("clip threshold (train.grad_clip = 5)" in label for label in labels)
    maximum = next(ln for ax in logged.axes for ln in ax.get_lines() if "maximum" in ln.get_label())
    assert list(maximum.get_ydata()) == [r["grad_norm_max"] for r in LOGGED_TRAIN]
    old = optimisation_figure([_curves([{"grad_norm": 2.0, "lr": 1e-3}], grad_clip=5.0)])
    assert "maximum of the log window" not in _labels(old)
    assert "grad_norm_max not logged" in _texts(old)


def test_gradient_share_plots_one_line_per_loss_or_says_why_not():
    from lejepa_core.report.canvas import NotDrawn
    from lejepa_core.report.gradients import gradient_share_figure

    figure = gradient_share_figure([_curves(LOGGED_TRAIN)])
    assert sorted(_labels(figure)) == ["infonce", "sigreg"]
    with pytest.raises(NotDrawn, match="grad_share"):
        gradient_share_figure([_curves([{"grad_norm": 1.0}])])


def test_codebook_figures_read_usage_relative_and_replaced_codes():
    from lejepa_core.report.canvas import NotDrawn
    from lejepa_core.report.codebook import quantizer_figure, replaced_codes_figure

    logged = _curves(LOGGED_TRAIN, codebook_size=12)
    figure = quantizer_figure([logged])
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 3
    assert "Usage relative to what a batch can reach" in _texts(figure)
    refresh = replaced_codes_figure([logged])
    assert "10 % of the codebook (12 codes)" in _labels(refresh)
    warning = next(ln for ln in refresh.axes[0].get_lines() if ln.get_label().startswith("10 %"))
    assert warning.get_ydata()[0] == pytest.approx(1.2)
    fsq = _curves([{"quantizer/usage": 0.5, "quantizer/codebook_size": 12}], codebook_size=12)
    assert "usage_relative not logged" in _texts(quantizer_figure([fsq]))
    with pytest.raises(NotDrawn, match="replaced_codes"):
        replaced_codes_figure([fsq])
    no_quantizer = _curves([{"grad_norm": 1.0}])
    assert quantizer_figure([no_quantizer]) is None
    assert replaced_codes_figure([no_quantizer]) is None


def test_sigreg_panel_shows_the_null_level_that_applies():
    from lejepa_core.report.curves import loss_figure

    both = _labels(loss_figure([_curves(LOGGED_TRAIN)]))
    assert "null level for what is fed in = 4.13 (applies)" in both
    assert "null level, Gaussian latents = 1.05" in both  # shown, not the one that applies
    plain = [{k: v for k, v in r.items() if not k.endswith("effective")} for r in LOGGED_TRAIN]
    figure = loss_figure([_curves(plain)])
    assert "null level, Gaussian latents = 1.05 (applies)" in _labels(figure)
    assert "null level 1.05" in _texts(figure)


def test_copy_last_is_labelled_by_the_encoder_when_both_are_logged():
    from lejepa_core.report.curves import prediction_figure

    both = _labels(prediction_figure([_curves(val=[{"err_signal": 0.5, **LOGGED_VAL}])]))
    assert "copy-last latent (target encoder)" in both
    assert "copy-last latent (context encoder)" in both
    old = {"err_signal": 0.5, "baseline/copy_last/err_signal": 0.9}  # one copy-last, as before
    one = _labels(prediction_figure([_curves(val=[old])]))
    assert "copy-last latent" in one and not any("encoder)" in label for label in one)


def test_health_checks_head_the_report(logged_report):
    page = Page(logged_report.read_text(encoding="utf-8"))
    assert page.headings[0] == "Health checks"
    text = " ".join("".join(page.text).split())
    assert "2 check(s) tripped" in text
    for entry in HEALTH:
        assert entry["check"] in text and entry["action"] in text


def test_a_run_from_before_health_checks_has_no_health_section(logged_run, tmp_path):
    from lejepa_core.report import write_report

    run = tmp_path / "old"
    shutil.copytree(logged_run, run, ignore=shutil.ignore_patterns("report"))
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("health", None)
    (run / "summary.json").write_text(json.dumps(summary))
    page = Page(write_report(run, model_pictures=False).read_text(encoding="utf-8"))
    assert "Health checks" not in page.headings


def test_health_checks_all_passed(logged_run, tmp_path):
    from lejepa_core.report import write_report

    run = tmp_path / "passed"
    shutil.copytree(logged_run, run, ignore=shutil.ignore_patterns("report"))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "health": []}))
    page = Page(write_report(run, model_pictures=False).read_text(encoding="utf-8"))
    assert page.headings[0] == "Health checks" and "All checks passed" in "".join(page.text)


def test_report_decodes_with_the_probe_eval_json_used(tiny_run, report):
    """The report's decoded numbers are eval.json's: the per-k table shows them, and the
    probe the model pictures fit (eval.json's recorded fit, here --batches 2) reproduces every
    decoded figure of eval.json on eval's own samples."""
    from lejepa_core.eval.evaluate import eval_samples
    from lejepa_core.eval.state import evaluate_state
    from lejepa_core.report.per_k import per_k
    from lejepa_core.report.run_files import read_run
    from lejepa_core.report.views import load_views

    evaluation = json.loads((tiny_run / "eval.json").read_text())
    table = per_k(read_run(tiny_run))
    rows = {row[0]: row[1:] for row in table.rows}
    floor = [f"{row['probe_floor/mae_positions']:.4g}" for row in evaluation["per_k"]]
    assert rows["decoded positions MAE probe floor"] == floor
    rollout = [f"{evaluation['latent'][f'rollout/err_signal/k{k}']:.4g}" for k in table.ks]
    assert rows["eval.json err_signal rollout"] == rollout
    views = load_views(read_run(tiny_run), episodes=1, max_k=2)
    try:
        assert views.probe_fit == {"alpha": 1e-3, "batches": 2, "seed": 1234}
        val, samples = eval_samples(views.loaded, batches=2)
        again = evaluate_state(views.env, views.probe(), val, samples)
    finally:
        views.loaded.data.close()
    assert again["r2"] == evaluation["r2"]
    assert again["per_k"] == evaluation["per_k"]
    text = "".join(Page(report.read_text(encoding="utf-8")).text)
    assert "probe floor" in text and "drift.png" in text


def test_metrics_reader_keeps_the_last_record_of_a_step(tmp_path):
    from lejepa_core.report.run_files import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 2, "epoch": 0, "split": "train", "lr": 1}\n{"step": 1, "epoch": 0, "split": "train", "lr": 2}\n'
        '{"step": 2, "epoch": 0, "split": "train", "lr": 3}\n{"step": 2, "epoch": 0, "split": "val", "loss/total": 1}\n'
        '{"step": 3, "epo'
    )
    train, val, skipped = read_metrics(path)
    assert (
        [(r["step"], r["lr"]) for r in train] == [(1, 2), (2, 3)] and len(val) == 1 and skipped == 1
    )


def test_compare_two_runs_shows_each_best_value(tiny_run, tmp_path):
    other = tmp_path / "run_b"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("checkpoints", "report"))
    summary = json.loads((other / "summary.json").read_text())
    summary["best_val"] = 0.123456789
    (other / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "cmp" / "compare.html"
    result = CliRunner().invoke(
        main, ["compare", str(tiny_run), str(other), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    page = Page(out.read_text(encoding="utf-8"))
    assert len(page.embedded_pngs()) == len(CURVES) and all(img.get("alt") for img in page.images)
    text = "".join(page.text)
    assert "run" in text and "run_b" in text and "none: the runs share one recipe" in text
    best = json.loads((tiny_run / "summary.json").read_text())["best_val"]
    monitor = json.loads((tiny_run / "summary.json").read_text())["monitor"]
    assert isinstance(best, float) and math.isfinite(best)
    assert f"{best:.4g} ({monitor})" in text  # the first run's own best value
    assert f"0.1235 ({monitor})" in text  # the second's, as written to its summary.json


def test_the_template_escapes_run_names_and_recipe_values(tiny_run, tmp_path):
    from lejepa_core.report import write_compare, write_report

    run = tmp_path / "<script>alert(1)"  # the run's name: its directory's
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report"))
    recipe = run / "resolved_recipe.toml"
    recipe.write_text('comment = "<script>alert(2)</script>"\n' + recipe.read_text())
    report_html = write_report(run, model_pictures=False).read_text(encoding="utf-8")
    compare_html = write_compare([run, tiny_run], tmp_path / "compare.html").read_text()
    for html in (report_html, compare_html):
        assert "<script" not in html
        assert "&lt;script&gt;alert(1)" in html  # the run name, in the title
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in report_html  # in the recipe text
    assert "alert(2)" in compare_html  # the differing recipe value, escaped too


def test_report_package_imports_no_env_package_and_has_no_cycle():
    imported: dict[str, set[str]] = {}  # report module -> every module it imports
    for path in REPORT_PACKAGE.glob("*.py"):
        names = imported.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
    everything = set().union(*imported.values())
    assert not {m for m in everything if m.split(".")[0] == "lejepa_envs"}
    assert not {m for m in everything if m.startswith("lejepa_core.evaluate")}
    # no cycle among the report's own modules: peel off modules that import no unpeeled one
    graph = {
        module: {m.split(".")[2] for m in names if m.startswith("lejepa_core.report.")} - {module}
        for module, names in imported.items()
        if module != "__init__"
    }
    while graph:
        leaves = {module for module, deps in graph.items() if not deps & set(graph)}
        assert leaves, f"import cycle among {sorted(graph)}"
        graph = {module: deps for module, deps in graph.items() if module not in leaves}


def test_templates_ship_with_the_package():
    """The wheel holds what the report imports: its package, ``lejepa_core.eval`` and every
    template (pyproject's ``packages`` and ``package-data``)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    setuptools = tomllib.loads((REPORT_PACKAGE.parents[1] / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    assert {"lejepa_core.report", "lejepa_core.eval"} <= set(setuptools["packages"])
    patterns = setuptools["package-data"]["lejepa_core.report"]
    templates = sorted((REPORT_PACKAGE / "templates").iterdir())
    assert templates and all(any(t.match(p) for p in patterns) for t in templates)


def test_cli_help_imports_no_plotting():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom lejepa_core.cli import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        "assert 'lejepa_core.report.commands' in sys.modules\n"
        "print(sorted(m for m in ('matplotlib', 'jinja2') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["report", "compare"])
def test_not_a_run_directory_exits_2_with_one_line(tmp_path, command):
    (tmp_path / "resolved_recipe.toml").write_text("")
    result = CliRunner().invoke(main, [command, str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert str(tmp_path) in result.output and "metrics.jsonl" in result.output
    with pytest.raises(CheckpointError, match="no such directory"):
        from lejepa_core.report import read_run

        read_run(tmp_path / "absent")


@pytest.mark.slow  # a browser process
@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium / chrome browser installed (apt-get install chromium)"
)
def test_headless_browser_renders_the_report(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1280,2000",
                report.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text and plots, not a blank page
