"""``train.loss_weighting``: the text of the option, parsed and checked without torch (the recipe
schema imports it; ``weighting.py`` builds the modules).

    "fixed"              the [[losses]] weights as written (default)
    "uncertainty"        learned log-variances (Kendall, Gal & Cipolla 2018)
    "gradnorm"           GradNorm (Chen et al. 2018), asymmetry alpha = 1.5
    "gradnorm:<alpha>"   GradNorm with that alpha (a number >= 0), e.g. "gradnorm:0.5"
"""

from __future__ import annotations

import math
from typing import Any

MODES = ("fixed", "uncertainty", "gradnorm")
DEFAULT_ALPHA = 1.5
"""GradNorm's asymmetry when ``"gradnorm"`` names none (Chen et al. use 0.12 - 3; 1.5 on NYUv2)."""


def parse_loss_weighting(text: str) -> tuple[str, float]:
    """``"gradnorm:0.5"`` -> ("gradnorm", 0.5); ``"uncertainty"`` -> ("uncertainty", alpha
    default, unused). Raises ``ValueError`` with the expected forms."""
    mode, sep, raw = text.partition(":")
    alpha = DEFAULT_ALPHA
    if sep and mode == "gradnorm":
        try:
            alpha = float(raw)
        except ValueError:
            alpha = math.nan
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f'expected "gradnorm:<alpha>" with a number alpha >= 0, got "{text}"')
    elif sep or mode not in MODES:
        forms = ", ".join(f'"{m}"' for m in MODES)
        raise ValueError(f'expected one of {forms} or "gradnorm:<alpha>", got "{text}"')
    return mode, alpha


def loss_weighting_mode(instance: Any, attribute: Any, value: str) -> None:
    """attrs validator of ``train.loss_weighting`` (an error line naming the field)."""
    try:
        parse_loss_weighting(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None
