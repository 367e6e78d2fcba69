"""``lejepa report`` / ``lejepa compare``: the HTML parses and embeds every picture it wrote,
missing inputs leave their pictures out, a bad directory exits 2 with one line, and a headless
browser renders the page (skipped where no chromium is installed).

One tiny run (2 balls, 2 epochs of 3 steps) is trained and evaluated once for the module.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from lejepa_core.cli import main
from lejepa_core.errors import CheckpointError
from tests.conftest import tiny_recipe

CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)
CURVES = {"losses", "validation_loss", "prediction", "effective_rank", "optimisation"}


class Page(HTMLParser):
    """Collects <img> attributes, <h2> titles and the text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.headings.append(data)

    def embedded_pngs(self) -> list[bytes]:
        prefix = "data:image/png;base64,"
        assert all(str(img.get("src", "")).startswith(prefix) for img in self.images), (
            "an image is not a data URI"
        )
        return [base64.b64decode(str(img["src"])[len(prefix) :]) for img in self.images]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):  # noqa: F811
    from lejepa_core.evaluate import evaluate_run
    from lejepa_core.training.loop import train

    tmp = tmp_path_factory.mktemp("report")
    recipe = tiny_recipe(
        tmp,
        tiny_data,
        ("train.epochs=2", "train.steps_per_epoch=3", "log.every=1", "log.tensorboard=false"),
    )
    run_dir = train(recipe, out=tmp / "run").run_dir
    evaluate_run(run_dir, device="cpu", batches=2)
    return run_dir


@pytest.fixture(scope="module")
def report(tiny_run):
    result = CliRunner().invoke(
        main, ["report", str(tiny_run), "--episodes", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    path = tiny_run / "report" / "report.html"
    assert result.output.strip() == f"written: {path}"
    return path


def test_report_embeds_every_picture_it_wrote(report):
    page = Page(report.read_text(encoding="utf-8"))
    written = {p.stem: p.read_bytes() for p in report.parent.glob("*.png")}
    assert CURVES | {"per_k", "latents", "rollouts"} <= set(written)
    assert "quantizer" not in written and "arc_grids" not in written  # no quantizer, not a grid env
    embedded = page.embedded_pngs()
    assert sorted(embedded) == sorted(written.values())  # each PNG file once, nothing else
    assert all(len(str(img.get("alt") or "").strip()) > 20 for img in page.images)
    text = "".join(page.text)
    assert {"Summary and recipe", "Training curves", "Per horizon k"} <= set(page.headings)
    assert "decoded" in text and "eval.json" in text  # per-k columns from eval.json
    assert "latent_dim = 8" in text  # the resolved recipe is shown


def test_report_without_eval_or_checkpoints_leaves_those_pictures_out(tiny_run, tmp_path):
    from lejepa_core.report import per_k_rows, read_run
    from lejepa_core.report_model import model_figures

    copy = tmp_path / "copy"
    shutil.copytree(
        tiny_run, copy, ignore=shutil.ignore_patterns("eval.json", "checkpoints", "report")
    )
    run = read_run(copy)
    header, rows, picture, source = per_k_rows(run)
    assert header[0] == "k" and all(h.startswith(("err_signal", "cosine")) for h in header[1:])
    assert (
        [r[0] for r in rows] == ["1", "2", "4"] and picture is not None and "no eval.json" in source
    )
    figures, notes = model_figures(run)
    assert figures == [] and "no checkpoints" in notes[0]


def test_metrics_reader_keeps_the_last_record_of_a_step(tmp_path):
    from lejepa_core.report import read_metrics

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


def test_compare_two_runs(tiny_run, tmp_path):
    other = tmp_path / "run_b"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("checkpoints", "report"))
    out = tmp_path / "cmp" / "compare.html"
    result = CliRunner().invoke(
        main, ["compare", str(tiny_run), str(other), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    page = Page(out.read_text(encoding="utf-8"))
    assert len(page.embedded_pngs()) == len(CURVES) and all(img.get("alt") for img in page.images)
    text = "".join(page.text)
    assert "run" in text and "run_b" in text and "none: the runs share one recipe" in text


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
