"""The plugin registry: entry points -> pluggy -> per-kind tables of components.

Built lazily, once (``get_plugin_manager()``), never on ``import lejepa_core``: loading the
plugins (entry points one at a time, broken, disabled and misspelled plugins recorded) is
``lejepa_core.plugin_manager``'s job.

The registry then calls each ``register_*`` hook implementation separately with a
``register(name, obj)`` callback that validates the object against its interface and records
which plugin registered it. A name registered by a built-in (distribution ``lejepa-core``) and
a third party stays the built-in's; the third party's is *shadowed*, reachable by its
qualified name ``dist-name:name``. A name registered by two third parties is *conflicted*:
listed by ``lejepa plugins`` and an error naming both plugins when a recipe uses it. Every
component is reachable by its qualified name.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

import attrs

from lejepa_core.errors import (
    DuplicateComponentError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from lejepa_core.interfaces import INTERFACES, KINDS, ModelSpec
from lejepa_core.plugin_manager import (
    DISABLE_ENV,
    BrokenPlugin,
    PluginInfo,
    PluginManager,
    strict,
)
from lejepa_core.structure import structure_attrs, unstructure

BUILTIN_DISTRIBUTION = "lejepa-core"  # its components keep their bare names on a clash

# hook name -> kind it registers
HOOKS = {
    "register_encoders": "encoder",
    "register_predictors": "predictor",
    "register_quantizers": "quantizer",
    "register_losses": "loss",
    "register_maskers": "masker",
    "register_envs": "env",
    "register_grid_rules": "grid_rules",
}
ALL_KINDS = (*KINDS, "env", "grid_rules")


def plural(kind: str) -> str:
    """``"encoder"`` -> ``"encoders"``, ``"loss"`` -> ``"losses"``."""
    return kind + ("es" if kind.endswith("s") else "s")


@attrs.frozen
class Registration:
    """One registered component: what, under which name, by which plugin."""

    kind: str
    name: str
    obj: Any
    plugin: PluginInfo

    @property
    def qualified_name(self) -> str:
        """``dist-name:name``: the name that stays unique when a bare name clashes."""
        return f"{self.plugin.distribution}:{self.name}"

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.obj) if not isinstance(self.obj, (str, dict)) else None
        if doc:
            return doc.strip().splitlines()[0]
        if isinstance(self.obj, dict):
            return str(self.obj.get("entry_point", ""))
        return str(self.obj)


_PLUGIN_MANAGER: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first call."""
    global _PLUGIN_MANAGER
    if _PLUGIN_MANAGER is None:
        pm = PluginManager()
        pm.load_entry_points()  # check_pending per plugin: see _reject_unknown_hooks
        _PLUGIN_MANAGER = pm
    return _PLUGIN_MANAGER


def reset() -> None:
    """Forget the plugin manager and registry (tests; after changing the environment)."""
    global _PLUGIN_MANAGER, _REGISTRY
    _PLUGIN_MANAGER = None
    _REGISTRY = None


def validate_component(kind: str, name: str, obj: Any) -> None:
    """Raise ``InvalidComponentError`` unless ``obj`` satisfies the interface of ``kind``."""
    if kind == "env":
        if isinstance(obj, str) and ":" in obj:
            return
        if isinstance(obj, dict) and "entry_point" in obj:
            return
        if callable(obj):
            return
        raise InvalidComponentError(
            f"env {name!r}: expected an entry point 'module:Class', a callable or a dict with "
            f"'entry_point', got {obj!r}"
        )
    if kind == "grid_rules":
        from lejepa_core.eval.grid_rules import check_rules_class

        check_rules_class(name, obj)
        return
    interface = INTERFACES[kind]
    if not (inspect.isclass(obj) and issubclass(obj, interface)):
        raise InvalidComponentError(
            f"{kind} {name!r}: expected a subclass of lejepa_core.{interface.__name__}, got {obj!r}"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise InvalidComponentError(f"{kind} {name!r}: {obj.__name__} does not implement {missing}")
    params = getattr(obj, "Params", None)
    if not (inspect.isclass(params) and attrs.has(params)):
        raise InvalidComponentError(
            f"{kind} {name!r}: {obj.__name__}.Params must be an attrs class"
        )
    default_params(obj, f"{kind} {name!r}")


def default_params(cls: type, label: str) -> Any:
    """``cls.Params()``, checked: every field has a default, the defaults match their
    annotations (``num_frequencies: str = param(64)`` is refused) and round-trip through a
    recipe. Raises ``InvalidComponentError`` starting with ``label``."""
    params_cls = cls.Params
    missing = [f.name for f in attrs.fields(params_cls) if f.default is attrs.NOTHING]
    if missing:
        raise InvalidComponentError(
            f"{label}: every {cls.__name__}.Params field needs a default; missing: {', '.join(missing)}"
        )
    errors: list[str] = []
    try:
        params = params_cls()
        again = structure_attrs(unstructure(params), params_cls, f"{cls.__name__}.Params", errors)
    except (TypeError, ValueError, NameError) as exc:
        raise InvalidComponentError(f"{label}: {cls.__name__}.Params: {exc}") from None
    if errors:
        raise InvalidComponentError(
            f"{label}: Params defaults do not match their annotations: {'; '.join(errors)}"
        )
    if again != params:
        raise InvalidComponentError(
            f"{label}: Params do not round-trip through a recipe: {params} -> {again}"
        )
    return params


class Registry:
    """Per-kind tables of registered components, collected from the plugin manager's hooks.

    tables: kind -> bare name -> the registration it resolves to; shadowed: (kind, name) ->
    third parties' registrations of a name a built-in holds; conflicts: (kind, name) -> the
    registrations of a name two third parties hold (usable by qualified name only).
    """

    def __init__(self, pm: PluginManager):
        self.pm = pm
        self.tables: dict[str, dict[str, Registration]] = {kind: {} for kind in ALL_KINDS}
        self.shadowed: dict[tuple[str, str], list[Registration]] = {}
        self.conflicts: dict[tuple[str, str], list[Registration]] = {}
        self.hook_failures: list[BrokenPlugin] = []
        self._candidates: dict[tuple[str, str], list[Registration]] = {}
        self._collect()
        self._resolve()

    def _collect(self) -> None:
        for hook_name, kind in HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order
                info = self.pm.info_for(impl.plugin_name)
                try:
                    impl.function(self._register_callback(kind, info))
                except Exception as exc:  # noqa: BLE001 - a failing hook is captured
                    broken = BrokenPlugin(
                        info.name,
                        info.distribution,
                        info.version,
                        f"{type(exc).__name__}: {exc}",
                        hook_name,
                    )
                    self.hook_failures.append(broken)
                    if strict():
                        raise PluginLoadError(
                            f"plugin {info.name} ({info.distribution} {info.version}) failed in {hook_name}: {exc}"
                        ) from exc

    def _resolve(self) -> None:
        """Bare names: the only registration, else the built-in's, else a conflict."""
        for (kind, name), regs in self._candidates.items():
            builtins = [r for r in regs if r.plugin.distribution == BUILTIN_DISTRIBUTION]
            if len(regs) == 1 or len(builtins) == 1:
                winner = regs[0] if len(regs) == 1 else builtins[0]
                self.tables[kind][name] = winner
                if len(regs) > 1:
                    self.shadowed[(kind, name)] = [r for r in regs if r is not winner]
            else:
                self.conflicts[(kind, name)] = regs
        if strict() and self.conflicts:
            (kind, name), regs = next(iter(self.conflicts.items()))
            raise DuplicateComponentError(self._conflict_message(kind, name, regs))

    def _register_callback(self, kind: str, info: PluginInfo) -> Callable[[str, Any], None]:
        def register(name: str, obj: Any) -> None:
            if not isinstance(name, str) or not name or ":" in name:
                raise InvalidComponentError(
                    f"{kind} names must be non-empty strings without ':', got {name!r}"
                )
            validate_component(kind, name, obj)
            self._candidates.setdefault((kind, name), []).append(
                Registration(kind, name, obj, info)
            )

        return register

    @staticmethod
    def _conflict_message(kind: str, name: str, regs: list[Registration]) -> str:
        who = " and ".join(
            f"{r.plugin.name} ({r.plugin.distribution} {r.plugin.version})".replace(" )", ")")
            for r in regs
        )
        qualified = " or ".join(repr(r.qualified_name) for r in regs)
        return (
            f"{kind} {name!r} is registered by more than one plugin: {who}; name one by its "
            f"qualified name ({qualified}), or uninstall or disable one (set {DISABLE_ENV})"
        )

    @property
    def broken(self) -> list[BrokenPlugin]:
        return [*self.pm.broken, *self.hook_failures]

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        """Registered names of a kind matching a glob pattern, sorted."""
        self._check_kind(kind)
        return sorted(n for n in self.tables[kind] if fnmatch.fnmatch(n, pattern))

    def registrations(self, kind: str | None = None) -> list[Registration]:
        """What each bare name resolves to (shadowed and conflicted ones are not included)."""
        kinds = [kind] if kind else list(ALL_KINDS)
        return [self.tables[k][n] for k in kinds for n in sorted(self.tables[k])]

    def registration(self, kind: str, name: str) -> Registration:
        """The registration of a bare or qualified (``dist-name:name``) name; a helpful
        ``UnknownComponentError`` (``DuplicateComponentError`` for a conflict) otherwise."""
        self._check_kind(kind)
        if name in self.tables[kind]:
            return self.tables[kind][name]
        if (kind, name) in self.conflicts:
            raise DuplicateComponentError(
                self._conflict_message(kind, name, self.conflicts[(kind, name)])
            )
        dist, _, bare = name.rpartition(":")
        found = [r for r in self._candidates.get((kind, bare), []) if r.plugin.distribution == dist]
        if len(found) == 1:
            return found[0]
        known = self.names(kind) + [
            r.qualified_name for (k, _), regs in self.shadowed.items() if k == kind for r in regs
        ]
        close = difflib.get_close_matches(name, known, n=3)
        message = f"unknown {kind} {name!r}"
        if close:
            message += f" (did you mean {', '.join(repr(c) for c in close)}?)"
        message += f"; registered {plural(kind)}: {', '.join(known) or 'none'}"
        if self.broken:
            broken = ", ".join(f"{b.name} ({b.error})" for b in self.broken)
            message += f"; plugins that failed to load and may provide it: {broken}"
        if self.pm.disabled:
            message += f"; disabled by {DISABLE_ENV}: {', '.join(p.name for p in self.pm.disabled)}"
        raise UnknownComponentError(message)

    def get(self, kind: str, name: str) -> Any:
        """The component registered as ``name`` (bare or ``dist-name:name``)."""
        return self.registration(kind, name).obj

    def build(self, kind: str, config: Any, spec: ModelSpec) -> Any:
        """Instantiate a component from a ``ComponentConfig``: ``cls(config.params, spec)``."""
        cls = self.get(kind, config.name)
        return cls(config.params, spec)

    def _check_kind(self, kind: str) -> None:
        if kind not in self.tables:
            raise UnknownComponentError(f"unknown kind {kind!r}; kinds: {', '.join(ALL_KINDS)}")


_REGISTRY: Registry | None = None
_REGISTRY_KEY: tuple = ()


def get_registry() -> Registry:
    """The registry of the process-wide plugin manager (rebuilt if plugins were added)."""
    global _REGISTRY, _REGISTRY_KEY
    pm = get_plugin_manager()
    key = tuple(sorted(name for name, _ in pm.list_name_plugin()))
    if _REGISTRY is None or key != _REGISTRY_KEY:
        _REGISTRY, _REGISTRY_KEY = Registry(pm), key
    return _REGISTRY


def ensure_envs_registered() -> list[str]:
    """Register every plugin-provided env id with gymnasium (idempotent); returns the ids."""
    import gymnasium

    ids = []
    for reg in get_registry().registrations("env"):
        ids.append(reg.name)
        if reg.name in gymnasium.registry:
            continue
        spec = reg.obj
        kwargs = dict(spec) if isinstance(spec, dict) else {"entry_point": spec}
        gymnasium.register(id=reg.name, **kwargs)
    return ids
