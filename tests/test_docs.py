"""The docs name every recipe key and every built-in component (they are generated from,
and checked against, the same attrs classes the loader uses)."""

from pathlib import Path

import attrs
import pytest

from lejepa_core import recipe as recipe_module

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("table", ["model", "target", "data", "train", "log"])
def test_recipes_doc_lists_every_key(table):
    text = (DOCS / "recipes.md").read_text()
    cls = recipe_module._PLAIN_TABLES[table]
    assert f"[{table}]" in text
    for field in attrs.fields(cls):
        assert f"`{field.name}`" in text, f"docs/recipes.md misses {table}.{field.name}"


def test_components_doc_lists_every_builtin():
    from lejepa_core.registry import get_registry

    text = (DOCS / "components.md").read_text()
    registry = get_registry()
    for reg in registry.registrations():
        if reg.kind != "env" and reg.plugin.distribution == "lejepa-core":
            assert f"`{reg.name}`" in text, f"docs/components.md misses {reg.kind} {reg.name}"


def test_relative_links_resolve():
    """Every relative Markdown link in README.md and docs/ points at a file that exists."""
    import re

    root = DOCS.parent
    broken = []
    for page in [root / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert not broken, "broken links: " + ", ".join(broken)
