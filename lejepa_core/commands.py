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
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe field (repeatable), e.g. --set train.lr=3e-4.",
)
def check_command(recipe: str, overrides: tuple[str, ...]) -> None:
    """Validate RECIPE, build every component and run one training step (forward and
    backward) on a tiny synthetic batch; train nothing. Warns about weighted losses that no
    gradient path connects to a trainable parameter (they would shape nothing)."""
    from lejepa_core.build import build_components, check_memory, count_parameters, model_spec
    from lejepa_core.recipe import load_recipe
    from lejepa_core.training.grad_paths import gradient_path_warnings

    loaded = load_recipe(recipe, overrides)
    spec = model_spec(loaded)
    check_memory(loaded, spec, loaded.train.device)  # before anything is allocated
    components = build_components(loaded, spec)
    one_training_step(loaded, spec)
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
        reg = registry.registration(kind, config.name)
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


def one_training_step(recipe, spec) -> None:
    """One forward and backward step of the recipe's real model (``build_model``) on a tiny
    synthetic batch (``lejepa_core.testing.observations``). A component that breaks its
    contract (shape, dtype, not a ``LossOutput``, ...) or raises is a ``UserInputError``
    naming it in one line: a wrong shape fails here, not deep inside ``lejepa run``."""
    import torch

    from lejepa_core.build import build_model
    from lejepa_core.errors import UserInputError
    from lejepa_core.testing import observations

    model = build_model(recipe, spec)
    registry = get_registry()

    def label(kind: str, table: str, name: str) -> str:
        return f"{table} {name!r} ({registry.registration(kind, name).plugin.distribution})"

    roles = {  # id(module) -> (kind, label); the quantizer is optional
        id(getattr(model, attr)): (kind, label(kind, kind, getattr(recipe, kind).name))
        for attr, kind in [("context_encoder", "encoder"), ("predictor", "predictor")]
        + [("quantizer", "quantizer"), ("masker", "masker")]
        if getattr(recipe, kind) is not None
    }
    for i, (loss, config) in enumerate(zip(model.losses, recipe.losses, strict=True)):
        roles[id(loss)] = ("loss", label("loss", f"losses[{i}]", config.name))
    running: list[str] = []

    def before(module, args):
        running.append(roles[id(module)][1])

    def after(module, args, out):
        kind, who = roles[id(module)]
        problem = _contract_problem(kind, args, out, spec.latent_dim)
        if problem:
            raise UserInputError(
                f"{recipe.source or 'recipe'}: {who} broke its contract in a training step on "
                f"a synthetic batch: {problem}"
            )
        running.pop()

    handles = []
    for module in (m for m in model.modules() if id(m) in roles):
        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    generator = torch.Generator().manual_seed(0)
    batch, window = 4, spec.context_frames
    context_obs = observations(spec, generator, batch * window)
    context_obs = context_obs.reshape(batch, window, *spec.obs_shape)
    k = torch.tensor([spec.horizons[i % len(spec.horizons)] for i in range(batch)])
    stage = "forward"
    try:
        step_loss, _ = model(
            context_obs,
            observations(spec, generator, batch),
            k,
            target_encoder=None,
            mask_generator=torch.Generator().manual_seed(1),
            loss_generator=torch.Generator().manual_seed(2),
            step=0,
        )
        stage = "backward"
        step_loss.total.backward()
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin's code is reported
        who = running[-1] if running else "the model"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserInputError(
            f"{recipe.source or 'recipe'}: {who} failed in the {stage} pass of a training step "
            f"on a synthetic batch: {type(exc).__name__}: {detail}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()


def _contract_problem(kind: str, args: tuple, out, latent_dim: int) -> str | None:
    """What ``out`` (of one forward on ``args``) breaks in ``kind``'s interface, or None."""
    import torch

    from lejepa_core.interfaces import LossOutput, QuantizerOutput

    def tensor(t, what: str, legend: str, expected: tuple[int, ...]) -> str | None:
        if not isinstance(t, torch.Tensor):
            return f"{what} is {type(t).__name__}, expected a tensor {legend}"
        if tuple(t.shape) != expected:
            return f"{what} has shape {tuple(t.shape)}, expected {legend} = {expected}"
        if not t.is_floating_point():
            return f"{what} has dtype {t.dtype}, expected a floating-point tensor"
        if not bool(torch.isfinite(t).all()):
            return f"{what} is not finite"
        return None

    n = getattr(args[0], "shape", (0,))[0]  # batch of the input (a loss gets StepOutputs)
    if kind == "encoder":
        return tensor(out, "forward(obs [N, *obs_shape])", "[N, D]", (n, latent_dim))
    if kind == "predictor":
        return tensor(out, "forward(z_context [B, W, D], k [B])", "[B, D]", (n, latent_dim))
    if kind == "quantizer":
        if not isinstance(out, QuantizerOutput):
            return f"forward(z) returned {type(out).__name__}, expected QuantizerOutput"
        z_q = tensor(out.z_q, "QuantizerOutput.z_q", "[N, D]", (n, latent_dim))
        return z_q or tensor(out.loss, "QuantizerOutput.loss", "0-d", ())
    if kind == "loss":
        if not isinstance(out, LossOutput):
            return f"forward(outputs) returned {type(out).__name__}, expected LossOutput(value, metrics)"
        return tensor(out.value, "LossOutput.value", "0-d", ())
    obs = args[0]  # masker
    if not (isinstance(out, tuple) and len(out) == 2):
        return f"forward(obs, generator) returned {type(out).__name__}, expected (masked_obs, mask)"
    masked, mask = out
    if not isinstance(masked, torch.Tensor) or masked.shape != obs.shape:
        return f"masked_obs must have the input's shape {tuple(obs.shape)}"
    if masked.dtype != obs.dtype:
        return f"masked_obs has dtype {masked.dtype}, expected the input's {obs.dtype}"
    if not (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool):
        return "mask must be a bool tensor (True = hidden)"
    try:
        torch.broadcast_shapes(mask.shape, obs.shape)
    except RuntimeError:
        return f"mask {tuple(mask.shape)} does not broadcast to {tuple(obs.shape)}"
    return None


@click.command("plugins")
@click.option("--kind", type=click.Choice(ALL_KINDS), help="Only this kind of component.")
def plugins_command(kind: str | None) -> None:
    """List every registered component, and plugins that are broken or disabled."""
    registry = get_registry()
    table = Table(title="registered components")
    for column in ("kind", "name", "provided by", "description"):
        table.add_column(column, overflow="fold")
    shadowed = [r for (k, _), regs in registry.shadowed.items() if kind in (None, k) for r in regs]
    for reg in registry.registrations(kind) + shadowed:
        dist = f"{reg.plugin.distribution} {reg.plugin.version}".strip()
        name = reg.qualified_name if reg in shadowed else reg.name
        table.add_row(reg.kind, name, dist, reg.description)
    console = _console()
    console.print(table)
    for reg in shadowed:
        console.print(
            f"[bold yellow]shadowed[/]: {reg.kind} {reg.name!r} of {reg.plugin.distribution} is "
            f"the built-in's; name it {reg.qualified_name!r} in a recipe",
            highlight=False,
        )
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
@click.argument("kind", type=click.Choice([k for k in ALL_KINDS if k not in ("env", "grid_rules")]))
@click.argument("name")
def describe_command(kind: str, name: str) -> None:
    """Show a component's description and parameters (the keys of its recipe table)."""
    import inspect

    registry = get_registry()
    cls = registry.get(kind, name)
    reg = registry.registration(kind, name)
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
