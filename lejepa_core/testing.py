"""Conformance kit for component authors, as gymnasium has ``check_env``.

    from lejepa_core.testing import check_component
    check_component("encoder", MyEncoder)                 # raises ConformanceError on a breach

or, in a plugin's own test suite, every component its distribution registers::

    import pytest
    from lejepa_core.testing import check_component, component_cases

    @pytest.mark.parametrize("case", component_cases("my-distribution"), ids=str)
    def test_conformance(case):
        check_component(case.kind, case.cls, name=case.name)

What is checked (docs/plugins.md#conformance-kit): the class implements its kind's interface
and carries a frozen attrs ``Params`` whose defaults round-trip through a recipe; it builds
from ``(Params(), spec)`` for at least one of the standard specs (state vectors, an integer
grid, an image) or the spec given; one forward on a tiny synthetic batch returns the shapes
and dtypes of the interface on the input's device, finite; a backward reaches its parameters
(and the inputs, where gradients must flow); the output is deterministic under a seeded
generator; and the forward makes no more host syncs than allowed (``.item()``, ``bool(t)``,
``nonzero``, ...: each one stalls a GPU).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from lejepa_core.envinfo import EnvInfo
from lejepa_core.host_reads import HostSyncCounter, ScalarReadCounter  # noqa: F401 (the kit)
from lejepa_core.interfaces import (
    INTERFACES,
    LossOutput,
    ModelSpec,
    QuantizerOutput,
    StepOutputs,
)

B, W, D = 6, 3, 16
HORIZONS = (1, 2, 4)

STANDARD_SPECS: dict[str, ModelSpec] = {
    "state": ModelSpec(
        obs_shape=(3, 4),
        latent_dim=D,
        feature_names=("x", "y", "vx", "vy"),
        context_frames=W,
        horizons=HORIZONS,
        env=EnvInfo(
            feature_names=("x", "y", "vx", "vy"),
            feature_groups={"positions": ("x", "y"), "velocities": ("vx", "vy")},
            dt=0.1,
            derivatives={"x": "vx", "y": "vy"},
        ),
    ),
    "grid": ModelSpec(
        obs_shape=(30, 30),
        obs_dtype="int8",
        latent_dim=D,
        context_frames=W,
        horizons=(1,),
        env=EnvInfo(cell_values=11, pad_value=10),
    ),
    # a grid latent: 6 x 6 locations of 2 x 2 cells, 4 features each (docs/grids.md)
    "grid_latent": ModelSpec(
        obs_shape=(12, 12),
        obs_dtype="int8",
        latent_dim=6 * 6 * 4,
        context_frames=W,
        horizons=HORIZONS,
        env=EnvInfo(cell_values=11, pad_value=10),
        latent_grid=(6, 6),
        latent_patch=2,
    ),
    "image": ModelSpec(obs_shape=(16, 16), latent_dim=D, context_frames=W, horizons=(1, 2)),
    # embedding vectors computed elsewhere (the identity encoder's input, docs/embeddings.md)
    "embedding": ModelSpec(obs_shape=(D,), latent_dim=D, context_frames=W, horizons=(1, 2)),
}


class ConformanceError(AssertionError):
    """A component broke its interface's contract; the message names it and what broke."""


@attrs.frozen
class ComponentCase:
    """One registered component, for ``pytest.mark.parametrize``."""

    kind: str
    name: str
    cls: type
    distribution: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def component_cases(distribution: str | None = None) -> list[ComponentCase]:
    """Every registered component (of ``distribution`` when given) as a ``ComponentCase``; one
    whose bare name is a built-in's or another plugin's under its qualified ``dist-name:name``."""
    from lejepa_core.registry import get_registry

    registry = get_registry()
    clashing = [*registry.shadowed.values(), *registry.conflicts.values()]
    named = [(r.name, r) for r in registry.registrations()]
    named += [(r.qualified_name, r) for regs in clashing for r in regs]
    return [
        ComponentCase(r.kind, name, r.obj, r.plugin.distribution)
        for name, r in named
        if r.kind in INTERFACES and (distribution is None or r.plugin.distribution == distribution)
    ]


def _fail(label: str, what: str) -> ConformanceError:
    return ConformanceError(f"{label}: {what}")


def check_params(cls: type, label: str) -> Any:
    """``cls.Params`` is a frozen attrs class whose defaults round-trip through a recipe (the
    check the registry makes at registration, ``lejepa_core.registry.default_params``)."""
    from lejepa_core.errors import InvalidComponentError
    from lejepa_core.registry import default_params

    params_cls = getattr(cls, "Params", None)
    if params_cls is None or not attrs.has(params_cls):
        raise _fail(label, "Params must be an attrs class (@attrs.frozen(kw_only=True))")
    try:
        return default_params(cls, label)
    except InvalidComponentError as exc:
        raise ConformanceError(str(exc)) from None


def observations(spec: ModelSpec, generator: torch.Generator, batch: int = B) -> torch.Tensor:
    """A synthetic batch ``[batch, *obs_shape]`` of ``spec``'s observations."""
    if spec.obs_dtype.startswith(("int", "uint")):
        env = spec.env
        colours = (env.cell_values or 11) - (1 if env.pad_value is not None else 0)
        grid = torch.randint(0, colours, (batch, *spec.obs_shape), generator=generator)
        if env.pad_value is not None and len(spec.obs_shape) >= 1:
            grid[:, spec.obs_shape[0] // 2 :] = env.pad_value  # padding below half the rows
        return grid.to(getattr(torch, spec.obs_dtype))
    return torch.randn(batch, *spec.obs_shape, generator=generator)


def _forward(kind: str, module: Any, spec: ModelSpec, seed: int) -> tuple[Any, list[torch.Tensor]]:
    """(output, the inputs that gradients must reach) of one forward on a synthetic batch."""
    g = torch.Generator().manual_seed(seed)
    if kind == "encoder":
        return module(observations(spec, g)), []
    if kind == "predictor":
        z = torch.randn(B, spec.context_frames, spec.latent_dim, generator=g, requires_grad=True)
        k = torch.tensor([spec.horizons[i % len(spec.horizons)] for i in range(B)])
        return module(z, k), [z]
    if kind == "quantizer":
        z = torch.randn(B * 4, spec.latent_dim, generator=g, requires_grad=True)
        return module(z), [z]
    if kind == "masker":
        return module(observations(spec, g), torch.Generator().manual_seed(seed + 1)), []
    prediction = torch.randn(B, spec.latent_dim, generator=g, requires_grad=True)
    context = torch.randn(B, spec.context_frames, spec.latent_dim, generator=g, requires_grad=True)
    outputs = StepOutputs(
        prediction=prediction,
        target=torch.randn(B, spec.latent_dim, generator=g),
        context=context,
        context_quantized=context,
        context_unmasked=torch.randn(B, spec.context_frames, spec.latent_dim, generator=g),
        k=torch.tensor([spec.horizons[i % len(spec.horizons)] for i in range(B)]),
        generator=torch.Generator().manual_seed(seed + 2),
        step=3,
    )
    return module(outputs), [prediction, context]


def _check_output(kind: str, out: Any, spec: ModelSpec, label: str) -> torch.Tensor:
    """The output's contract per kind; returns a scalar to backpropagate (or None)."""

    def shape(t: Any, expected: tuple[int, ...], what: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise _fail(label, f"{what} must be a tensor, got {type(t).__name__}")
        if tuple(t.shape) != expected:
            raise _fail(label, f"{what} has shape {tuple(t.shape)}, expected {expected}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise _fail(label, f"{what} is not finite")

    if kind == "encoder":
        shape(out, (B, spec.latent_dim), "forward(obs [B, *obs_shape])")
        return out.float().square().mean()
    if kind == "predictor":
        shape(out, (B, spec.latent_dim), "forward(z_context [B, W, D], k [B])")
        return out.float().square().mean()
    if kind == "quantizer":
        if not isinstance(out, QuantizerOutput):
            raise _fail(label, f"forward must return QuantizerOutput, got {type(out).__name__}")
        shape(out.z_q, (B * 4, spec.latent_dim), "QuantizerOutput.z_q")
        if out.codes.shape[0] != B * 4:
            raise _fail(label, f"QuantizerOutput.codes has shape {tuple(out.codes.shape)}")
        shape(out.loss, (), "QuantizerOutput.loss")
        return out.z_q.square().mean() + out.loss
    if kind == "masker":
        if not (isinstance(out, tuple) and len(out) == 2):
            raise _fail(label, "forward must return (masked_obs, mask)")
        return None
    if not isinstance(out, LossOutput):
        raise _fail(label, f"forward must return LossOutput, got {type(out).__name__}")
    shape(out.value, (), "LossOutput.value")
    return out.value


def check_component(
    kind: str,
    cls: type,
    spec: ModelSpec | None = None,
    *,
    name: str = "",
    params: Any = None,
    max_host_syncs: int = 0,
    device: str | torch.device = "cpu",
) -> list[str]:
    """Check ``cls`` against the ``kind`` interface (see the module docstring).

    spec: build for this spec only (default: every standard spec; at least one must build).
    params: the parameters to build with (default ``cls.Params()``).
    max_host_syncs: how many host syncs one forward may make (0 for a GPU-friendly component).
    Returns the names of the specs it was checked on; raises ``ConformanceError``.
    """
    label = f"{kind} {name or cls.__name__}"
    interface = INTERFACES.get(kind)
    if interface is None:
        raise _fail(label, f"unknown kind {kind!r}; kinds: {', '.join(INTERFACES)}")
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise _fail(label, f"must subclass lejepa_core.{interface.__name__}")
    defaults = check_params(cls, label)
    params = defaults if params is None else params
    specs = {"given": spec} if spec is not None else STANDARD_SPECS
    checked = []
    for spec_name, one in specs.items():
        try:
            module = cls(params, one)
        except ValueError:
            if spec is not None:
                raise
            continue  # refusing a spec with ValueError is allowed
        module = module.to(device)
        _check_built(kind, module, one, f"{label} [{spec_name}]", max_host_syncs)
        checked.append(spec_name)
    if not checked:
        raise _fail(label, f"builds for none of the standard specs ({', '.join(STANDARD_SPECS)})")
    return checked


def _check_built(kind: str, module: Any, spec: ModelSpec, label: str, max_syncs: int) -> None:
    module.train()
    with HostSyncCounter() as syncs:
        out, inputs = _forward(kind, module, spec, seed=0)
    if syncs.count > max_syncs:
        raise _fail(
            label,
            f"{syncs.count} host syncs in one forward ({', '.join(syncs.calls)}), "
            f"at most {max_syncs} allowed",
        )
    scalar = _check_output(kind, out, spec, label)
    if kind == "masker":
        _check_masker(module, spec, out, label)
    else:
        _check_gradients(module, scalar, inputs, label)
    _check_determinism(kind, module, spec, label)


def _check_masker(module: Any, spec: ModelSpec, out: tuple, label: str) -> None:
    masked, mask = out
    if masked.shape != torch.Size((B, *spec.obs_shape)):
        raise _fail(
            label, f"masked_obs has shape {tuple(masked.shape)}, expected {(B, *spec.obs_shape)}"
        )
    if masked.dtype != getattr(torch, spec.obs_dtype):
        raise _fail(label, f"masked_obs has dtype {masked.dtype}, expected {spec.obs_dtype}")
    if mask.dtype != torch.bool:
        raise _fail(label, f"mask must be a bool tensor (True = hidden), got {mask.dtype}")
    try:
        torch.broadcast_shapes(mask.shape, masked.shape)
    except RuntimeError:
        raise _fail(
            label, f"mask {tuple(mask.shape)} does not broadcast to {tuple(masked.shape)}"
        ) from None
    unmasked, _ = module(
        observations(spec, torch.Generator().manual_seed(0)), None
    )  # generator may be None
    if unmasked.shape != masked.shape:
        raise _fail(label, "forward(obs, None) must work (generator may be None)")


def _check_gradients(
    module: Any, scalar: torch.Tensor, inputs: list[torch.Tensor], label: str
) -> None:
    params = [p for p in module.parameters() if p.requires_grad]
    if not scalar.requires_grad:
        if params or inputs:
            raise _fail(label, "the output does not depend on any parameter or input (no gradient)")
        return
    scalar.backward()
    grads = [p.grad for p in params] + [t.grad for t in inputs]
    reached = [g for g in grads if g is not None]
    if not reached or all(float(g.abs().sum()) == 0 for g in reached):
        raise _fail(label, "backward reaches no parameter or input")
    if any(not torch.isfinite(g).all() for g in reached):
        raise _fail(label, "backward gives non-finite gradients")
    if inputs and all(t.grad is None for t in inputs):
        names = "prediction or context" if len(inputs) == 2 else "its input"
        raise _fail(label, f"no gradient flows back to {names}")
    module.zero_grad(set_to_none=True)


def _check_determinism(kind: str, module: Any, spec: ModelSpec, label: str) -> None:
    """Two forwards from the same seeds give the same output (eval mode for the model kinds)."""
    module.eval()
    first, _ = _forward(kind, module, spec, seed=7)
    second, _ = _forward(kind, module, spec, seed=7)
    module.train()

    def tensors(out: Any) -> list[torch.Tensor]:
        if isinstance(out, torch.Tensor):
            return [out]
        if isinstance(out, tuple):
            return [t for t in out if isinstance(t, torch.Tensor)]
        if isinstance(out, QuantizerOutput):
            return [out.z_q, out.codes]
        return [out.value]

    for a, b in zip(tensors(first), tensors(second), strict=True):
        if not torch.equal(a, b):
            raise _fail(label, "not deterministic: the same seeded inputs gave different outputs")


__all__ = [
    "STANDARD_SPECS",
    "ComponentCase",
    "ConformanceError",
    "HostSyncCounter",
    "check_component",
    "check_params",
    "component_cases",
    "observations",
]
