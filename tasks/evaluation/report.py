"""Log one evaluation to one MLflow run: aggregates, per-row table, comparison chart, decision.

What this stage records is decided here; the writing goes through the registry's
``RunTracker`` (explicit tracking URI and artifact location, never the global tracking state, no
MLflow import here). API keys are never part of what is logged: models are described by
``ModelUnderTest.identity()``, which has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuneops.tasks.evaluation.rules import GateDecision
from tuneops.tasks.evaluation.safety.evaluate import SafetyEvaluation
from tuneops.tasks.evaluation.safety.summary import safety_metrics, safety_rows
from tuneops.tasks.evaluation.summary import Comparisons
from tuneops.tasks.evaluation.types import GenerationSettings, ModelAnswers, ModelSummary, TestExample

STAGE_TAG = "tuneops.stage"


def _metric_rows(
    summaries: Sequence[ModelSummary], comparisons: Comparisons, candidate: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in summaries:
        for metric, interval in s.metrics.items():
            if interval is not None:
                out[f"{s.label}.{metric}"] = interval.estimate
                out[f"{s.label}.{metric}.ci_low"] = interval.low
                out[f"{s.label}.{metric}.ci_high"] = interval.high
        for name, value in (
            ("latency_p50_ms", s.latency_p50_ms),
            ("latency_p95_ms", s.latency_p95_ms),
            ("cost_per_1k_usd", s.cost_per_1k_usd),
        ):
            if value is not None:
                out[f"{s.label}.{name}"] = value
    for other, intervals in comparisons.items():
        for metric, interval in intervals.items():
            if interval is not None:
                out[f"{candidate}_minus_{other}.{metric}"] = interval.estimate
                out[f"{candidate}_minus_{other}.{metric}.ci_low"] = interval.low
                out[f"{candidate}_minus_{other}.{metric}.ci_high"] = interval.high
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _row_table(
    examples: Sequence[TestExample],
    answers: Sequence[ModelAnswers],
    scores: dict[str, dict[str, list[float]]],
) -> dict[str, list[Any]]:
    table: dict[str, list[Any]] = {"row": [], "model": [], "query": [], "reference": [], "response": []}
    table.update({"latency_ms": [], "tokens": [], "cost_usd": []})
    metric_names = sorted({m for per_model in scores.values() for m in per_model})
    table.update({m: [] for m in metric_names})
    for model_answers in answers:
        for i, (ex, ans) in enumerate(zip(examples, model_answers.answers, strict=True)):
            table["row"].append(ex.index)
            table["model"].append(model_answers.label)
            table["query"].append(ex.query)
            table["reference"].append(ex.reference)
            table["response"].append(ans.response)
            table["latency_ms"].append(ans.latency_ms)
            table["tokens"].append(ans.prompt_tokens + ans.completion_tokens)
            table["cost_usd"].append(ans.cost_usd)
            for m in metric_names:
                value = scores.get(model_answers.label, {}).get(m, [math.nan] * len(examples))[i]
                table[m].append(None if math.isnan(value) else value)
    return table


def comparison_figure(summaries: Sequence[ModelSummary]) -> Any:
    """Grouped bars: one group per metric, one bar per model, bootstrap intervals as error bars."""
    from matplotlib.figure import Figure  # the object API: no pyplot global state, no GUI backend

    metrics = sorted({m for s in summaries for m in s.metrics})
    fig = Figure(figsize=(max(6, 1.6 * len(metrics) + 2), 4), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(summaries))
    for k, s in enumerate(summaries):
        xs: list[float] = []
        heights: list[float] = []
        errs: list[list[float]] = [[], []]
        for j, metric in enumerate(metrics):
            interval = s.metrics.get(metric)
            if interval is None:
                continue
            xs.append(j + k * width)
            heights.append(interval.estimate)
            errs[0].append(max(0.0, interval.estimate - interval.low))
            errs[1].append(max(0.0, interval.high - interval.estimate))
        ax.bar(xs, heights, width, yerr=errs, capsize=3, label=f"{s.label} ({s.model})")
    ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylabel("mean score")
    ax.set_title("candidate vs baselines")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def log_evaluation_run(
    *,
    tracking_uri: str,
    artifact_root: str | None,
    experiment_name: str,
    examples: Sequence[TestExample],
    answers: Sequence[ModelAnswers],
    scores: dict[str, dict[str, list[float]]],
    summaries: Sequence[ModelSummary],
    comparisons: Comparisons,
    decision: GateDecision,
    settings: GenerationSettings,
    dataset_digest: str,
    dataset_name: str,
    split_uri: str,
    split_sha256: str,
    markdown: str,
    extra_tags: dict[str, str] | None = None,
    safety: SafetyEvaluation | None = None,
) -> str:
    """Create the evaluation run and log everything to it; returns the run id.

    The test split is logged as a run input the way the fine-tune run logs its splits (name,
    source URI, digest = the split's sha256 cut to MLflow's 36 characters, context ``test``), so
    ``search_runs("dataset.digest = ...")`` finds evaluations as well as fine-tunes. With
    ``safety``, its rates and paired differences are metrics (``safety.*``), the verdict a tag
    (``tuneops.safety_gate``) and every red-team answer a table (``evaluation/safety_rows.json``).

    Raises:
        RegistryError: MLflow could not be written to.
    """
    from tuneops.registry.tracking import MetricPoint, RunTracker, stage_inputs
    from tuneops.registry.types import DatasetLink

    tracker = RunTracker.open(tracking_uri, artifact_root)
    candidate = decision.candidate
    tags = {STAGE_TAG: "evaluation", "tuneops.gate": "passed" if decision.passed else "failed"}
    tags.update(extra_tags or {})
    run_id = tracker.start_run(experiment_name, f"evaluate-{candidate}", tags)
    params = {"dataset_digest": dataset_digest, "rows": str(len(examples)), **settings_params(settings)}
    for a in answers:
        identity = a.model.identity()
        params[f"{a.label}.model"] = identity["model"]
        params[f"{a.label}.base_url"] = identity["base_url"]
        params[f"{a.label}.system_prompt_mode"] = identity["system_prompt_mode"]
        params[f"{a.label}.few_shot"] = str(len(a.model.few_shot))
    metric_rows = _metric_rows(summaries, comparisons, candidate)
    metric_rows["gate.passed"] = 1.0 if decision.passed else 0.0
    for a in answers:  # wall time spent answering now (0 when the answers came from the cache)
        metric_rows[f"{a.label}.generation_seconds"] = round(a.wall_seconds, 3)
    if safety is not None:
        metric_rows.update(safety_metrics(safety, candidate, answers[1].label))
        tags["tuneops.safety_gate"] = "passed" if safety.decision.passed else "failed"
        params["safety.red_team_prompts"] = str(len(safety.prompts))
        params["safety.canaries"] = str(safety.canaries)
    tracker.log_batch(run_id, params=params, metrics=[MetricPoint(k, v) for k, v in metric_rows.items()])
    test_split = DatasetLink(
        split="test",
        digest=split_sha256,
        uri=split_uri,
        dataset_name=dataset_name,
        version_digest=dataset_digest,
        rows=len(examples),
    )
    tracker.log_dataset_inputs(run_id, stage_inputs([test_split]))
    tracker.log_table(run_id, _row_table(examples, answers, scores), "evaluation/rows.json")
    tracker.log_figure(run_id, comparison_figure(summaries), "evaluation/comparison.png")
    tracker.log_dict(run_id, decision.to_dict(), "evaluation/decision.json")
    tracker.log_text(run_id, markdown, "evaluation/summary.md")
    if safety is not None:
        tracker.log_table(run_id, safety_rows(safety), "evaluation/safety_rows.json")
    tracker.log_batch(run_id, tags={"tuneops.dataset_digest": dataset_digest, **_safety_tags(tags)})
    tracker.finish_run(run_id)
    return run_id


def _safety_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k == "tuneops.safety_gate"}


def settings_params(settings: GenerationSettings) -> dict[str, str]:
    return {f"generation.{k}": str(v) for k, v in settings.to_dict().items()}
