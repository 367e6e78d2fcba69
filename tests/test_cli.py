import click
import pytest
import torch
from click.testing import CliRunner

from lejepa_core import hookimpl
from lejepa_core import registry as registry_module
from lejepa_core.cli import BUILTIN_COMMANDS, main
from lejepa_core.errors import RecipeError
from lejepa_core.registry import get_plugin_manager
from tests.toy_plugin import (
    TOY_RECIPE,
    ToyEncoder,
    ToyLoss,
    ToyMasker,
    ToyPlugin,
    ToyPredictor,
)


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


@pytest.mark.parametrize(
    "recipe",
    ["multi_k_physics", "lejepa_physics", "arc_vq", "arc_fsq", "arc_objects", "arc_cells"],
)
def test_shipped_recipes_validate_and_build(recipe, tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.toml"
    # a data path that does not exist: the spec comes from the env, nothing is generated
    result = invoke("check", path, "--set", f"data.path={(tmp_path / 'absent.h5').as_posix()}")
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output
    assert not (tmp_path / "absent.h5").exists()


def test_a_plugin_that_registers_a_builtin_name_does_not_break_the_quick_start(tmp_path):
    """The built-in keeps ``mlp``; ``plugins`` shows the shadowing and the qualified name."""
    from pathlib import Path

    class Clash:
        @hookimpl
        def register_encoders(self, register):
            register("mlp", ToyEncoder)

    registry_module.reset()
    pm = get_plugin_manager()
    pm.register_plugin(Clash(), "clash", distribution="clash-dist", version="0.1")
    try:
        recipe = Path(__file__).resolve().parents[1] / "recipes" / "multi_k_physics.toml"
        data = f"data.path={(tmp_path / 'absent.h5').as_posix()}"
        result = invoke("check", recipe, "--set", data)
        assert result.exit_code == 0, result.output
        assert "lejepa-core" in result.output
        result = invoke("check", recipe, "--set", data, "--set", "encoder={name='clash-dist:mlp'}")
        assert result.exit_code == 0, result.output
        assert "clash-dist" in result.output
        output = " ".join(invoke("plugins", "--kind", "encoder").output.split())
        assert "clash-dist:mlp" in output
        assert "shadowed: encoder 'mlp' of clash-dist is the built-in's;" in output
    finally:
        pm.unregister(name="clash")
        registry_module.reset()


# ----------------------------------------------------------------- check runs one training step
class _WrongShapePredictor(ToyPredictor):
    """Returns one latent too many."""

    def forward(self, z_context, k):
        return torch.cat([z_context[:, -1], z_context[:, -1, :1]], dim=1)  # [B, D + 1]


class _BareTensorLoss(ToyLoss):
    """Returns a tensor instead of a LossOutput."""

    def forward(self, outputs):
        return (outputs.prediction - outputs.target).abs().mean()


class _IntegerEncoder(ToyEncoder):
    """Returns integer latents."""

    def forward(self, obs):
        return super().forward(obs).long()


class _FloatMaskMasker(ToyMasker):
    """Returns a float mask."""

    def forward(self, obs, generator):
        return obs, torch.zeros_like(obs)


class _RaisingPredictor(ToyPredictor):
    """Indexes past the window."""

    def forward(self, z_context, k):
        return z_context[:, 99]


class _Broken:
    @hookimpl
    def register_predictors(self, register):
        register("wrong_shape", _WrongShapePredictor)
        register("raising", _RaisingPredictor)

    @hookimpl
    def register_losses(self, register):
        register("bare_tensor", _BareTensorLoss)

    @hookimpl
    def register_encoders(self, register):
        register("integer", _IntegerEncoder)

    @hookimpl
    def register_maskers(self, register):
        register("float_mask", _FloatMaskMasker)


@pytest.fixture
def broken(toy):
    pm = get_plugin_manager()
    name = pm.register_plugin(_Broken(), "broken", distribution="broken-dist", version="0.1")
    yield
    pm.unregister(name=name)


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "predictor.name=wrong_shape",
            "predictor 'wrong_shape' (broken-dist) broke its contract in a training step on a "
            "synthetic batch: forward(z_context [B, W, D], k [B]) has shape (4, 5), expected "
            "[B, D] = (4, 4)",
        ),
        (
            "losses=[{name='bare_tensor'}]",
            "losses[0] 'bare_tensor' (broken-dist) broke its contract in a training step on a "
            "synthetic batch: forward(outputs) returned Tensor, expected LossOutput(value, metrics)",
        ),
        (
            "encoder.name=integer",
            "encoder 'integer' (broken-dist) broke its contract in a training step on a synthetic "
            "batch: forward(obs [N, *obs_shape]) has dtype torch.int64, expected a floating-point",
        ),
        (
            "masker.name=float_mask",
            "masker 'float_mask' (broken-dist) broke its contract in a training step on a "
            "synthetic batch: mask must be a bool tensor (True = hidden)",
        ),
        (
            "predictor.name=raising",
            "predictor 'raising' (broken-dist) failed in the forward pass of a training step on a "
            "synthetic batch: IndexError: index 99 is out of bounds",
        ),
    ],
)
def test_check_names_the_component_that_breaks_its_contract(broken, recipe, override, expected):
    result = CliRunner().invoke(main, ["check", str(recipe), "--set", override])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0  # one line


@pytest.mark.parametrize("name", sorted(BUILTIN_COMMANDS))
def test_every_option_has_help_and_repeatable_ones_say_so(name):
    command = main.get_command(click.Context(main), name)
    for option in (p for p in command.params if isinstance(p, click.Option)):
        assert option.help, f"lejepa {name} {option.opts[0]} has no help"
        if option.multiple:
            assert "(repeatable)" in option.help, f"lejepa {name} {option.opts[0]}"
        if option.default is None and option.secondary_opts:  # --x/--no-x without a default
            assert "default:" in option.help, f"lejepa {name} {option.opts[0]} shows no default"


def test_resume_warning_names_the_keys_that_differ(tmp_path, tiny_data):
    from tests.conftest import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, tiny_data)
    out = tmp_path / "run"
    short = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--device", "cpu"]
    first = invoke("run", recipe, *short, "--out", out)
    assert first.exit_code == 0, first.output
    resumed = invoke(
        "run", "--resume", out, *short, "--set", "log.every=1", "--set", "train.epochs=2"
    )
    assert resumed.exit_code == 0, resumed.output
    assert (
        f"warning: resuming {out} with a recipe that differs from its checkpoint's: "
        "log.every (2 -> 1), train.epochs (1 -> 2)"
    ) in resumed.output


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
