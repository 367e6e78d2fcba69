"""One progress bar for every long command (generate, convert, run).

``progress_bar(enabled, total, label=..., fields=...)`` is a context manager yielding an
``update(completed=None, advance=0, **fields)`` callable, or a no-op when ``enabled`` is false.
``fields`` maps a field name to its initial value and a format, e.g. ``{"loss": (nan, "loss
{:.4f}")}``; the format is applied when the bar is drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def _noop(completed: int | None = None, advance: int = 0, **fields: Any) -> None:
    """The ``update`` of a disabled bar."""


@contextlib.contextmanager
def progress_bar(
    enabled: bool,
    total: int,
    *,
    label: str,
    start: int = 0,
    fields: dict[str, tuple[Any, str]] | None = None,
) -> Iterator[Callable[..., None]]:
    """A rich bar ``label [bar] done/total <fields> <time left>`` (see the module docstring)."""
    if not enabled:
        yield _noop
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    fields = dict(fields or {})
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    columns.append(TimeRemainingColumn())
    formats = {name: fmt for name, (_, fmt) in fields.items()}

    def shown(values: dict[str, Any]) -> dict[str, str]:
        return {name: formats[name].format(value) for name, value in values.items()}

    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(
            label, total=total, completed=start, **shown({n: v for n, (v, _) in fields.items()})
        )

        def update(completed: int | None = None, advance: int = 0, **values: Any) -> None:
            bar.update(task, completed=completed, advance=advance or None, **shown(values))

        yield update
