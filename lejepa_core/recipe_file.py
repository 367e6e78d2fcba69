"""A recipe's file: TOML parsing with one-line errors, and older keys read in their new form."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lejepa_core.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_recipe_data(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a ``RecipeError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "TOML recipes are UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None


def replaced_keys(
    data: dict[str, Any], errors: list[str], *, default_batch_size: int
) -> dict[str, Any]:
    """Old keys in their new form: ``train.val_batches`` (until 0.2) becomes ``val_windows =
    val_batches x batch_size`` (the same sample), with a warning, so older runs still load."""
    train = data.get("train")
    if not isinstance(train, dict) or "val_batches" not in train:
        return data
    train = dict(train)
    batches = train.pop("val_batches")
    if "val_windows" in train or not isinstance(batches, int) or isinstance(batches, bool):
        errors.append("train.val_batches: replaced by train.val_windows; give val_windows only")
    else:
        batch_size = train.get("batch_size", default_batch_size)
        train["val_windows"] = windows = batches * batch_size
        note = f"read as val_windows = {batches} x {batch_size} = {windows}"
        print(
            f"warning: train.val_batches is replaced by train.val_windows; {note}", file=sys.stderr
        )
    return {**data, "train": train}
