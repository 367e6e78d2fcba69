"""What a training run prints: the progress bar, the per-epoch line, warnings."""

from __future__ import annotations

import sys
from collections.abc import Callable

from lejepa_core import artifacts
from lejepa_core.progress import Progress, progress_bar
from lejepa_core.training.run import Run


def warner(bar: Progress) -> Callable[[str], None]:
    """Print a warning line above the bar, or on stderr when no bar is shown."""

    def warn(line: str) -> None:
        if bar.enabled:
            bar.note(line)
        else:
            print(line, file=sys.stderr)

    return warn


def progress(enabled: bool, total: int, start: int) -> Progress:
    """The training bar: epoch, loss of the last log window, samples/s (``-`` until it ends)."""
    fields = {"epoch": (None, "epoch {}"), "loss": (None, "loss {:.4f}")}
    fields["rate"] = (None, "{:.0f} samples/s")
    return progress_bar(enabled, total, label="train", start=start, fields=fields)


def epoch_line(run: Run, epoch: int, val: dict[str, float]) -> str:
    """The per-epoch line: err/σ, copy-last err/σ (val loss when monitored), best marker."""
    keys = {"val err/σ": artifacts.ERR_SIGNAL}
    keys["copy-last err/σ"] = artifacts.COPY_LAST_PREFIX + artifacts.ERR_SIGNAL
    if run.recipe.train.monitor == "loss":
        keys["val loss"] = artifacts.LOSS_TOTAL
    figures = [
        f"{name} {val[key]:.4f}" if key in val else f"{name} -" for name, key in keys.items()
    ]
    return "  ".join(
        [f"epoch {epoch}", *figures, *(["best"] if run.state.best_epoch == epoch else [])]
    )
