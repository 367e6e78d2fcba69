"""docs/data.md's "train on a converted or foreign dataset" command, checked on a converted
Minari file (``lejepa check``: validated and built, as ``lejepa run`` would)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from lejepa_core.cli import main
from lejepa_core.data.convert import convert_minari
from tests.test_data_cli import _write_minari

ROOT = Path(__file__).resolve().parents[1]


def _documented_command() -> list[str]:
    text = (ROOT / "docs" / "data.md").read_text()
    section = text.split("## Train on a converted or foreign dataset", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.S).group(1)
    command = re.search(r"\$ (lejepa run .*?)(?:\n\$|\Z)", block.replace("\\\n", " "), re.S)
    return shlex.split(command.group(1))


def test_the_documented_overrides_build_on_a_converted_file(tmp_path):
    _write_minari(tmp_path / "ds")
    data = convert_minari(tmp_path / "ds", out=tmp_path / "cartpole.h5", progress=False)
    args = _documented_command()
    assert args[:2] == ["lejepa", "run"]
    args = [a.replace("data/cartpole.h5", data.as_posix()) for a in args[2:]]
    args[0] = str(ROOT / args[0])
    result = CliRunner().invoke(main, ["check", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # a key instead of the whole table keeps the feature masker's other keys: refused
    keyed = [a if a != 'masker={name="none"}' else 'masker.name="none"' for a in args]
    result = CliRunner().invoke(main, ["check", *keyed])
    assert result.exit_code == 2 and "masker.p_coordinates: unknown key" in result.output
    # without the masker change: the feature masker names what it misses
    result = CliRunner().invoke(main, ["check", *_drop_set(args, 'masker={name="none"}')])
    assert result.exit_code == 2 and "needs features ('x', 'y')" in result.output


def _drop_set(args: list[str], value: str) -> list[str]:
    out = list(args)
    i = out.index(value)
    del out[i - 1 : i + 1]
    return out
