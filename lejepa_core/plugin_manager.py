"""Loading plugins: entry points -> a pluggy manager that knows each plugin's origin.

``lejepa_core.registry.get_plugin_manager()`` builds one ``PluginManager``, once, lazily:
1. a ``pluggy.PluginManager("lejepa")`` with the hookspecs of ``lejepa_core.hookspecs``;
2. every entry point of the ``lejepa`` group loaded *on its own* (pluggy's own loader stops
   at the first failure): a plugin that fails to import is recorded as broken, with its
   distribution, version and error, and the others keep working;
3. plugins named in ``LEJEPA_DISABLE_PLUGINS`` (comma-separated entry-point or distribution
   names) are skipped, with a warning for a name that matches no installed plugin;
   ``LEJEPA_STRICT_PLUGINS=1`` makes any load failure fatal;
4. pluggy's ``check_pending()`` per plugin: a plugin with a hook that matches no hookspec (a
   misspelled ``register_encoder``) is unregistered and recorded as broken, like an import
   error, instead of failing every command.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
import traceback
from typing import Any

import attrs
import pluggy

from lejepa_core import hookspecs
from lejepa_core.errors import PluginLoadError

ENTRY_POINT_GROUP = "lejepa"
DISABLE_ENV = "LEJEPA_DISABLE_PLUGINS"
STRICT_ENV = "LEJEPA_STRICT_PLUGINS"


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


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _warn_unknown_disabled(unknown: set[str], known: set[str]) -> None:
    """One warning line on stderr for names in LEJEPA_DISABLE_PLUGINS that disable nothing."""
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(
            f"warning: {DISABLE_ENV} names {name!r}, which is no installed plugin{hint}; "
            "`lejepa plugins` lists them",
            file=sys.stderr,
        )


def strict() -> bool:
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
        """Register a module or object (tests, third parties in-process) with provenance.

        A plugin with a hook that matches no hookspec is not registered: it is recorded as
        broken (``self.broken``), as an entry point would be."""
        name = self.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name=name, distribution=distribution, version=version, module=module)
        if not self._reject_unknown_hooks(plugin, info):
            self.infos[name] = info
        return name

    def load_entry_points(self) -> None:
        """Load every ``lejepa`` entry point on its own; record failures (strict: raise)."""
        disabled = _disabled_names()
        known: set[str] = set()
        # entry_points() already lists each distribution once, however often it is on sys.path
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "(unknown)"
            version = ep.dist.version if ep.dist is not None else ""
            plugin_name = f"{dist}:{ep.name}"
            known |= {ep.name, dist, plugin_name}
            info = PluginInfo(name=plugin_name, distribution=dist, version=version, module=ep.value)
            if ep.name in disabled or dist in disabled or plugin_name in disabled:
                self.disabled.append(info)
                continue
            try:
                module = ep.load()
                self.register(module, name=plugin_name)
            except Exception as exc:  # noqa: BLE001 - any plugin failure is captured
                self._record_broken(info, f"{type(exc).__name__}: {exc}".strip(), "import", exc)
                continue
            if not self._reject_unknown_hooks(module, info):
                self.infos[plugin_name] = info
        _warn_unknown_disabled(disabled - known, known)

    def _reject_unknown_hooks(self, plugin: Any, info: PluginInfo) -> bool:
        """pluggy's ``check_pending`` for one plugin: a hook implementation whose name matches
        no hookspec (``register_encoder``) unregisters the plugin and records it as broken."""
        unknown = sorted(
            caller.name
            for caller in self.get_hookcallers(plugin) or []
            if not caller.has_spec()
            and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls())
        )
        if not unknown:
            return False
        self.unregister(plugin)
        hooks = sorted(n for n, c in vars(self.hook).items() if n[0] != "_" and c.has_spec())
        described = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, hooks, n=1)
            hint = f"did you mean {close[0]}?" if close else f"lejepa's hooks: {', '.join(hooks)}"
            described.append(f"{hook} ({hint})")
        error = f"unknown hook {', '.join(described)}"
        self._record_broken(info, error, "registration")
        return True

    def _record_broken(
        self, info: PluginInfo, error: str, stage: str, exc: BaseException | None = None
    ) -> None:
        broken = BrokenPlugin(info.name, info.distribution, info.version, error, stage)
        self.broken.append(broken)
        if strict():
            detail = error
            if exc is not None:
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise PluginLoadError(
                f"plugin {info.name} ({info.distribution} {info.version}) failed at {stage}: {detail} "
                f"(strict mode: unset {STRICT_ENV} or disable it with {DISABLE_ENV}={info.name.split(':')[-1]})"
            ) from exc

    def info_for(self, plugin_name: str) -> PluginInfo:
        return self.infos.get(plugin_name) or PluginInfo(plugin_name, "(local)", "", plugin_name)
