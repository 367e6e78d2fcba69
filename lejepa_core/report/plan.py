"""``lejepa plan``'s picture: each policy's trajectories of the goal elements against the goals.

``plan_figure(report)`` draws ``plan.json``'s content (``lejepa plan`` writes it as
``plan.png``); ``plan_views_figure(views)`` is the report's entry (``figures.FIGURES``): the
same picture from the run's ``plan.json``, skipped for runs whose predictor takes no actions.
"""

from __future__ import annotations

import json
from typing import Any

from lejepa_core.report.canvas import NotDrawn, new_figure

PLAN_JSON = "plan.json"

SHOWN = 12  # tasks drawn per panel


def plan_figure(report: dict[str, Any]) -> Any:
    """One panel per policy: the first ``SHOWN`` tasks' paths (the goal's first two elements),
    start (dot), goal (cross) and the success circle; the title carries the success rate."""
    policies = report["policies"]
    figure, axes = new_figure(len(policies), width=3.6, height=3.6)
    radius = report["task"]["success_distance"]
    low, high = report["task"]["goal_low"], report["task"]["goal_high"]
    for ax, (name, result) in zip(axes, policies.items(), strict=True):
        for i, episode in enumerate(result["episodes"][:SHOWN]):
            colour = f"C{i % 10}"
            path = [p[:2] for p in episode["path"]]
            xs, ys = [p[0] for p in path], [p[1] for p in path]
            ax.plot(xs, ys, color=colour, lw=1.0, alpha=0.8)
            ax.plot(xs[:1], ys[:1], "o", color=colour, ms=3)
            gx, gy = episode["goal"][:2]
            ax.plot([gx], [gy], "x", color=colour, ms=6)
            ax.add_patch(_circle((gx, gy), radius, colour, episode["success"]))
        if len(low) >= 2:
            ax.set_xlim(low[0] - radius, high[0] + radius)
            ax.set_ylim(low[1] - radius, high[1] + radius)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: {result['success_rate']:.0%} reached", fontsize=10)
    return figure


def _circle(centre, radius, colour, filled):
    from matplotlib.patches import Circle

    return Circle(centre, radius, color=colour, fill=filled, alpha=0.25 if filled else 0.6, lw=0.8)


def plan_views_figure(views: Any) -> Any:
    """The report's picture of ``RUN_DIR/plan.json`` (None for passive runs)."""
    from lejepa_core.interfaces import takes_actions

    loaded = views.loaded
    if not takes_actions(loaded.model.predictor):
        return None
    path = loaded.path / PLAN_JSON
    if not path.is_file():
        raise NotDrawn(f"no {PLAN_JSON}: run `lejepa plan {loaded.path}` first")
    return plan_figure(json.loads(path.read_text()))
