"""The ``[data]`` keys of the difficulty curriculum (``curriculum.py``), as field factories.

``recipe.DataConfig`` calls each in its class body, so the keys keep their place in the table
(attrs orders fields by creation) while their help texts live next to the curriculum. No torch.
"""

from __future__ import annotations

from typing import Any

from lejepa_core.params import in_range, non_negative, param

CURRICULUM_MODES = ("none", "competence")


def curriculum() -> Any:
    return param(
        "none",
        "'competence': draw training windows from the easiest episodes first (the file's "
        "per-episode /episode_keys/difficulty; Platanios et al. 2019); 'none': from all",
    )


def curriculum_start() -> Any:
    return param(
        0.25,
        "c0: fraction of the easiest training episodes available at step 0 (competence)",
        in_range(0.0, 1.0),
    )


def curriculum_steps() -> Any:
    return param(
        1000,
        "T: step from which every training episode is available; c(t) = min(1, sqrt(t (1 - "
        "c0^2) / T + c0^2)) (competence; 0: all from the start)",
        non_negative,
    )
