"""The rollout's chart: per-arm guardrail metrics and their always-valid intervals over time.

One row per guardrail check. Left: the challenger's and the champion's value at every look.
Right: the interval of the check (the challenger's value for a ``threshold``, its gain over the
champion in the metric's better direction otherwise) as a band, the requirement as a dashed
line; a band wholly below the line is a breach. Dotted vertical lines mark step changes. The
object API only (``matplotlib.figure.Figure``, Agg by construction): no pyplot global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuneops.tasks.rollout.state import StepRow


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _series(steps: Sequence[StepRow]) -> dict[tuple[str, str], list[tuple[float, dict[str, Any]]]]:
    """Per (metric, kind): (seconds since the first row, check dict) at every judged look."""
    if not steps:
        return {}
    start = steps[0].at
    series: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}
    for s in steps:
        for check in (s.verdict or {}).get("checks", []):
            t = (s.at - start).total_seconds()
            series.setdefault((check["metric"], check["kind"]), []).append((t, check))
    return series


def rollout_figure(steps: Sequence[StepRow], title: str = "") -> Any:
    """The chart of a rollout's step table (a ``matplotlib.figure.Figure``)."""
    from matplotlib.figure import Figure

    series = _series(steps)
    rows = max(len(series), 1)
    figure = Figure(figsize=(10, 2.3 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, 2, squeeze=False)
    if title:
        figure.suptitle(title, fontsize=10)
    start = steps[0].at if steps else None
    step_changes = [(s.at - start).total_seconds() for s in steps if start and s.action == "enter"]
    for (metric, kind), (arms, gain) in zip(sorted(series), axes, strict=False):
        points = series[(metric, kind)]
        times = [t for t, _ in points]
        for label, style in (("challenger", "-o"), ("champion", "-s")):
            values = [_finite(c.get(label)) for _, c in points]
            arms.plot(times, _nan(values), style, markersize=3, label=label)
        arms.set_title(f"{metric} per arm", fontsize=9)
        arms.legend(fontsize=7)
        intervals = [c.get("interval") or {} for _, c in points]
        low = [_finite(iv.get("low")) for iv in intervals]
        high = [_finite(iv.get("high")) for iv in intervals]
        est = [_finite(iv.get("estimate")) for iv in intervals]
        gain.fill_between(times, _nan(low), _nan(high), alpha=0.3, label="always-valid interval")
        gain.plot(times, _nan(est), "-o", markersize=3, label="estimate")
        required = _finite(points[-1][1].get("required"))
        if required is not None:
            gain.axhline(required, linestyle="--", color="red", linewidth=1, label="required")
        what = "challenger" if kind == "threshold" else "gain over champion"
        gain.set_title(f"{metric} {kind}: {what}", fontsize=9)
        gain.legend(fontsize=7)
        for axis in (arms, gain):
            for t in step_changes:
                axis.axvline(t, linestyle=":", color="grey", linewidth=1)
            axis.tick_params(labelsize=7)
            axis.set_xlabel("seconds since the rollout began", fontsize=7)
    if not series:
        axes[0][0].text(0.5, 0.5, "no judged look yet", ha="center", va="center")
    return figure
