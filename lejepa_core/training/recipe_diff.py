"""What changed between the recipe a checkpoint was written with and the one resuming it
(``resume_run``'s warning names the keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lejepa_core import artifacts
from lejepa_core.errors import RecipeError
from lejepa_core.recipe import read_recipe_data


def _saved_recipe(saved: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The recipe a checkpoint was written with: its own copy when it has one, else the run's
    ``resolved_recipe.toml``; None when neither can be read."""
    if isinstance(saved.get("recipe"), dict):
        return saved["recipe"]
    try:
        return read_recipe_data(run_dir / artifacts.RESOLVED_RECIPE)
    except (RecipeError, UnicodeDecodeError):
        return None


def recipe_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``key.path (old -> new)`` for every dotted key (``losses.1.weight``, as ``--set`` names
    them) whose value differs between two resolved recipe dicts."""
    if old is None:
        return []

    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, (dict, list)):
            items = data.items() if isinstance(data, dict) else enumerate(data)
            return {k: v for key, value in items for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: data}

    before, after = flat(old), flat(new)

    def shown(flat_recipe: dict[str, Any], key: str) -> str:
        return json.dumps(flat_recipe[key]) if key in flat_recipe else "unset"

    return [
        f"{key} ({shown(before, key)} -> {shown(after, key)})"
        for key in sorted(before.keys() | after.keys())
        if before.get(key, ...) != after.get(key, ...)
    ]
