"""The ``check`` and ``plugins`` commands (the registry's face on the command line)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from lejepa_core.registry import ALL_KINDS, get_registry


def _console() -> Console:
    return Console(soft_wrap=False, width=max(100, Console().width))


@click.command("check")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe field."
)
def check_command(recipe: str, overrides: tuple[str, ...]) -> None:
    """Validate RECIPE and build every component; train nothing. Warns about weighted losses
    that no gradient path connects to a trainable parameter (they would shape nothing)."""
    from lejepa_core.build import build_components, count_parameters, model_spec
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.grad_paths import gradient_path_warnings

    loaded = load_recipe(recipe, overrides)
    spec = model_spec(loaded)
    components = build_components(loaded, spec)
    registry = get_registry()
    table = Table(
        title=f"{recipe}: obs {spec.obs_shape} {spec.obs_dtype}, latent_dim {spec.latent_dim}"
    )
    for column in ("component", "name", "provided by", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    rows = [
        (kind, kind, getattr(loaded, kind), getattr(components, kind))
        for kind in ("encoder", "predictor", "quantizer", "masker")
        if getattr(loaded, kind) is not None
    ]
    pairs = zip(loaded.losses, components.losses, strict=True)
    rows += [("loss", f"losses[{i}]", config, module) for i, (config, module) in enumerate(pairs)]
    total = 0
    for kind, label, config, module in rows:
        reg = registry.tables[kind][config.name]
        count = count_parameters(module)
        total += count
        name = config.name + (f" x{config.weight:g}" if kind == "loss" else "")
        table.add_row(label, name, reg.plugin.distribution, f"{count:,}")
    table.add_row("total", "", "", f"{total:,}")
    _console().print(table)
    for line in gradient_path_warnings(loaded, spec):
        click.echo(f"warning: {line}")
    click.echo(
        f"OK: {recipe} is valid; {count_parameters(components.encoder):,} encoder parameters."
    )


@click.command("plugins")
@click.option("--kind", type=click.Choice(ALL_KINDS), help="Only this kind of component.")
def plugins_command(kind: str | None) -> None:
    """List every registered component, and plugins that are broken or disabled."""
    registry = get_registry()
    table = Table(title="registered components")
    for column in ("kind", "name", "provided by", "description"):
        table.add_column(column, overflow="fold")
    for reg in registry.registrations(kind):
        dist = f"{reg.plugin.distribution} {reg.plugin.version}".strip()
        table.add_row(reg.kind, reg.name, dist, reg.description)
    console = _console()
    console.print(table)
    for (k, name), regs in registry.conflicts.items():
        if kind in (None, k):
            who = ", ".join(f"{r.plugin.distribution} {r.plugin.version}".strip() for r in regs)
            console.print(
                f"[bold red]conflict[/]: {k} {name!r} registered by {who}", highlight=False
            )
    for broken in registry.broken:
        console.print(
            f"[bold red]broken[/]: {broken.name} ({broken.distribution} {broken.version}) at {broken.stage}: {broken.error}",
            highlight=False,
        )
    for disabled in registry.pm.disabled:
        console.print(
            f"disabled: {disabled.name} ({disabled.distribution} {disabled.version})",
            highlight=False,
        )


def params_rows(params_cls: type) -> list[tuple[str, str, str, str]]:
    """(field, type, default, help) of an attrs parameter class."""
    import typing

    import attrs

    from lejepa_core.params import help_of
    from lejepa_core.structure import describe_type

    hints = typing.get_type_hints(params_cls)
    rows = []
    for field in attrs.fields(params_cls):
        default = (
            field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
        )
        type_name = describe_type(hints[field.name])
        rows.append((field.name, type_name, repr(default), help_of(field)))
    return rows


@click.command("describe")
@click.argument("kind", type=click.Choice([k for k in ALL_KINDS if k != "env"]))
@click.argument("name")
def describe_command(kind: str, name: str) -> None:
    """Show a component's description and parameters (the keys of its recipe table)."""
    import inspect

    registry = get_registry()
    cls = registry.get(kind, name)
    reg = registry.tables[kind][name]
    console = _console()
    console.print(
        f"[bold]{kind} {name}[/] ({reg.plugin.distribution} {reg.plugin.version})", highlight=False
    )
    console.print(inspect.getdoc(cls) or "", highlight=False)
    table = Table(title="parameters")
    for column in ("key", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for row in params_rows(cls.Params):
        table.add_row(*row)
    console.print(table)
