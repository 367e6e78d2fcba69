import attrs
import pytest
import torch

from lejepa_core import Encoder, hookimpl
from lejepa_core import registry as registry_module
from lejepa_core.errors import (
    DuplicateComponentError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from lejepa_core.interfaces import ModelSpec
from lejepa_core.registry import get_plugin_manager, get_registry
from tests.toy_plugin import ToyEncoder, ToyLoss, ToyPlugin


@pytest.fixture
def fresh(monkeypatch):
    """A registry built from scratch for this test, forgotten afterwards."""
    monkeypatch.delenv("LEJEPA_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("LEJEPA_STRICT_PLUGINS", raising=False)
    registry_module.reset()
    yield
    registry_module.reset()


@pytest.fixture
def toy(fresh):
    pm = get_plugin_manager()
    name = pm.register_plugin(ToyPlugin(), "toy-plugin", distribution="toy-dist", version="9.9")
    yield get_registry()
    pm.unregister(name=name)


@pytest.mark.slow
def test_importing_lejepa_core_builds_no_plugin_manager():
    import subprocess
    import sys

    code = (
        "import lejepa_core, lejepa_core.registry as r, sys; "
        "assert r._PLUGIN_MANAGER is None; assert 'lejepa_plugins.encoders' not in sys.modules; print('lazy')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


def test_builtin_plugins_arrive_through_the_entry_point_group(fresh):
    pm = get_plugin_manager()
    infos = {info.distribution for info in pm.infos.values()}
    assert "lejepa-core" in infos
    assert "lejepa/BouncingBalls-v0" in get_registry().names("env")


def test_registered_plugin_components_are_listed_with_provenance(toy):
    assert "toy" in toy.names("encoder")
    assert toy.get("encoder", "toy") is ToyEncoder
    reg = toy.tables["encoder"]["toy"]
    assert (reg.plugin.distribution, reg.plugin.version) == ("toy-dist", "9.9")
    assert reg.description == "Linear toy encoder. obs [B, *obs] -> [B, D]."
    assert toy.names("encoder", "to*") == ["toy"]


def test_unknown_name_suggests_close_matches_and_lists_registered(toy):
    with pytest.raises(UnknownComponentError) as info:
        toy.get("encoder", "tyo")
    message = str(info.value)
    assert "unknown encoder 'tyo'" in message
    assert "did you mean 'toy'" in message
    assert "registered encoders:" in message and "toy" in message


@pytest.mark.parametrize(
    "kind, listed",
    [
        ("loss", "registered losses: .*toy_mse"),
        ("masker", "registered maskers: "),
        ("env", "registered envs: "),
    ],
)
def test_unknown_name_lists_the_kind_in_plural(toy, kind, listed):
    with pytest.raises(UnknownComponentError, match=listed):
        toy.get(kind, "nope")


def test_unknown_name_mentions_broken_plugins(fresh):
    class Broken:
        @hookimpl
        def register_encoders(self, register):
            raise RuntimeError("boom")

    pm = get_plugin_manager()
    pm.register_plugin(Broken(), "broken-plugin", distribution="broken-dist", version="0.0.1")
    registry = get_registry()
    assert any(b.name == "broken-plugin" and "boom" in b.error for b in registry.broken)
    with pytest.raises(UnknownComponentError, match="failed to load.*broken-plugin.*boom"):
        registry.get("encoder", "whatever")


def test_duplicate_names_are_a_conflict_naming_both_plugins(fresh):
    class First:
        @hookimpl
        def register_encoders(self, register):
            register("same", ToyEncoder)

    class Second:
        @hookimpl
        def register_encoders(self, register):
            register("same", ToyEncoder)

    pm = get_plugin_manager()
    pm.register_plugin(First(), "first", distribution="dist-one", version="1")
    pm.register_plugin(Second(), "second", distribution="dist-two", version="2")
    registry = get_registry()
    assert "same" not in registry.names("encoder")  # neither silently wins
    with pytest.raises(DuplicateComponentError, match="dist-one.*dist-two"):
        registry.get("encoder", "same")


def test_strict_mode_makes_conflicts_and_failures_fatal(fresh, monkeypatch):
    class Broken:
        @hookimpl
        def register_losses(self, register):
            raise RuntimeError("bad hook")

    pm = get_plugin_manager()
    pm.register_plugin(Broken(), "broken", distribution="b", version="1")
    monkeypatch.setenv("LEJEPA_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="broken.*bad hook"):
        get_registry()


@pytest.mark.parametrize(
    "obj, message",
    [
        (object, "expected a subclass of lejepa_core.Encoder"),
        (type("Abstract", (Encoder,), {}), "does not implement forward"),
        (
            type("NoAttrs", (Encoder,), {"Params": dict, "forward": lambda s, o: o}),
            "Params must be an attrs class",
        ),
    ],
)
def test_registration_validates_against_the_interface(obj, message):
    with pytest.raises(InvalidComponentError, match=message):
        registry_module.validate_component("encoder", "x", obj)


def test_params_fields_need_defaults():
    @attrs.frozen(kw_only=True)
    class Params:
        width: int

    cls = type("NeedsWidth", (Encoder,), {"Params": Params, "forward": lambda s, o: o})
    with pytest.raises(InvalidComponentError, match="needs a default; missing: width"):
        registry_module.validate_component("encoder", "x", cls)


def test_invalid_registration_is_recorded_as_broken_hook(fresh):
    class Bad:
        @hookimpl
        def register_encoders(self, register):
            register("bad", object)

    get_plugin_manager().register_plugin(Bad(), "bad", distribution="bad-dist", version="1")
    broken = get_registry().broken
    assert any(b.stage == "register_encoders" and "subclass" in b.error for b in broken)


def test_disabled_plugins_are_skipped(fresh, monkeypatch):
    monkeypatch.setenv("LEJEPA_DISABLE_PLUGINS", "envs, nothing")
    registry = get_registry()
    assert registry.names("env") == []
    assert [p.name for p in registry.pm.disabled] == ["lejepa-core:envs"]


def test_broken_entry_point_does_not_break_the_others(fresh, monkeypatch):
    import importlib.metadata as md

    real = md.entry_points

    def fake_entry_points(group):
        eps = list(real(group=group))
        bad = md.EntryPoint(name="kaputt", value="lejepa_no_such_module", group="lejepa")
        return [bad, *eps]

    monkeypatch.setattr(md, "entry_points", fake_entry_points)
    pm = get_plugin_manager()
    assert any(b.name.endswith(":kaputt") and "No module named" in b.error for b in pm.broken)
    assert "lejepa/BouncingBalls-v0" in get_registry().names("env")


def test_build_uses_params_and_spec(toy):
    from lejepa_core.recipe import ComponentConfig

    spec = ModelSpec(obs_shape=(3, 4), latent_dim=5)
    config = ComponentConfig(name="toy", params=ToyEncoder.Params(hidden_dim=7))
    encoder = toy.build("encoder", config, spec)
    assert encoder(torch.zeros(2, 3, 4)).shape == (2, 5)
    assert encoder.net[0].out_features == 7


# ----------------------------------------------------------------- misspelled hooks (issue 13)
class MisspelledPlugin:
    """A plugin whose encoder hook is misspelled (``register_encoder``)."""

    @hookimpl
    def register_encoder(self, register):
        register("never", ToyEncoder)

    @hookimpl
    def register_losses(self, register):
        register("never_loss", ToyEncoder)


MISSPELLED = MisspelledPlugin()


def test_misspelled_hook_is_a_broken_plugin_named_with_the_close_match(fresh):
    pm = get_plugin_manager()
    name = pm.register_plugin(MISSPELLED, "typo", distribution="typo-dist", version="0.3")
    assert pm.get_plugin(name) is None  # not registered: none of its hooks run
    registry = get_registry()
    (broken,) = [b for b in registry.broken if b.distribution == "typo-dist"]
    assert broken.stage == "registration"
    assert "unknown hook register_encoder (did you mean register_encoders?)" in broken.error
    assert "never_loss" not in registry.names("loss")
    assert "mlp" in registry.names("encoder")  # everything else keeps working


def test_misspelled_hook_in_an_entry_point_does_not_break_any_command(fresh, monkeypatch):
    """pluggy's check_pending would raise PluginValidationError for every command."""
    import importlib.metadata as md

    from click.testing import CliRunner

    from lejepa_core.cli import main

    real = md.entry_points
    typo = md.EntryPoint(name="typo", value=f"{__name__}:MISSPELLED", group="lejepa")
    monkeypatch.setattr(md, "entry_points", lambda group: [typo, *real(group=group)])
    result = CliRunner().invoke(main, ["plugins", "--kind", "loss"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "broken" in output and ":typo" in output
    assert "unknown hook register_encoder (did you mean register_encoders?)" in output
    result = CliRunner().invoke(main, ["describe", "encoder", "mlp"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_misspelled_hook_is_fatal_in_strict_mode(fresh, monkeypatch):
    monkeypatch.setenv("LEJEPA_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="typo.*unknown hook register_encoder"):
        get_plugin_manager().register_plugin(MISSPELLED, "typo", distribution="typo-dist")


# ----------------------------------------------------------------- Params checked at registration
def test_params_default_that_contradicts_its_annotation_is_refused():
    from lejepa_core.params import param

    @attrs.frozen(kw_only=True)
    class Params:
        num_frequencies: str = param(64, "frequencies")

    cls = type("Fourier", (Encoder,), {"Params": Params, "forward": lambda s, o: o})
    with pytest.raises(
        InvalidComponentError,
        match=r"encoder 'x': Params defaults do not match their annotations: "
        r"Fourier.Params.num_frequencies: expected a string, got 64",
    ):
        registry_module.validate_component("encoder", "x", cls)


def test_params_default_that_fails_its_validator_is_refused():
    from lejepa_core.params import param, positive

    @attrs.frozen(kw_only=True)
    class Params:
        width: int = param(-1, "width", positive)

    cls = type("Negative", (Encoder,), {"Params": Params, "forward": lambda s, o: o})
    with pytest.raises(InvalidComponentError, match="Negative.Params: .*positive"):
        registry_module.validate_component("encoder", "x", cls)


# ----------------------------------------------------------------- name clashes with built-ins
class ClashingPlugin:
    @hookimpl
    def register_encoders(self, register):
        register("mlp", ToyEncoder)


def test_builtin_keeps_its_name_and_the_third_party_is_reachable_qualified(fresh):
    pm = get_plugin_manager()
    pm.register_plugin(ClashingPlugin(), "clash", distribution="clash-dist", version="1")
    registry = get_registry()
    assert registry.tables["encoder"]["mlp"].plugin.distribution == "lejepa-core"
    assert registry.get("encoder", "clash-dist:mlp") is ToyEncoder
    assert registry.get("encoder", "lejepa-core:mlp") is registry.get("encoder", "mlp")
    assert [r.qualified_name for r in registry.shadowed[("encoder", "mlp")]] == ["clash-dist:mlp"]
    assert not registry.conflicts
    with pytest.raises(UnknownComponentError, match="did you mean 'clash-dist:mlp'"):
        registry.get("encoder", "clash-dist:mpl")


def test_builtin_wins_whatever_the_registration_order(fresh):
    """A third party loaded before the built-ins still ends up shadowed."""
    pm = get_plugin_manager()
    builtins = [(n, p) for n, p in pm.list_name_plugin() if n.startswith("lejepa-core:")]
    for n, _ in builtins:
        pm.unregister(name=n)
    pm.register_plugin(ClashingPlugin(), "clash", distribution="clash-dist")
    for n, p in builtins:
        pm.register(p, name=n)
    registry = get_registry()
    assert registry.tables["encoder"]["mlp"].plugin.distribution == "lejepa-core"
    assert registry.get("encoder", "clash-dist:mlp") is ToyEncoder


def test_two_third_parties_still_conflict_and_each_is_reachable_qualified(fresh):
    class Other:
        @hookimpl
        def register_encoders(self, register):
            register("toy", ToyEncoder)

    pm = get_plugin_manager()
    pm.register_plugin(ToyPlugin(), "toy", distribution="dist-one")
    pm.register_plugin(Other(), "other", distribution="dist-two")
    registry = get_registry()
    with pytest.raises(
        DuplicateComponentError, match="dist-one.*dist-two.*'dist-one:toy' or 'dist-two:toy'"
    ):
        registry.get("encoder", "toy")
    assert registry.get("encoder", "dist-two:toy") is ToyEncoder


def test_a_recipe_names_a_shadowed_component_by_its_qualified_name(fresh, tmp_path):
    from lejepa_core.recipe import load_recipe
    from tests.toy_plugin import TOY_RECIPE

    class ClashingLoss:
        @hookimpl
        def register_losses(self, register):
            register("l1", ToyLoss)

    get_plugin_manager().register_plugin(ToyPlugin(), "toy", distribution="toy-dist")
    get_plugin_manager().register_plugin(ClashingLoss(), "clash", distribution="clash-dist")
    path = tmp_path / "r.toml"
    path.write_text(TOY_RECIPE.format(path="absent.h5").replace('"toy_mse"', '"clash-dist:l1"'))
    recipe = load_recipe(path)
    assert recipe.losses[0].name == "clash-dist:l1"
    assert recipe.loss_labels() == ["l1"]
    assert load_recipe(path, ["losses.0.name=l1"]).losses[0].name == "l1"  # the built-in


def test_names_with_a_colon_are_refused(fresh):
    class Colon:
        @hookimpl
        def register_encoders(self, register):
            register("a:b", ToyEncoder)

    get_plugin_manager().register_plugin(Colon(), "colon", distribution="c")
    assert any("without ':'" in b.error for b in get_registry().broken)


# ----------------------------------------------------------------- LEJEPA_DISABLE_PLUGINS
def test_unknown_names_in_disable_plugins_warn(fresh, monkeypatch, capsys):
    monkeypatch.setenv("LEJEPA_DISABLE_PLUGINS", "envs,maskrs")
    get_plugin_manager()
    err = capsys.readouterr().err
    assert "LEJEPA_DISABLE_PLUGINS names 'maskrs', which is no installed plugin" in err
    assert "did you mean 'maskers'?" in err
    assert "'envs'" not in err


def test_component_cases_include_a_shadowed_component_by_its_qualified_name(fresh):
    from lejepa_core.testing import component_cases

    get_plugin_manager().register_plugin(ClashingPlugin(), "clash", distribution="clash-dist")
    assert [(str(c), c.cls) for c in component_cases("clash-dist")] == [
        ("encoder:clash-dist:mlp", ToyEncoder)
    ]
    assert "encoder:mlp" in {str(c) for c in component_cases("lejepa-core")}
