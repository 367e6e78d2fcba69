from pathlib import Path
from typing import Any, Literal

import pytest

from lejepa_core import registry as registry_module
from lejepa_core.commands import params_rows
from lejepa_core.errors import RecipeError
from lejepa_core.overrides import apply_overrides
from lejepa_core.recipe import (
    _PLAIN_TABLES,
    load_recipe,
    recipe_from_dict,
    tomllib,
)
from lejepa_core.registry import get_plugin_manager, get_registry
from lejepa_core.structure import describe_type
from tests.toy_plugin import TOY_RECIPE, ToyPlugin


@pytest.fixture(scope="module")
def registry():
    registry_module.reset()
    pm = get_plugin_manager()
    name = pm.register_plugin(ToyPlugin(), "toy-plugin", distribution="toy-dist", version="1")
    yield get_registry()
    pm.unregister(name=name)
    registry_module.reset()


def toy_data(**changes):
    data = tomllib.loads(TOY_RECIPE.format(path="x.h5"))
    for dotted, value in changes.items():
        apply_overrides(data, [f"{dotted}={value}"])
    return data


def errors_of(data, registry):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, source="r.toml", registry=registry)
    return info.value.errors


def test_valid_recipe_structures_into_params(registry):
    recipe = recipe_from_dict(toy_data(), source="r.toml", registry=registry)
    assert recipe.encoder.name == "toy" and recipe.encoder.params.hidden_dim == 16
    assert recipe.losses[0].weight == 0.5
    assert recipe.data.horizons == (1, 2) and recipe.model.latent_dim == 4
    assert recipe.train.lr == 1e-3  # default
    assert recipe.name == "r"


def test_round_trip_through_toml_is_identity(registry):
    recipe = recipe_from_dict(toy_data(), source="r.toml", registry=registry)
    again = recipe_from_dict(tomllib.loads(recipe.to_toml()), source="r.toml", registry=registry)
    assert again == recipe and again.hash() == recipe.hash()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"encoder.hidden_dim": '"abc"'}, 'encoder.hidden_dim: expected an int, got "abc"'),
        ({"encoder.hidden_dim": "1.7"}, "encoder.hidden_dim: expected an int, got 1.7"),
        ({"encoder.hidden_dim": "-3"}, "encoder.hidden_dim: expected a positive value, got -3"),
        ({"encoder.dropout": "1.5"}, "encoder.dropout: expected a value in [0.0, 1.0], got 1.5"),
        ({"train.compile": '"false"'}, 'train.compile: expected true or false, got "false"'),
        (
            {"target.mode": '"emma"'},
            'target.mode: expected one of "ema", "shared", "frozen", got "emma"',
        ),
        ({"data.horizons": "[]"}, "data.horizons: expected a non-empty array, got ()"),
        ({"data.horizons": "[1, 0]"}, "data.horizons: expected a positive value, got 0"),
        ({"losses.0.weight": '"heavy"'}, 'losses[0].weight: expected a number, got "heavy"'),
        ({"encoder.tags": "[1]"}, "encoder.tags[0]: expected a string, got 1"),
        (
            {"train.betas": "[0.9]"},
            "train.betas: expected an array of 2 numbers, got an array of 1",
        ),
        (
            {"train.betas": "[0.9, 0.99, 0.999]"},
            "train.betas: expected an array of 2 numbers, got an array of 3",
        ),
        ({"train.betas": "0.9"}, "train.betas: expected an array of 2 numbers, got 0.9"),
        ({"train.betas": '[0.9, "x"]'}, 'train.betas[1]: expected a number, got "x"'),
    ],
)
def test_each_error_names_its_place_and_expectation(registry, change, expected):
    assert expected in errors_of(toy_data(**change), registry)


def test_unknown_keys_get_a_suggestion(registry):
    data = toy_data()
    data["encoder"]["hiden_dim"] = 3
    data["train"] = {"learning_rate": 1}
    data["trian"] = {}
    errors = errors_of(data, registry)
    assert any(
        e.startswith("encoder.hiden_dim: unknown key (did you mean 'hidden_dim'?)") for e in errors
    )
    assert any(
        e.startswith("train.learning_rate: unknown key") and "known keys:" in e for e in errors
    )
    assert any(e.startswith("trian: unknown table (did you mean 'train'?)") for e in errors)


def test_all_errors_are_collected(registry):
    errors = errors_of(
        toy_data(**{"encoder.hidden_dim": "0", "train.lr": '"fast"', "model.latent_dim": "-1"}),
        registry,
    )
    assert len(errors) == 3


def test_unknown_component_lists_registered_ones(registry):
    errors = errors_of(toy_data(**{"encoder.name": '"tyo"'}), registry)
    assert any("encoder.name: unknown encoder 'tyo' (did you mean 'toy'?)" in e for e in errors)


def test_missing_required_tables(registry):
    errors = errors_of({"model": {"latent_dim": 4}}, registry)
    assert any(e.startswith("encoder: required table is missing") for e in errors)
    assert any(e.startswith("losses: expected at least one [[losses]] table") for e in errors)


def test_overrides_are_validated_like_the_file(tmp_path, registry):
    path = tmp_path / "r.toml"
    path.write_text(TOY_RECIPE.format(path="x.h5"))
    recipe = load_recipe(
        path, ["train.lr=3e-4", "encoder.hidden_dim=32", "data.path=other.h5"], registry=registry
    )
    assert (
        recipe.train.lr == 3e-4
        and recipe.encoder.params.hidden_dim == 32
        and recipe.data.path == "other.h5"
    )
    with pytest.raises(RecipeError, match="encoder.hidden_dim: expected an int"):
        load_recipe(path, ["encoder.hidden_dim=wide"], registry=registry)
    with pytest.raises(RecipeError, match="expected key.path=value"):
        load_recipe(path, ["train.lr"], registry=registry)
    with pytest.raises(RecipeError, match="expected an index below 1"):
        load_recipe(path, ["losses.3.weight=1"], registry=registry)


def test_file_errors_name_the_file(tmp_path, registry):
    with pytest.raises(RecipeError, match="recipe file not found: .*nope.toml"):
        load_recipe(tmp_path / "nope.toml", registry=registry)
    bad = tmp_path / "bad.toml"
    bad.write_text("[encoder\nname=")
    with pytest.raises(RecipeError, match="bad.toml: invalid TOML"):
        load_recipe(bad, registry=registry)


def test_loss_labels_are_unique(registry):
    data = toy_data()
    data["losses"].append({"name": "toy_mse"})
    data["losses"].append({"name": "toy_mse", "label": "extra"})
    recipe = recipe_from_dict(data, registry=registry)
    assert recipe.loss_labels() == ["toy_mse", "toy_mse2", "extra"]


def test_fixed_length_tuple_structures_and_round_trips(registry):
    recipe = recipe_from_dict(toy_data(**{"train.betas": "[0.8, 0]"}), registry=registry)
    assert recipe.train.betas == (0.8, 0.0) and isinstance(recipe.train.betas[1], float)
    assert recipe.to_dict()["train"]["betas"] == [0.8, 0.0]


def test_a_wrong_tuple_length_is_collected_with_the_other_errors(registry):
    errors = errors_of(toy_data(**{"train.betas": "[0.9]", "train.lr": '"fast"'}), registry)
    assert len(errors) == 2


@pytest.mark.parametrize(
    "tp, text",
    [
        (int, "int"),
        (float, "number"),
        (bool, "true or false"),
        (str, "string"),
        (tuple[int, ...], "array of ints"),
        (tuple[str, ...], "array of strings"),
        (list[float], "array of numbers"),
        (tuple[float, float], "array of 2 numbers"),
        (tuple[int, str], "array of 2 items"),
        (tuple[float, ...] | None, "array of numbers"),
        (int | str, "int or string"),
        (Literal["ema", "shared"], '"ema" | "shared"'),
        (dict[str, Any], "table"),
    ],
)
def test_describe_type_names_types_in_full(tp, text):
    assert describe_type(tp) == text


@pytest.mark.parametrize("table", sorted(_PLAIN_TABLES))
def test_recipes_doc_tables_match_describe(table):
    """docs/recipes.md shows each key exactly as ``lejepa describe`` would (type, default, help)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    for key, type_name, default, meaning in params_rows(_PLAIN_TABLES[table]):
        row = f"| `{key}` | {type_name.replace('|', chr(92) + '|')} | `{default}` | {meaning} |"
        assert row in text, f"docs/recipes.md: [{table}] row out of date; expected {row}"
