"""The progress display: ``-`` before anything is measured, plain whole lines when stderr is not
a terminal, a rich bar on one, and training's per-epoch validation line."""

import io
import re

from lejepa_core.progress import Progress, progress_bar

FIELDS = {"loss": (None, "loss {:.4f}"), "rate": (None, "{:.0f} samples/s")}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal_show_a_dash_until_a_value_arrives():
    stream = io.StringIO()
    with progress_bar(True, 1000, label="train", fields=FIELDS, stream=stream, interval=0) as bar:
        bar(completed=10)
        bar(completed=500, loss=0.25, rate=1234.4)
        bar.note("epoch 0  val err/σ 0.5000")
        bar(completed=1000)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("train  10/1000  1%  loss -  - samples/s  ")
    assert lines[0].endswith(" left")
    assert lines[1].startswith("train  500/1000  50%  loss 0.2500  1234 samples/s  ")
    assert lines[2] == "epoch 0  val err/σ 0.5000"
    assert re.fullmatch(
        r"train  1000/1000  100%  loss 0.2500  1234 samples/s  done in .*", lines[3]
    )
    assert len(lines) == 4  # the end is not printed twice


def test_plain_lines_are_periodic_and_the_end_is_always_printed():
    stream = io.StringIO()
    with progress_bar(True, 100, label="generating", stream=stream, interval=3600) as bar:
        for _ in range(100):
            bar(advance=1)
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("generating  100/100  100%  done in ")


def test_a_terminal_gets_the_rich_bar_with_dashes_and_notes():
    stream = Terminal()
    with progress_bar(True, 10, label="train", fields=FIELDS, stream=stream) as bar:
        bar.note("epoch 0  best")
    text = stream.getvalue()
    assert "loss -" in text and "- samples/s" in text and "epoch 0  best" in text
    assert "0/10" in text


def test_disabled_does_nothing(capsys):
    with progress_bar(False, 10, label="train", fields=FIELDS) as bar:
        bar(completed=3, loss=1.0)
        bar.note("nothing")
    assert isinstance(bar, Progress)
    assert capsys.readouterr() == ("", "")


def test_training_prints_one_validation_line_per_epoch(tmp_path, tiny_data, capsys):
    from lejepa_core.training.loop import train
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.epochs=3", "train.steps_per_epoch=4", "log.progress=true")
    )
    train(recipe, out=tmp_path / "run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3, err
    pattern = r"epoch {}  val err/σ \d+\.\d{{4}}  copy-last err/σ \d+\.\d{{4}}(  best)?"
    for epoch, line in enumerate(lines):
        assert re.fullmatch(pattern.format(epoch), line), line
    assert lines[0].endswith("  best")  # the first epoch always improves on inf
    assert re.search(r"^train  12/12  100%  epoch 2  loss \d", err, re.MULTILINE), err
