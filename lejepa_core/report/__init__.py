"""The HTML report of a run (``lejepa report RUN_DIR``) and of several runs (``lejepa compare``).

``write_report(run_dir)`` writes ``RUN_DIR/report/report.html`` (self-contained: every picture
embedded) and its PNGs; ``write_compare(run_dirs, out)`` one HTML page of several runs;
``read_run(run_dir)`` reads what a run directory holds. What each picture shows and how to
read it: ``docs/report.md``. Modules, by concept:

    run_files   reading a run directory (metrics.jsonl, summary.json via artifacts.Summary)
    curves      training-curve basics and the loss, validation, prediction, rank figures
    gradients   gradient norm (mean and maximum), learning rate, gradient share per loss
    codebook    quantizer usage (also relative to a batch's reach), perplexity, refresh
    per_k       the per-horizon table, bar chart and drift figure (eval.json)
    views       the trained model on validation episodes, driven by the env's EnvInfo
    figures     FIGURES: every picture with its title and caption, in report order
    page        the pages (Jinja2 templates in templates/, autoescaped)
    commands    the click commands (lazy: ``lejepa --help`` imports no matplotlib)

The names below are imported on first use, so that loading the click commands stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["read_run", "write_compare", "write_report"]

_HOMES = {
    "read_run": "lejepa_core.report.run_files",
    "write_report": "lejepa_core.report.page",
    "write_compare": "lejepa_core.report.page",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
