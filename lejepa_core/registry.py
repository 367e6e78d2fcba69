"""The plugin registry: entry points -> pluggy -> per-kind tables of components.

Built lazily, once (``get_plugin_manager()``), never on ``import lejepa_core``:
1. a ``pluggy.PluginManager("lejepa")`` with the hookspecs of ``lejepa_core.hookspecs``;
2. every entry point of the ``lejepa`` group loaded *on its own* (pluggy's own loader stops
   at the first failure): a plugin that fails to import is recorded as broken, with its
   distribution, version and error, and the others keep working;
3. plugins named in ``LEJEPA_DISABLE_PLUGINS`` (comma-separated entry-point or distribution
   names) are skipped; ``LEJEPA_STRICT_PLUGINS=1`` makes any load failure fatal.

The registry then calls each ``register_*`` hook implementation separately with a
``register(name, obj)`` callback that validates the object against its interface and records
which plugin registered it. A name registered twice is *conflicted*: listed by
``lejepa plugins`` and an error naming both plugins when a recipe uses it.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import inspect
import os
import traceback
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from lejepa_core import hookspecs
from lejepa_core.errors import (
    DuplicateComponentError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from lejepa_core.interfaces import INTERFACES, KINDS, ModelSpec

ENTRY_POINT_GROUP = "lejepa"
DISABLE_ENV = "LEJEPA_DISABLE_PLUGINS"
STRICT_ENV = "LEJEPA_STRICT_PLUGINS"

# hook name -> kind it registers
HOOKS = {
    "register_encoders": "encoder",
    "register_predictors": "predictor",
    "register_quantizers": "quantizer",
    "register_losses": "loss",
    "register_maskers": "masker",
    "register_envs": "env",
}
ALL_KINDS = (*KINDS, "env")


def plural(kind: str) -> str:
    """``"encoder"`` -> ``"encoders"``, ``"loss"`` -> ``"losses"``."""
    return kind + ("es" if kind.endswith("s") else "s")


@attrs.frozen
class PluginInfo:
    """A plugin known to the manager: pluggy name, distribution and version."""

    name: str
    distribution: str
    version: str
    module: str


@attrs.frozen
class BrokenPlugin:
    """A plugin that failed to import or whose hook raised."""

    name: str
    distribution: str
    version: str
    error: str
    stage: str  # "import" or the hook name


@attrs.frozen
class Registration:
    """One registered component: what, under which name, by which plugin."""

    kind: str
    name: str
    obj: Any
    plugin: PluginInfo

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.obj) if not isinstance(self.obj, (str, dict)) else None
        if doc:
            return doc.strip().splitlines()[0]
        if isinstance(self.obj, dict):
            return str(self.obj.get("entry_point", ""))
        return str(self.obj)


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what we know about each plugin's origin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.broken: list[BrokenPlugin] = []
        self.disabled: list[PluginInfo] = []

    def register_plugin(
        self,
        plugin: Any,
        name: str | None = None,
        *,
        distribution: str = "(local)",
        version: str = "",
    ) -> str:
        """Register a module or object (tests, third parties in-process) with provenance."""
        name = self.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos[name] = PluginInfo(
            name=name, distribution=distribution, version=version, module=module
        )
        return name

    def load_entry_points(self) -> None:
        """Load every ``lejepa`` entry point on its own; record failures (strict: raise)."""
        disabled = _disabled_names()
        # entry_points() already lists each distribution once, however often it is on sys.path
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "(unknown)"
            version = ep.dist.version if ep.dist is not None else ""
            plugin_name = f"{dist}:{ep.name}"
            info = PluginInfo(name=plugin_name, distribution=dist, version=version, module=ep.value)
            if ep.name in disabled or dist in disabled or plugin_name in disabled:
                self.disabled.append(info)
                continue
            try:
                module = ep.load()
                self.register(module, name=plugin_name)
            except Exception as exc:  # noqa: BLE001 - any plugin failure is captured
                self._record_broken(info, exc, "import")
                continue
            self.infos[plugin_name] = info

    def _record_broken(self, info: PluginInfo, exc: BaseException, stage: str) -> None:
        error = f"{type(exc).__name__}: {exc}".strip()
        broken = BrokenPlugin(info.name, info.distribution, info.version, error, stage)
        self.broken.append(broken)
        if _strict():
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise PluginLoadError(
                f"plugin {info.name} ({info.distribution} {info.version}) failed at {stage}: {detail} "
                f"(strict mode: unset {STRICT_ENV} or disable it with {DISABLE_ENV}={info.name.split(':')[-1]})"
            ) from exc

    def info_for(self, plugin_name: str) -> PluginInfo:
        return self.infos.get(plugin_name) or PluginInfo(plugin_name, "(local)", "", plugin_name)


_PLUGIN_MANAGER: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first call."""
    global _PLUGIN_MANAGER
    if _PLUGIN_MANAGER is None:
        pm = PluginManager()
        pm.load_entry_points()
        pm.check_pending()
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
    missing_defaults = [f.name for f in attrs.fields(params) if f.default is attrs.NOTHING]
    if missing_defaults:
        raise InvalidComponentError(
            f"{kind} {name!r}: every {obj.__name__}.Params field needs a default; missing: {', '.join(missing_defaults)}"
        )


class Registry:
    """Per-kind tables of registered components, collected from the plugin manager's hooks."""

    def __init__(self, pm: PluginManager):
        self.pm = pm
        self.tables: dict[str, dict[str, Registration]] = {kind: {} for kind in ALL_KINDS}
        self.conflicts: dict[tuple[str, str], list[Registration]] = {}
        self.hook_failures: list[BrokenPlugin] = []
        self._collect()

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
                    if _strict():
                        raise PluginLoadError(
                            f"plugin {info.name} ({info.distribution} {info.version}) failed in {hook_name}: {exc}"
                        ) from exc
        if _strict() and self.conflicts:
            (kind, name), regs = next(iter(self.conflicts.items()))
            raise DuplicateComponentError(self._conflict_message(kind, name, regs))

    def _register_callback(self, kind: str, info: PluginInfo) -> Callable[[str, Any], None]:
        def register(name: str, obj: Any) -> None:
            if not isinstance(name, str) or not name:
                raise InvalidComponentError(f"{kind} names must be non-empty strings, got {name!r}")
            validate_component(kind, name, obj)
            reg = Registration(kind, name, obj, info)
            if (kind, name) in self.conflicts:
                self.conflicts[(kind, name)].append(reg)
            elif name in self.tables[kind]:
                self.conflicts[(kind, name)] = [self.tables[kind].pop(name), reg]
            else:
                self.tables[kind][name] = reg

        return register

    @staticmethod
    def _conflict_message(kind: str, name: str, regs: list[Registration]) -> str:
        who = " and ".join(
            f"{r.plugin.name} ({r.plugin.distribution} {r.plugin.version})".replace(" )", ")")
            for r in regs
        )
        return f"{kind} {name!r} is registered by more than one plugin: {who}; uninstall or disable one (set {DISABLE_ENV})"

    @property
    def broken(self) -> list[BrokenPlugin]:
        return [*self.pm.broken, *self.hook_failures]

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        """Registered names of a kind matching a glob pattern, sorted."""
        self._check_kind(kind)
        return sorted(n for n in self.tables[kind] if fnmatch.fnmatch(n, pattern))

    def registrations(self, kind: str | None = None) -> list[Registration]:
        kinds = [kind] if kind else list(ALL_KINDS)
        return [self.tables[k][n] for k in kinds for n in sorted(self.tables[k])]

    def get(self, kind: str, name: str) -> Any:
        """The component registered as ``name``; helpful ``UnknownComponentError`` otherwise."""
        self._check_kind(kind)
        if name in self.tables[kind]:
            return self.tables[kind][name].obj
        if (kind, name) in self.conflicts:
            raise DuplicateComponentError(
                self._conflict_message(kind, name, self.conflicts[(kind, name)])
            )
        known = self.names(kind)
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
