"""What the safety evaluation shows: the markdown table, MLflow metrics and the per-prompt table.

Pure: the same numbers the gate decided on, laid out for people (markdown, Prefect artifact) and
for MLflow (flat metric names, one row per prompt and model).
"""

from __future__ import annotations

import math
from typing import Any

from tuneops.tasks.evaluation.safety.evaluate import SafetyEvaluation
from tuneops.tasks.evaluation.safety.rules import SAFETY_METRICS


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def safety_markdown(result: SafetyEvaluation, candidate: str, base: str, ceilings: dict[str, float]) -> str:
    """A table of unsafe rates (candidate, base, paired difference, ceiling) and the failed checks."""
    cand, ref = result.scores[candidate], result.scores[base]
    ceilings = {**ceilings, **result.ceilings}
    verdict = "passed" if result.decision.passed else "failed"
    lines = [
        f"#### Safety ({verdict}): {len(result.prompts)} red-team prompts, PII checked on every answer, "
        f"{result.canaries} canaries",
        "",
        "| unsafe rate | candidate | base | candidate - base | ceiling |",
        "|---|---|---|---|---|",
    ]
    for metric in result.indicators.get(candidate, dict.fromkeys(SAFETY_METRICS)):
        if cand.rates.get(metric) is None and ref.rates.get(metric) is None:
            continue
        diff = ref.differences.get(metric)
        band = "n/a" if diff is None else f"{diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
        ceiling = _pct(ceilings[metric]) if metric in ceilings else "-"
        lines.append(
            f"| {metric} | {_pct(cand.rates.get(metric))} | {_pct(ref.rates.get(metric))} | {band} | "
            f"{ceiling} |"
        )
    failures = result.decision.failures
    if failures:
        lines += ["", "Failed safety checks:"] + [f"- {c.message}" for c in failures]
    return "\n".join(lines)


def safety_metrics(result: SafetyEvaluation, candidate: str, base: str) -> dict[str, float]:
    """Flat MLflow metrics: rates per model, the paired difference with its interval, the verdict."""
    out: dict[str, float] = {"safety.passed": 1.0 if result.decision.passed else 0.0}
    for label, scores in result.scores.items():
        for metric, rate in scores.rates.items():
            if rate is not None:
                out[f"safety.{label}.{metric}"] = rate
        out[f"safety.{label}.canary_leaks"] = float(len(scores.canary_leaks))
    for metric, diff in result.scores[base].differences.items():
        if diff is not None:
            key = f"safety.{candidate}_minus_{base}.{metric}"
            out.update({key: diff.estimate, f"{key}.ci_low": diff.low, f"{key}.ci_high": diff.high})
    out.update({f"safety.{k}": v for k, v in result.extra.items()})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def safety_rows(result: SafetyEvaluation) -> dict[str, list[Any]]:
    """One row per red-team prompt and model: the prompt, the answer, which indicators fired."""
    table: dict[str, list[Any]] = {"id": [], "category": [], "model": [], "prompt": [], "response": []}
    metrics = list(next(iter(result.indicators.values()), dict.fromkeys(SAFETY_METRICS)))
    table.update({m: [] for m in metrics})
    for label, answers in result.answers.items():
        for i, (item, answer) in enumerate(zip(result.prompts, answers.answers, strict=True)):
            table["id"].append(item.id)
            table["category"].append(item.category)
            table["model"].append(label)
            table["prompt"].append(item.prompt)
            table["response"].append(answer.response)
            for metric in metrics:
                value = result.indicators[label][metric][i]
                table[metric].append(None if math.isnan(value) else value)
    return table
