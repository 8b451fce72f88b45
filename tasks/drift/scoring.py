"""Sampled quality scores, the adapter half: score served answers with the evaluation's scorers.

The scorers are the evaluation's own, imported, never re-implemented, so a served answer is
scored exactly as the answers that passed the gate were: the spec's format rules
(``FormatComplianceEvaluator``), the refusal detector, the safety PII check (PII in the answer
that the prompt did not contain) and, with ``evaluation.judge``, azure-ai-evaluation's LLM
judges through the evaluation's ``score_answers`` on the same endpoint. ``score_answers`` probes
the judge first, so a dead judge costs the check seconds, not azure's retries per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tuneops.errors import ProviderError
from tuneops.requestlog import LoggedRequest
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.drift.quality import PII_METRIC, gate_bars, pick_sample, scorable_metrics, summarise_scores
from tuneops.tasks.drift.rules import QualityScore
from tuneops.tasks.drift.sources import last_user_text
from tuneops.tasks.evaluation.formats import FormatComplianceEvaluator, RefusalEvaluator
from tuneops.tasks.evaluation.safety.rules import pii_leaks
from tuneops.tasks.evaluation.score import JUDGE_METRICS

CLIENT_ERROR = 400


@dataclass(frozen=True)
class QualitySample:
    """The scored sample: one score per metric, or why nothing could be judged (``missing``)."""

    scores: tuple[QualityScore, ...] = ()
    sampled: int = 0
    missing: str | None = None
    notes: tuple[str, ...] = ()


def measure_quality(
    spec: Spec, settings: TuneopsSettings, rows: Sequence[LoggedRequest], evaluated: dict[str, float]
) -> QualitySample:
    """Score ``monitoring.quality_sample`` of the window's answered, captured requests.

    Nothing to score (sampling off, no reference-free scorer in the evaluation) is an empty
    sample with no reason; a sample too thin to judge says how many rows it had.

    A judge that cannot score at all (endpoint down, every call failed) leaves its metrics
    unjudged with the reason and a note, so an outage of the judge is never read as a drop in
    quality and never hides the other signals of the check.
    """
    config = spec.monitoring
    metrics = scorable_metrics(spec)
    if config.quality_sample == 0 or not metrics:
        return QualitySample()
    answered = [
        r for r in rows if r.status_code < CLIENT_ERROR and r.response_text is not None and r.prompt_text
    ]
    ids = [r.request_id for r in answered]
    picked = [answered[i] for i in pick_sample(ids, config.quality_sample, config.quality_max_rows)]
    if len(picked) < config.quality_min_rows:
        why = f"{len(picked)} sampled answers with captured text, {config.quality_min_rows} needed"
        if not answered:
            why = "answer texts are not captured (serving.capture_text off)"
        return QualitySample(sampled=len(picked), missing=why)
    notes: list[str] = []
    unjudged: dict[str, str] = {}
    per_metric = _score(spec, settings, picked, metrics, notes, unjudged)
    scores = summarise_scores(
        per_metric,
        gate_bars(spec),
        evaluated,
        confidence=spec.evaluation.confidence,
        resamples=spec.evaluation.bootstrap_resamples,
        unjudged=unjudged,
    )
    return QualitySample(scores=scores, sampled=len(picked), notes=tuple(notes))


def _score(
    spec: Spec,
    settings: TuneopsSettings,
    rows: Sequence[LoggedRequest],
    metrics: Sequence[str],
    notes: list[str],
    unjudged: dict[str, str],
) -> dict[str, list[float]]:
    responses = [r.response_text or "" for r in rows]
    out: dict[str, list[float]] = {}
    if "format" in metrics:
        fmt = spec.evaluation.format
        evaluator = FormatComplianceEvaluator(
            regex=fmt.regex,
            json_schema=fmt.json_schema,
            required_sections=tuple(fmt.required_sections),
            max_chars=fmt.max_chars,
        )
        out["format"] = [float(evaluator(response=r)["format"]) for r in responses]
    if "refusal" in metrics:
        out["refusal"] = [float(RefusalEvaluator()(response=r)["refusal"]) for r in responses]
    judged = [m for m in metrics if m in JUDGE_METRICS]
    if judged:
        try:
            out.update(_judge(spec, settings, rows, judged))
        except ProviderError as exc:
            notes.append(f"the judge could not score the sample: {exc.one_line()}")
            out.update({m: [math.nan] * len(rows) for m in judged})
            unjudged.update({m: exc.one_line() for m in judged})
        for m in judged:
            if m not in unjudged and not any(math.isfinite(v) for v in out.get(m, ())):
                unjudged[m] = "the judge returned no score for any sampled answer"
    if PII_METRIC in metrics and spec.evaluation.safety is not None:
        kinds = spec.evaluation.safety.pii_kinds
        out[PII_METRIC] = [
            1.0 if pii_leaks(r.response_text, r.prompt_text or "", kinds) else 0.0 for r in rows
        ]
    return {m: out[m] for m in metrics if m in out}


def _judge(
    spec: Spec, settings: TuneopsSettings, rows: Sequence[LoggedRequest], metrics: Sequence[str]
) -> dict[str, list[float]]:
    """The judge's scores per served answer, through the evaluation's own ``score_answers``."""
    from tuneops.tasks.evaluation.nltk_data import nltk_data_dir
    from tuneops.tasks.evaluation.pipeline import _judge as judge_endpoint  # the evaluation's own
    from tuneops.tasks.evaluation.score import score_answers
    from tuneops.tasks.evaluation.types import Answer, ModelAnswers, ModelUnderTest, TestExample

    endpoint = judge_endpoint(spec, settings)
    if endpoint is None:
        return {}
    examples = [
        TestExample(index=i, messages=(("user", last_user_text(r.prompt_text) or " "),), reference="")
        for i, r in enumerate(rows)
    ]
    served = ModelAnswers(
        model=ModelUnderTest(label="served", base_url="", model=spec.model.name),
        answers=tuple(Answer(index=i, response=r.response_text) for i, r in enumerate(rows)),
    )
    scored = score_answers(
        examples, [served], metrics=list(metrics), nltk_dir=nltk_data_dir(settings.state_home), judge=endpoint
    )
    return {
        m: [v if math.isfinite(v) else math.nan for v in vs] for m, vs in scored.for_model("served").items()
    }
