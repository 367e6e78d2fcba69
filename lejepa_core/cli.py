"""The ``lejepa`` command line: a click group whose commands load lazily.

Only this module turns domain errors into exit codes: a ``UserInputError`` (bad recipe, flag,
file, unknown component) prints one ``Error: ...`` line on stderr and exits 2; any other
``LejepaError`` exits 1; ``Interrupted`` (a run stopped by a signal, after saving) exits
128 + the signal (130 SIGINT, 143 SIGTERM); Ctrl-C anywhere else exits 130 (a second
signal during training: 130 / 143 at once). The machine
failing under a command (an ``OSError`` such as a full disk, running out of memory) exits 1.
No traceback in any of these cases (``LEJEPA_DEBUG=1`` re-raises).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

import click

from lejepa_core import __version__
from lejepa_core.errors import Interrupted, LejepaError, UserInputError

# command name -> "module:attribute" of a click.Command, imported on first use (fast start-up)
BUILTIN_COMMANDS = {
    "run": "lejepa_core.training.commands:run_command",
    "eval": "lejepa_core.training.commands:eval_command",
    "check": "lejepa_core.commands:check_command",
    "plugins": "lejepa_core.commands:plugins_command",
    "describe": "lejepa_core.commands:describe_command",
    "generate": "lejepa_core.data.commands:generate_command",
    "convert": "lejepa_core.data.commands:convert_command",
    "inspect": "lejepa_core.data.commands:inspect_command",
    "export": "lejepa_core.data.commands:export_command",
    "report": "lejepa_core.report.commands:report_command",
    "compare": "lejepa_core.report.commands:compare_command",
    "plan": "lejepa_core.control.commands:plan_command",
}


def _fail(message: str, code: int) -> None:
    """One ``Error: ...`` line on stderr (a message of several lines is joined), then exit."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    click.echo(f"Error: {line}", err=True)
    sys.exit(code)


def _machine_failure(exc: BaseException) -> str | None:
    """The one-line message of a failure of the machine rather than of lejepa (an ``OSError``
    such as a full disk, out of memory), None for anything else (a bug: let it show)."""
    if isinstance(exc, OSError):
        # the errno's own words: some libraries (h5py) put a paragraph in strerror
        what = os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)
        where = f": {exc.filename}" if exc.filename else ""
        return f"{what}{where}"
    allocator = isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    if isinstance(exc, MemoryError) or allocator or type(exc).__name__ == "OutOfMemoryError":
        first = (str(exc).splitlines() or [""])[0]
        return f"out of memory ({first or type(exc).__name__})"
    return None


def _thread_failure(args: threading.ExceptHookArgs) -> None:
    """A helper thread (tensorboardX's event writer) that dies of an ``OSError`` (a full disk)
    prints one warning line, not a traceback; the main thread reports its own failures."""
    if isinstance(args.exc_value, OSError) and not os.environ.get("LEJEPA_DEBUG"):
        name = args.thread.name if args.thread is not None else "a thread"
        click.echo(f"warning: {name} stopped: {_machine_failure(args.exc_value)}", err=True)
        return
    threading.__excepthook__(args)


class LejepaGroup(click.Group):
    """Lazy built-in commands, plugin commands (``register_commands``), error mapping."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        from lejepa_core.registry import get_plugin_manager

        get_plugin_manager().hook.register_commands(cli=self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return sorted({*BUILTIN_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in BUILTIN_COMMANDS and name not in self.commands:
            module_name, attr = BUILTIN_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module_name), attr), name)
        if name not in self.commands:
            self._add_plugin_commands()
        return self.commands.get(name)

    def invoke(self, ctx: click.Context):
        threading.excepthook = _thread_failure
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            _fail(str(exc), exc.exit_code)
        except UserInputError as exc:
            if os.environ.get("LEJEPA_DEBUG"):
                raise
            _fail(str(exc), 2)
        except LejepaError as exc:
            if os.environ.get("LEJEPA_DEBUG"):
                raise
            _fail(str(exc), 1)
        except KeyboardInterrupt as exc:
            if os.environ.get("LEJEPA_DEBUG"):
                raise
            if str(exc) == "SIGTERM":
                _fail("terminated (SIGTERM)", 143)
            _fail("interrupted (Ctrl-C)", 130)
        except UnicodeDecodeError as exc:  # a file read as text that is not UTF-8
            if os.environ.get("LEJEPA_DEBUG"):
                raise
            _fail(f"a file is not UTF-8 text ({exc})", 2)
        except (OSError, MemoryError, RuntimeError) as exc:
            message = _machine_failure(exc)
            if message is None or os.environ.get("LEJEPA_DEBUG"):
                raise
            _fail(message, 1)


@click.group(cls=LejepaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lejepa")
def main() -> None:
    """lejepa: train JEPA-style latent forward-dynamics models.

    \b
    Quick start:
      lejepa run recipes/multi_k_physics.toml
      lejepa plugins          # every registered component
      lejepa check RECIPE     # validate and build a recipe without training
    """


if __name__ == "__main__":  # python -m lejepa_core.cli (used by torchrun)
    main()
