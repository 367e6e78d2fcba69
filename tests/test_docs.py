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


def test_readme_plugin_example_runs_and_conforms():
    """The README's plugin module registers and passes the conformance kit, as its text says."""
    import re
    import types

    from lejepa_core import registry
    from lejepa_core.testing import check_component

    text = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    plugin_block, kit_block = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    module = types.ModuleType("readme_plugin")
    exec(compile(plugin_block, "README.md", "exec"), module.__dict__)
    exec(compile(kit_block, "README.md", "exec"), module.__dict__)
    registry.reset()
    pm = registry.get_plugin_manager()
    name = pm.register_plugin(module, "readme", distribution="readme-dist")
    try:
        assert registry.get_registry().get("loss", "logcosh") is module.LogCoshLoss
        assert check_component("loss", module.LogCoshLoss)
    finally:
        pm.unregister(name=name)
        registry.reset()


def test_anchors_of_relative_links_exist():
    """``page.md#section`` links point at a heading of that page (GitHub's anchor rule)."""
    import re

    def anchors(page):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}

    root = DOCS.parent
    broken = []
    for page in [root / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)\s#]*)#([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target) if target else page
            if linked.is_file() and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(root)} -> {target}#{anchor}")
    assert not broken, "links to missing sections: " + ", ".join(broken)
