"""docs/plugins.md is runnable: its Python blocks run as they are, every component it defines
passes the conformance kit, its environment passes gymnasium's checker, and a recipe made of
nothing but the page's components and environment passes ``lejepa check`` and trains."""

import re
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from lejepa_core import registry as registry_module
from lejepa_core.cli import main
from lejepa_core.registry import get_plugin_manager, get_registry
from lejepa_core.testing import check_component, component_cases

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
DIST = "plugins-md"

RECIPE = """
[model]
latent_dim = 8

[encoder]
name = "linear"

[predictor]
name = "delta"

[quantizer]
name = "nearest"
codebook_size = 16

[masker]
name = "frame_drop"

[[losses]]
name = "masked_view_l1"

[data]
path = "{path}"
env_id = "myorg/Drift-v0"
episodes = 8
steps = 20
context_frames = 2
horizons = [1, 2]
val_fraction = 0.25

[train]
epochs = 1
steps_per_epoch = 3
batch_size = 8
val_windows = 8
warmup_steps = 1
device = "cpu"

[log]
progress = false
tensorboard = false
runs_dir = "{runs}"
"""


def run_blocks() -> types.ModuleType:
    """Every Python block of the page, in order, in one module (as a reader would paste them)."""
    module = types.ModuleType("plugins_md")
    for block in BLOCKS:
        exec(compile(block, str(DOC), "exec"), module.__dict__)
    return module


@pytest.fixture
def page_plugin():
    """The page's components and env, registered as one plugin of distribution ``plugins-md``."""
    registry_module.reset()
    pm = get_plugin_manager()
    name = pm.register_plugin(run_blocks(), "plugins-md", distribution=DIST, version="0")
    yield get_registry()
    pm.unregister(name=name)
    registry_module.reset()


def test_the_page_has_an_example_of_every_kind(page_plugin):
    kinds = {case.kind for case in component_cases(DIST)}
    assert kinds == {"encoder", "predictor", "quantizer", "loss", "masker"}
    assert "myorg/Drift-v0" in page_plugin.names("env")
    assert not [b for b in page_plugin.broken if b.distribution == DIST]


@pytest.mark.parametrize("kind", ["encoder", "predictor", "quantizer", "loss", "masker"])
def test_every_component_on_the_page_passes_the_conformance_kit(page_plugin, kind):
    (case,) = [c for c in component_cases(DIST) if c.kind == kind]
    assert check_component(case.kind, case.cls, name=case.name)


def test_the_page_env_passes_gymnasiums_checker(page_plugin):
    from gymnasium.utils.env_checker import check_env

    module = run_blocks()
    check_env(module.DriftEnv(), skip_render_check=True)


def test_the_testing_snippet_runs_on_its_own():
    """The last block (testing without installing) needs nothing from the blocks before it."""
    assert "pm.unregister" in BLOCKS[-1]
    registry_module.reset()
    try:
        exec(compile(BLOCKS[-1], str(DOC), "exec"), {})
        assert "keep_all" not in get_registry().names("masker")  # unregistered again
    finally:
        registry_module.reset()


def test_a_recipe_of_the_page_components_checks_and_trains(page_plugin, tmp_path):
    recipe = tmp_path / "page.toml"
    recipe.write_text(
        RECIPE.format(path=(tmp_path / "drift.h5").as_posix(), runs=(tmp_path / "runs").as_posix())
    )
    result = CliRunner().invoke(main, ["check", str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.count(DIST) == 5  # encoder, predictor, quantizer, masker, loss
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["run", str(recipe), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "best.pt").is_file()
