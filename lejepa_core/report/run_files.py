"""Reading a run directory for the report: the recipe, ``metrics.jsonl``, ``summary.json``
(through ``artifacts.Summary``) and ``eval.json``. Nothing here imports torch or matplotlib.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs

from lejepa_core import artifacts
from lejepa_core.artifacts import Summary
from lejepa_core.errors import CheckpointError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CODEBOOK_SIZE = f"{artifacts.QUANTIZER_PREFIX}codebook_size"
"""The metric a quantizer logs its number of codes under (``plugins/quantizers.py``)."""
# Keys the report reads that artifacts.py does not name (yet): written by the training loop,
# the losses and the quantizers; every picture that reads one is left out, or says so, when a
# run did not log it.
COPY_LAST_CONTEXT_PREFIX = "baseline/copy_last_context/"
"""copy-last through the *context* encoder (``baseline/copy_last/`` is in the target's space)."""
GRAD_NORM_MAX = "grad_norm_max"  # the largest pre-clip gradient norm of a log window
GRAD_SHARE_PREFIX = "grad_share/"  # grad_share/<loss label>: its share of the gradient norm
USAGE_RELATIVE = f"{artifacts.QUANTIZER_PREFIX}usage_relative"  # usage / what a batch can reach
REPLACED_CODES = f"{artifacts.QUANTIZER_PREFIX}replaced_codes"  # codes re-initialised
NULL_LEVEL = "null_level"  # loss/<label>/null_level: SIGReg's value for Gaussian latents
NULL_LEVEL_EFFECTIVE = "null_level_effective"  # the same for what is fed in (e.g. W frames)
HEALTH = "health"
"""summary.json's list of tripped health checks (empty: all passed; absent in older runs)."""
HEALTH_COLUMNS = ("check", "first_step", "last_step", "value", "threshold", "action")


@attrs.define
class RunFiles:
    """What a run directory holds. recipe: the parsed resolved recipe (plain dict); train /
    val: ``metrics.jsonl`` records of that split, one per step, sorted; summary: None while
    the run has no ``summary.json``; notes: what could not be read (shown on the page);
    health: ``summary.json``'s ``health`` list (``HEALTH_COLUMNS`` per tripped check; empty:
    every check passed), None when the summary has none (a run from before the checks)."""

    path: Path
    name: str
    recipe_text: str
    recipe: dict[str, Any]
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    summary: Summary | None
    evaluation: dict[str, Any] | None
    notes: list[str] = attrs.field(factory=list)
    health: list[dict[str, Any]] | None = None

    @property
    def last_val(self) -> dict[str, Any]:
        """The last validation record, ``{}`` before the first one."""
        return self.val[-1] if self.val else {}

    def codebook_size(self) -> int | None:
        """The quantizer's number of codes as it logged it; None without a quantizer."""
        for record in reversed(self.train + self.val):
            value = record.get(CODEBOOK_SIZE)
            if isinstance(value, (int, float)) and value > 0:
                return int(round(value))
        return None

    def checkpoint_exists(self) -> bool:
        folder = self.path / artifacts.CHECKPOINTS
        return (folder / "best.pt").is_file() or (folder / "last.pt").is_file()


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(train, val, skipped) records of ``metrics.jsonl``, each split sorted by step.

    A resumed run appends to the file, so a step may appear twice: the later record wins.
    Lines that are not JSON objects (a line cut off by a crash) are skipped and counted.
    """
    by_split: dict[str, dict[int, dict[str, Any]]] = {"train": {}, "val": {}}
    skipped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if (
            not isinstance(record, dict)
            or record.get(artifacts.SPLIT) not in by_split
            or not isinstance(record.get(artifacts.STEP), int)
        ):
            skipped += 1
            continue
        by_split[record[artifacts.SPLIT]][record[artifacts.STEP]] = record
    train, val = ([split[s] for s in sorted(split)] for split in by_split.values())
    return train, val, skipped


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    return value if isinstance(value, dict) else None


def _read_summary(raw: dict[str, Any] | None, notes: list[str]) -> Summary | None:
    if raw is None:
        return None
    try:
        return Summary.from_dict(raw)
    except TypeError as exc:  # written by another version: missing keys
        notes.append(f"{artifacts.SUMMARY}: not read ({exc})")
        return None


def _read_health(raw: dict[str, Any] | None, notes: list[str]) -> list[dict[str, Any]] | None:
    """The ``health`` entries of a summary (read from the file itself, so that a summary
    written by a newer or older lejepa still shows them); None when there is no such list."""
    health = (raw or {}).get(HEALTH)
    if health is None:
        return None
    if not isinstance(health, list) or not all(isinstance(entry, dict) for entry in health):
        notes.append(f"{artifacts.SUMMARY}: `{HEALTH}` is not a list of checks; not shown")
        return None
    return health


def read_run(run_dir: str | Path) -> RunFiles:
    """Read a run directory; ``CheckpointError`` naming it and what is missing otherwise."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a run directory (no such directory)")
    required = (artifacts.METRICS, artifacts.RESOLVED_RECIPE)
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: not a run directory (no {' and no '.join(missing)})")
    recipe_text = (path / artifacts.RESOLVED_RECIPE).read_text(encoding="utf-8")
    try:
        recipe = tomllib.loads(recipe_text)
    except tomllib.TOMLDecodeError as exc:
        raise CheckpointError(
            f"{path / artifacts.RESOLVED_RECIPE}: not valid TOML ({exc})"
        ) from None
    train, val, skipped = read_metrics(path / artifacts.METRICS)
    notes = [f"{artifacts.METRICS}: {skipped} unreadable line(s) skipped"] if skipped else []
    raw_summary = _read_json(path / artifacts.SUMMARY)
    return RunFiles(
        path=path,
        name=path.resolve().name,
        recipe_text=recipe_text,
        recipe=recipe,
        train=train,
        val=val,
        summary=_read_summary(raw_summary, notes),
        evaluation=_read_json(path / artifacts.EVAL),
        notes=notes,
        health=_read_health(raw_summary, notes),
    )
