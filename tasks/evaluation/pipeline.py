"""The evaluation stage end to end: answer, score, compare, decide, log.

``evaluate_candidate`` is what the ``retrain`` flow, the ``evaluate`` flow and ``tuneops eval``
call. It composes the adapters (generation, scoring, MLflow) and the pure core (summaries, the
gate). A failed gate is returned in the result; only an evaluation that could not be carried out
(unreachable model, rows that could not be answered, unwritable MLflow) raises.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tuneops.providers import resolve_endpoint
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.evaluation.checkpoints import (
    overfitting_checks,
    primary_metric,
    training_markdown,
    winner_of,
)
from tuneops.tasks.evaluation.formats import FormatComplianceEvaluator
from tuneops.tasks.evaluation.generate import generate_answers, require_complete
from tuneops.tasks.evaluation.nltk_data import nltk_data_dir
from tuneops.tasks.evaluation.report import log_evaluation_run
from tuneops.tasks.evaluation.rules import GateDecision, decide_promotion
from tuneops.tasks.evaluation.safety.evaluate import SafetyEvaluation, evaluate_safety
from tuneops.tasks.evaluation.safety.summary import safety_markdown
from tuneops.tasks.evaluation.score import (
    JUDGE_METRICS,
    JudgeEndpoint,
    check_metrics,
    require_judge,
    score_answers,
)
from tuneops.tasks.evaluation.stats import Interval
from tuneops.tasks.evaluation.summary import compare, markdown_table, scores_for_gate, summarise_model
from tuneops.tasks.evaluation.testset import read_test_split
from tuneops.tasks.evaluation.types import (
    GenerationSettings,
    ModelAnswers,
    ModelSummary,
    ModelUnderTest,
    TestExample,
    examples_digest,
)
from tuneops.tasks.finetune.checkpoints import TrainingReport

log = logging.getLogger(__name__)

CANDIDATE_LABEL, BASE_LABEL, FEW_SHOT_LABEL, CHAMPION_LABEL = "candidate", "base", "few-shot", "champion"


@dataclass(frozen=True)
class EvaluationResult:
    """What the evaluation found: per-model aggregates with intervals, comparisons, the decision.

    ``comparisons[label][metric]`` is the paired interval of candidate - ``label``; ``safety``
    is the red-team/PII evaluation when the spec has ``evaluation.safety`` (its verdict is part
    of ``decision``).
    """

    summaries: dict[str, ModelSummary]
    comparisons: dict[str, dict[str, Interval | None]]
    decision: GateDecision
    dataset_digest: str
    markdown: str
    mlflow_run_id: str | None = None
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    safety: SafetyEvaluation | None = None

    @property
    def passed(self) -> bool:
        return self.decision.passed

    @property
    def candidate_model(self) -> str:
        """The model id that was gated (the winner, when several checkpoints were evaluated)."""
        return self.summaries[self.decision.candidate].model


def model_under_test(spec: Spec, settings: TuneopsSettings, label: str, model_id: str) -> ModelUnderTest:
    """A model reached through the spec's provider, prompted with the production system prompt."""
    endpoint = resolve_endpoint(spec.provider, settings)
    policy = spec.data.system_prompt
    inject = policy.policy == "inject" and policy.text
    price = spec.evaluation.prices.get(label)  # type: ignore[call-overload]
    return ModelUnderTest(
        label=label,
        base_url=endpoint.base_url,
        model=model_id,
        api_key=endpoint.api_key,
        system_prompt=policy.text if inject else None,
        system_prompt_mode="inject" if inject else "keep",
        price_per_1m_input_tokens=price.input_per_million_tokens if price else None,
        price_per_1m_output_tokens=price.output_per_million_tokens if price else None,
    )


def few_shot_variant(base: ModelUnderTest, train_split: Path, shots: int, seed: int = 42) -> ModelUnderTest:
    """The base model prompted with ``shots`` training rows (the prompt-engineering baseline).

    Shots are drawn with ``seed`` from the *train* split, never the test split, so the baseline
    is not shown answers; each becomes a user turn and the reference answer an assistant turn.
    """
    rows = read_test_split(train_split)
    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(shots, len(rows))))
    examples = tuple(
        (
            *tuple((role, content) for role, content in rows[i].messages if role != "system"),
            ("assistant", rows[i].reference),
        )
        for i in chosen
    )
    return ModelUnderTest(
        label=FEW_SHOT_LABEL,
        base_url=base.base_url,
        model=base.model,
        api_key=base.api_key,
        api_key_env=base.api_key_env,
        system_prompt=base.system_prompt,
        system_prompt_mode=base.system_prompt_mode,
        few_shot=examples,
        price_per_1m_input_tokens=base.price_per_1m_input_tokens,
        price_per_1m_output_tokens=base.price_per_1m_output_tokens,
    )


def _metrics(spec: Spec) -> list[str]:
    """The spec's metrics plus its judge's evaluators, when a judge is configured."""
    metrics = list(spec.evaluation.metrics)
    judge = spec.evaluation.judge
    if judge is not None:
        metrics += [m for m in judge.evaluators if m not in metrics and m in JUDGE_METRICS]
    return metrics


def _judge(spec: Spec, settings: TuneopsSettings) -> JudgeEndpoint | None:
    judge = spec.evaluation.judge
    if judge is None:
        return None
    secrets = settings.local_api_key or settings.openai_api_key
    return JudgeEndpoint(
        base_url=judge.base_url,
        model=judge.model,
        api_key=secrets.get_secret_value() if secrets else "not-needed",
        evaluators=tuple(judge.evaluators),
    )


def evaluate_candidate(
    spec: Spec,
    settings: TuneopsSettings,
    test_split: Path,
    candidate: ModelUnderTest | Sequence[ModelUnderTest],
    base: ModelUnderTest,
    champion: ModelUnderTest | None = None,
    dataset_digest: str | None = None,
    *,
    few_shot_source: Path | None = None,
    training: TrainingReport | None = None,
    log_to_mlflow: bool = True,
    show_progress: bool = True,
    extra_tags: dict[str, str] | None = None,
) -> EvaluationResult:
    """Evaluate ``candidate`` against ``base`` (and the few-shot base, and ``champion``) and gate it.

    Args:
        spec: the project spec (metrics, gates, ceilings, generation settings).
        settings: where MLflow and the answer cache live.
        test_split: local JSONL path of the held-out split.
        candidate: the fine-tune (``label`` ``candidate``), or several checkpoints of it (labels
            ``ckpt-step-N``): all are answered and scored, the winner is gated.
        base: the base model with the production system prompt.
        champion: the current champion, when there is one.
        dataset_digest: the dataset version's sha256 (cache key and lineage); hashed from the
            rows when not given.
        few_shot_source: the train split, for the few-shot baseline when the spec asks for one.
        training: the job's checkpoint report: picks among checkpoints on ties, and feeds the
            overfitting gate (``finetune.max_validation_loss_rise``) and the report.
        log_to_mlflow: write the evaluation run (off only for dry runs).
        show_progress: draw progress bars.
        extra_tags: more MLflow tags (e.g. the lead's ``tuneops.flow_run_id``).

    Raises:
        ProviderError: a model could not answer every row (the message says how many), or the
            judge endpoint is down (checked before any answer is generated).
        RegistryError: MLflow could not be written.
    """
    config = spec.evaluation
    check_metrics(_metrics(spec), [gate.metric for gate in config.gates])
    if (judge := _judge(spec, settings)) is not None:
        require_judge(judge)  # the gate needs the judge: fail in seconds, not after generating
    examples = read_test_split(test_split, max_rows=config.max_rows)
    digest = dataset_digest or examples_digest(examples)
    candidates = [candidate] if isinstance(candidate, ModelUnderTest) else list(candidate)
    models = [*candidates, base]
    if config.few_shot is not None:
        if few_shot_source is not None:
            shots = few_shot_variant(base, few_shot_source, config.few_shot.examples, config.few_shot.seed)
            price = config.prices.get(FEW_SHOT_LABEL)  # type: ignore[call-overload]
            if price is not None:
                shots = replace(
                    shots,
                    price_per_1m_input_tokens=price.input_per_million_tokens,
                    price_per_1m_output_tokens=price.output_per_million_tokens,
                )
            models.append(shots)
        else:
            log.warning("few-shot baseline skipped: no train split given to draw examples from")
    if champion is not None:
        models.append(champion)
    generation = GenerationSettings(
        max_tokens=config.max_tokens, temperature=config.temperature, seed=spec.finetune.seed
    )
    answers = [
        require_complete(
            generate_answers(
                model,
                examples,
                dataset_digest=digest,
                settings=generation,
                concurrency=config.concurrency,
                cache_dir=settings.state_home / "eval-cache",
                show_progress=show_progress,
            )
        )
        for model in models
    ]
    return _score_and_decide(
        spec,
        settings,
        examples,
        answers,
        digest,
        Path(test_split),
        candidates=len(candidates),
        training=training,
        log_to_mlflow=log_to_mlflow,
        extra_tags=extra_tags,
        show_progress=show_progress,
    )


def _score_and_decide(
    spec: Spec,
    settings: TuneopsSettings,
    examples: Sequence[TestExample],
    answers: Sequence[ModelAnswers],
    digest: str,
    test_split: Path,
    *,
    candidates: int,
    training: TrainingReport | None,
    log_to_mlflow: bool,
    extra_tags: dict[str, str] | None,
    show_progress: bool,
) -> EvaluationResult:
    """Score everything, pick the winning candidate, gate it (safety, overfitting), log the run.

    ``answers`` are the ``candidates`` first, then the base, the few-shot base and the champion.
    """
    config = spec.evaluation
    fmt = config.format
    format_evaluator = FormatComplianceEvaluator(
        regex=fmt.regex,
        json_schema=fmt.json_schema,
        required_sections=tuple(fmt.required_sections),
        max_chars=fmt.max_chars,
    )
    judge = _judge(spec, settings)
    rows = score_answers(
        examples,
        answers,
        metrics=_metrics(spec),
        nltk_dir=nltk_data_dir(settings.state_home),
        format_evaluator=format_evaluator,
        judge=judge,
    )
    boot = {
        "resamples": config.bootstrap_resamples,
        "confidence": config.confidence,
        "seed": spec.finetune.seed,
    }
    summaries = {a.label: summarise_model(a, rows.for_model(a.label), **boot) for a in answers}
    contenders, others = answers[:candidates], answers[candidates:]
    winner = contenders[winner_of(spec, [a.model for a in contenders], summaries, training)]
    cand_label = winner.label
    comparisons = {
        a.label: compare(rows.for_model(cand_label), rows.for_model(a.label), **boot) for a in others
    }
    baselines = [
        scores_for_gate(summaries[a.label], comparisons[a.label]) for a in others if a.label != CHAMPION_LABEL
    ]
    champion = next((a for a in others if a.label == CHAMPION_LABEL), None)
    decision = decide_promotion(
        scores_for_gate(summaries[cand_label], failed_rows=len(winner.failed)),
        baselines,
        config.gates,
        champion=scores_for_gate(summaries[CHAMPION_LABEL], comparisons[CHAMPION_LABEL])
        if champion
        else None,
        beat_champion=config.beat_champion,
        max_latency_p95_ms=config.max_latency_p95_ms,
        max_cost_per_1k_requests_usd=config.max_cost_per_1k_requests_usd,
    ).with_checks(overfitting_checks(spec, winner.model.model, training))
    safety = None
    if config.safety is not None:
        safety = evaluate_safety(
            spec, settings, winner.model, others[0].model, examples, [winner, *others],
            show_progress=show_progress,
        )  # fmt: skip
        decision = decision.with_safety(safety.decision)
    in_order = [winner, *others, *(a for a in contenders if a is not winner)]  # candidate, base first
    ordered = [summaries[a.label] for a in in_order]
    markdown = markdown_table(ordered, comparisons, cand_label, config.confidence)
    markdown = f"### Evaluation of `{spec.model.name}`: {decision.summary()}\n\n{markdown}"
    if candidates > 1:
        markdown += (
            f"\n\n{candidates} checkpoints evaluated; `{cand_label}` ({winner.model.model}) won on "
            f"{primary_metric(spec)[0]} and is the one gated."
        )
    section = training_markdown(training, winner.model.model)
    if section:
        markdown += "\n\n" + section
    if safety is not None and config.safety is not None:
        markdown += "\n\n" + safety_markdown(
            safety, cand_label, others[0].label, dict(config.safety.ceilings)
        )
    if rows.skipped:
        markdown += "\n\nSkipped metrics: " + "; ".join(f"{m} ({why})" for m, why in rows.skipped.items())
    run_id = None
    if log_to_mlflow:
        run_id = log_evaluation_run(
            tracking_uri=str(settings.tracking_uri),
            artifact_root=settings.artifact_root,
            experiment_name=spec.model.name,
            examples=examples,
            answers=in_order,
            scores=rows.scores,
            summaries=ordered,
            comparisons=comparisons,
            decision=decision,
            settings=GenerationSettings(config.max_tokens, config.temperature, spec.finetune.seed),
            dataset_digest=digest,
            dataset_name=spec.dataset_name,
            split_uri=test_split.resolve().as_uri(),
            split_sha256=hashlib.sha256(test_split.read_bytes()).hexdigest(),
            markdown=markdown,
            extra_tags=extra_tags,
            safety=safety,
        )
    return EvaluationResult(
        summaries, comparisons, decision, digest, markdown, run_id, dict(rows.skipped), safety
    )
