"""A separately packaged plugin, really installed, is found through the entry-point group."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # pip installs and lejepa subprocesses

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third_party_plugin"

RECIPE = """
[model]
latent_dim = 8

[encoder]
name = "example_linear"
scale = 2.0

[predictor]
name = "residual"

[[losses]]
name = "example_logcosh"

[data]
path = "{path}"
env_id = "lejepa/BouncingBalls-v0"
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --no-deps`` the example into a folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    )
    env["COLUMNS"] = "160"  # table rows on one line each (the kinds column is 14 wide)
    return env


def lejepa(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "lejepa_core.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
    )


def test_plugins_lists_the_installed_distribution(installed):
    out = lejepa(installed, "plugins")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "example_" in line]
    assert any("example_linear" in line and "lejepa-example-plugin" in line for line in lines)
    assert any("example_logcosh" in line and "lejepa-example-plugin" in line for line in lines)


def test_check_builds_a_recipe_that_uses_it(installed, tmp_path):
    recipe = tmp_path / "third_party.toml"
    recipe.write_text(RECIPE.format(path=(tmp_path / "none.h5").as_posix()))
    out = lejepa(installed, "check", recipe)
    assert out.returncode == 0, out.stderr
    assert "example_linear" in out.stdout and "lejepa-example-plugin" in out.stdout


def test_disabling_it_by_name_removes_it(installed, tmp_path):
    env = dict(installed, LEJEPA_DISABLE_PLUGINS="example")
    out = lejepa(env, "plugins", "--kind", "encoder")
    assert "example_linear" not in out.stdout
    assert "disabled: lejepa-example-plugin:example" in out.stdout


def test_the_example_passes_its_own_conformance_suite(installed):
    """The example's tests call lejepa_core.testing on every component it registers."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=installed,
        capture_output=True,
        text=True,
        cwd=EXAMPLE,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "7 passed" in out.stdout


def test_the_example_env_is_registered_through_the_hook(installed):
    out = lejepa(installed, "plugins")
    assert out.returncode == 0, out.stderr
    assert any(
        "example/DampedPendulum-v0" in line and "lejepa-example-plugin" in line
        for line in out.stdout.splitlines()
    )
    assert "example_dropout" in out.stdout
