"""One progress display for every long command (generate, convert, run).

``progress_bar(enabled, total, label=..., fields=...)`` is a context manager yielding a
``Progress``: call it as ``update(completed=None, advance=0, **fields)``, and
``update.note(line)`` prints a line above the bar (training's per-epoch validation line).
``fields`` maps a field name to its initial value and a format, e.g. ``{"loss": (None, "loss
{:.4f}")}``; a value of None is shown as ``-`` (``loss -``: nothing measured yet).

On a terminal it is a rich bar on stderr; when stderr is not a terminal (a log file, a batch
job, a pipe) it prints a plain line every ``interval`` seconds and one at the end instead, so
logs hold whole lines rather than a bar cut to 80 columns. Disabled, it does nothing.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

PLAIN_INTERVAL_S = 30.0


class Progress:
    """What ``progress_bar`` yields; the base class is the disabled display (does nothing)."""

    enabled = False

    def __call__(self, completed: int | None = None, advance: int = 0, **fields: Any) -> None:
        """Move to ``completed`` (or by ``advance``) and set the named fields."""

    def note(self, line: str) -> None:
        """Print ``line`` above the display."""


def _formatter(fields: dict[str, tuple[Any, str]]):
    """values -> {name: text}: each field's format, ``-`` in place of a None value."""
    formats = {name: fmt for name, (_, fmt) in fields.items()}

    def shown(values: dict[str, Any]) -> dict[str, str]:
        return {
            name: re.sub(r"\{[^}]*\}", "-", formats[name])
            if value is None
            else formats[name].format(value)
            for name, value in values.items()
        }

    return shown


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class _PlainLines(Progress):
    enabled = True

    """``label done/total pct% <fields> <time left>``, a line every ``interval`` seconds."""

    def __init__(self, stream: TextIO, total: int, label: str, start: int, fields, interval):
        self.stream, self.total, self.label, self.interval = stream, total, label, interval
        self.completed = self.start = start
        self.shown = _formatter(fields)
        self.texts = self.shown({name: value for name, (value, _) in fields.items()})
        self.started = self.last_line = time.perf_counter()
        self.printed_at: int | None = None

    def __call__(self, completed: int | None = None, advance: int = 0, **fields: Any) -> None:
        self.completed = (self.completed if completed is None else completed) + advance
        self.texts.update(self.shown(fields))
        if time.perf_counter() - self.last_line >= self.interval:
            self.line()

    def note(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def line(self) -> None:
        now = time.perf_counter()
        elapsed, done = now - self.started, self.completed - self.start
        percent = 100 * self.completed / max(1, self.total)
        parts = [self.label, f"{self.completed}/{self.total}", f"{percent:.0f}%"]
        parts += [text for text in self.texts.values() if text]
        if self.completed >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        elif done > 0:
            parts.append(f"{_duration(elapsed / done * (self.total - self.completed))} left")
        print("  ".join(parts), file=self.stream, flush=True)
        self.last_line, self.printed_at = now, self.completed

    def finish(self) -> None:
        if self.printed_at != self.completed:
            self.line()


class _RichBar(Progress):
    enabled = True

    def __init__(self, bar: Any, task: Any, shown):
        self.bar, self.task, self.shown = bar, task, shown

    def __call__(self, completed: int | None = None, advance: int = 0, **fields: Any) -> None:
        self.bar.update(
            self.task, completed=completed, advance=advance or None, **self.shown(fields)
        )

    def note(self, line: str) -> None:
        self.bar.console.print(line, highlight=False, markup=False)


@contextlib.contextmanager
def progress_bar(
    enabled: bool,
    total: int,
    *,
    label: str,
    start: int = 0,
    fields: dict[str, tuple[Any, str]] | None = None,
    stream: TextIO | None = None,
    interval: float = PLAIN_INTERVAL_S,
) -> Iterator[Progress]:
    """A rich bar ``label [bar] done/total <fields> <time left>`` on a terminal, plain lines
    otherwise (see the module docstring). ``stream``: default ``sys.stderr``."""
    if not enabled:
        yield Progress()
        return
    stream = stream or sys.stderr
    fields = dict(fields or {})
    if not stream.isatty():
        plain = _PlainLines(stream, total, label, start, fields, interval)
        yield plain
        plain.finish()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    columns.append(TimeRemainingColumn())
    shown = _formatter(fields)
    console = Console(file=stream)
    with RichProgress(*columns, console=console, transient=False) as bar:
        initial = shown({name: value for name, (value, _) in fields.items()})
        task = bar.add_task(label, total=total, completed=start, **initial)
        yield _RichBar(bar, task, shown)
