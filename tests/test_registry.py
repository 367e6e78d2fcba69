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
from tests.toy_plugin import ToyEncoder, ToyPlugin


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

    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", fake_entry_points)
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
