import click
import pytest
from click.testing import CliRunner

from lejepa_core import registry as registry_module
from lejepa_core.cli import BUILTIN_COMMANDS, main
from lejepa_core.errors import RecipeError
from lejepa_core.registry import get_plugin_manager
from tests.toy_plugin import TOY_RECIPE, ToyPlugin


@pytest.fixture
def toy():
    registry_module.reset()
    pm = get_plugin_manager()
    name = pm.register_plugin(ToyPlugin(), "toy-plugin", distribution="toy-dist", version="1.2")
    yield
    pm.unregister(name=name)
    registry_module.reset()


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(TOY_RECIPE.format(path=(tmp_path / "missing.h5").as_posix()))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(BUILTIN_COMMANDS))
def test_every_builtin_command_resolves(name):
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command) and command.name == name


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "check", "plugins"):
        assert command in result.output


def test_plugins_lists_components_with_their_distribution(toy):
    result = invoke("plugins", "--kind", "encoder")
    assert result.exit_code == 0
    assert "toy" in result.output and "toy-dist 1.2" in result.output
    assert "Linear toy encoder" in result.output
    assert "BouncingBalls" not in result.output  # --kind filters


def test_check_builds_every_component_and_counts_parameters(toy, recipe):
    result = invoke("check", recipe, "--set", "encoder.hidden_dim=3")
    assert result.exit_code == 0, result.output
    # CartPole obs (4,) -> hidden 3 -> latent 4: (4*3+3) + (3*4+4) = 31 parameters
    assert "OK:" in result.output and "31 encoder parameters" in result.output
    assert "toy_mse x0.5" in result.output


def test_check_lists_each_loss_under_its_index(toy, recipe):
    result = invoke(
        "check", recipe, "--set", "losses=[{name='toy_mse'}, {name='toy_mse', weight=2}]"
    )
    assert result.exit_code == 0, result.output
    assert "losses[0]" in result.output and "losses[1]" in result.output
    assert "toy_mse x1" in result.output and "toy_mse x2" in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["check", "{recipe}", "--set", "encoder.hidden_dim=abc"],
            'encoder.hidden_dim: expected an int, got "abc"',
        ),
        (
            ["check", "{recipe}", "--set", "encoder.name=tyo"],
            "unknown encoder 'tyo' (did you mean 'toy'?)",
        ),
        (["check", "{dir}/absent.toml"], "recipe file not found"),
        (
            ["check", "{recipe}", "--set", "train.betas=[0.9]"],
            "train.betas: expected an array of 2 numbers, got an array of 1",
        ),
        (
            ["check", "{recipe}", "--set", "data.env_id=NoSuchEnv-v9"],
            "data.env_id: cannot make environment 'NoSuchEnv-v9'",
        ),
        (["check", "{recipe}", "--set", "train.lr=inf"], "train.lr: expected a finite number"),
        (
            ["check", "{recipe}", "--set", "losses.0.weight=-0.5"],
            "losses[0].weight: expected a finite number >= 0, got -0.5",
        ),
        (
            ["check", "{recipe}", "--set", "data.env_id='os:CartPole-v1'"],
            "would import the module 'os'",
        ),
        (
            ["check", "{recipe}", "--set", "log.runs_dir=''"],
            'log.runs_dir: expected a path, got ""',
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(toy, recipe, args, expected):
    args = [a.format(recipe=recipe, dir=recipe.parent) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0  # one line
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nlatent_dim = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "lejepa_core.cli", "check", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert (
        out.stderr.startswith("Error: ")
        and "model.latent_dim: expected a positive value, got 0" in out.stderr
    )
    assert "Traceback" not in out.stderr


def test_describe_shows_parameters_defaults_and_help(toy):
    result = invoke("describe", "encoder", "toy")
    assert result.exit_code == 0
    assert "toy-dist 1.2" in result.output and "Linear toy encoder" in result.output
    for text in ("hidden_dim", "int", "8", "hidden width", "dropout", "number"):
        assert text in result.output
    assert "array of strings" in result.output  # tags: tuple[str, ...]


def test_describe_unknown_component_exits_2(toy):
    result = CliRunner().invoke(main, ["describe", "encoder", "tyo"])
    assert result.exit_code == 2 and "did you mean 'toy'" in result.output


@pytest.mark.parametrize("recipe", ["multi_k_physics", "lejepa_physics", "arc_vq", "arc_fsq"])
def test_shipped_recipes_validate_and_build(recipe, tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.toml"
    # a data path that does not exist: the spec comes from the env, nothing is generated
    result = invoke("check", path, "--set", f"data.path={(tmp_path / 'absent.h5').as_posix()}")
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output
    assert not (tmp_path / "absent.h5").exists()


@pytest.fixture
def failing_command():
    """A throwaway command ``fail-with`` raising what ``failing_command.error`` holds."""
    box = {}

    @click.command("fail-with")
    def fail_with():
        raise box["error"]

    main.add_command(fail_with)
    yield box
    main.commands.pop("fail-with")


@pytest.mark.parametrize(
    "error, code, expected",
    [
        (
            OSError(28, "No space left on device", "/data/x.h5"),
            1,
            "No space left on device: /data/x.h5",
        ),
        (MemoryError(), 1, "out of memory (MemoryError)"),
        (KeyboardInterrupt(), 130, "interrupted (Ctrl-C)"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "not UTF-8"),
        (RecipeError("first line\n  second line"), 2, "first line second line"),
    ],
)
def test_failures_of_the_machine_and_multi_line_messages_are_one_line(
    failing_command, error, code, expected
):
    failing_command["error"] = error
    result = CliRunner().invoke(main, ["fail-with"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert result.stderr.startswith("Error: ") and expected in result.stderr
    assert "Traceback" not in result.output


def test_a_bug_still_shows_its_traceback(failing_command):
    failing_command["error"] = RuntimeError("a bug in lejepa")
    with pytest.raises(RuntimeError, match="a bug in lejepa"):
        CliRunner().invoke(main, ["fail-with"], catch_exceptions=False)
