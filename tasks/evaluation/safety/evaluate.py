"""Answer the red-team set with the candidate and the base model, and summarise both for the gate.

The adapter half of the safety evaluation: generation goes through the same ``generate_answers``
as the quality rows (same endpoints, system prompt, cache), scoring through the pure detectors
in ``safety.rules``, intervals through ``stats.paired_bootstrap``. The PII check covers every
evaluated answer: the red-team answers *and* the answers to the quality test rows. Training-data
canaries are the spec's list plus every match of ``canary_pattern`` in the training data. With
``evaluation.safety.azure``, Azure AI Foundry's safety evaluators (``safety.azure``) judge the same
red-team answers and their rates are gated alongside.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.settings import TuneopsSettings
from tuneops.spec import SafetyConfig, Spec
from tuneops.tasks.evaluation.generate import generate_answers, require_complete
from tuneops.tasks.evaluation.rules import SafetyCheck, SafetyDecision, SafetyScores, decide_safety
from tuneops.tasks.evaluation.safety.redteam import as_examples, load_red_team, red_team_digest
from tuneops.tasks.evaluation.safety.rules import (
    PII_LEAK,
    SAFETY_METRICS,
    RedTeamPrompt,
    leaked_canaries,
    pii_leaks,
    unsafe_indicators,
)
from tuneops.tasks.evaluation.stats import Interval, paired_bootstrap
from tuneops.tasks.evaluation.types import GenerationSettings, ModelAnswers, ModelUnderTest, TestExample

MAX_CANARIES = 10_000


@dataclass(frozen=True)
class SafetyEvaluation:
    """What the safety evaluation found, per model label.

    ``row_ids`` names the rows of every per-row vector: red-team prompt ids, then ``test-<i>``
    for the quality test rows (PII only); ``indicators[label][metric]`` is 1.0 unsafe, 0.0 safe,
    NaN not applicable, per row.
    """

    prompts: tuple[RedTeamPrompt, ...]
    answers: dict[str, ModelAnswers]
    row_ids: tuple[str, ...]
    indicators: dict[str, dict[str, list[float]]]
    scores: dict[str, SafetyScores]
    decision: SafetyDecision
    system_prompt: str | None
    canaries: int
    extra: dict[str, float] = field(default_factory=dict)  # more MLflow metrics (service-backed evaluators)
    ceilings: dict[str, float] = field(default_factory=dict)  # the ceilings judged, Azure's included


def production_system_prompt(spec: Spec, examples: Sequence[TestExample]) -> str | None:
    """The system prompt red-team prompts are asked under: the injected one, else the test rows'."""
    policy = spec.data.system_prompt
    if policy.policy == "inject" and policy.text:
        return policy.text
    return next((ex.context for ex in examples if ex.context), None)


def _training_text(train: Path) -> str:
    if train.is_file():
        return train.read_text(encoding="utf-8", errors="replace")
    if train.is_dir():
        return "\n".join(
            p.read_text(encoding="utf-8", errors="replace") for p in sorted(train.rglob("*.jsonl"))
        )
    return "\n".join(
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(train.parent.glob(train.name))
        if p.is_file()
    )


def training_canaries(config: SafetyConfig, train: Path | None) -> list[str]:
    """The spec's canaries plus every ``canary_pattern`` match in the training data (deduplicated)."""
    found = list(config.canaries)
    if config.canary_pattern and train is not None and not str(train).startswith("s3:"):
        found += re.findall(config.canary_pattern, _training_text(Path(train)))
    return list(dict.fromkeys(c for c in found if isinstance(c, str) and c.strip()))[:MAX_CANARIES]


def _rate(values: Sequence[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def score_rows(
    prompts: Sequence[RedTeamPrompt],
    red_team: ModelAnswers,
    examples: Sequence[TestExample],
    quality: ModelAnswers | None,
    *,
    system_prompt: str | None,
    canaries: Sequence[str],
    config: SafetyConfig,
) -> tuple[dict[str, list[float]], list[str]]:
    """Per-row unsafe indicators of one model, and the ids of rows that leaked a canary."""
    per_metric: dict[str, list[float]] = {m: [] for m in SAFETY_METRICS}
    canary_rows: list[str] = []
    for item, answer in zip(prompts, red_team.answers, strict=True):
        values = unsafe_indicators(
            item, answer.response, system_prompt=system_prompt or "", pii_kinds=config.pii_kinds
        )
        for metric in SAFETY_METRICS:
            per_metric[metric].append(values[metric])
        if leaked_canaries(answer.response, canaries, item.prompt):
            canary_rows.append(item.id)
    for ex, answer in zip(examples, quality.answers if quality else (), strict=False):
        prompt = "\n".join(content for _, content in ex.messages)
        for metric in SAFETY_METRICS:
            leak = 1.0 if pii_leaks(answer.response, prompt, config.pii_kinds) else 0.0
            per_metric[metric].append(leak if metric == PII_LEAK else math.nan)
        if leaked_canaries(answer.response, canaries, prompt):
            canary_rows.append(f"test-{ex.index}")
    return per_metric, canary_rows


def summarise_safety(
    label: str,
    rows: dict[str, list[float]],
    row_ids: Sequence[str],
    canary_rows: Sequence[str],
    *,
    against: dict[str, list[float]] | None = None,
    unanswered: int = 0,
    boot: dict[str, float | int],
) -> SafetyScores:
    """Rates and failing rows of one model; with ``against`` (the candidate), paired intervals too."""
    failing = {
        m: tuple(i for i, v in zip(row_ids, vals, strict=True) if v == 1.0) for m, vals in rows.items()
    }
    differences: dict[str, Interval | None] = {}
    if against is not None:
        for metric, values in rows.items():
            differences[metric] = paired_bootstrap(
                against[metric],
                values,
                resamples=int(boot["resamples"]),
                confidence=float(boot["confidence"]),
                seed=int(boot["seed"]),
            )
    return SafetyScores(
        label, {m: _rate(v) for m, v in rows.items()}, failing, differences, tuple(canary_rows), unanswered
    )


def evaluate_safety(
    spec: Spec,
    settings: TuneopsSettings,
    candidate: ModelUnderTest,
    base: ModelUnderTest,
    examples: Sequence[TestExample],
    quality_answers: Sequence[ModelAnswers],
    *,
    show_progress: bool = False,
    azure_credential: Any = None,
) -> SafetyEvaluation:
    """Answer the red-team set with ``candidate`` and ``base`` and decide the safety section.

    ``azure_credential`` (a ``TokenCredential``) is used for ``evaluation.safety.azure``; None:
    the one ``safety.azure.credential_for`` picks.

    Raises:
        SpecError: a red-team file is missing or malformed.
        ProviderError: a model could not answer every red-team prompt.
    """
    config = spec.evaluation.safety or SafetyConfig()
    prompts = load_red_team(
        builtin=config.builtin,
        files=config.red_team_files,
        project_dir=settings.project_dir,
        categories=config.categories,
    )
    system_prompt = production_system_prompt(spec, examples)
    red_examples = as_examples(prompts, system_prompt)
    digest = red_team_digest(prompts, system_prompt)
    generation = GenerationSettings(max_tokens=config.max_tokens, temperature=0.0, seed=spec.finetune.seed)
    answers = {
        model.label: require_complete(
            generate_answers(
                model,
                red_examples,
                dataset_digest=digest,
                settings=generation,
                concurrency=spec.evaluation.concurrency,
                cache_dir=settings.state_home / "eval-cache" / "safety",
                show_progress=show_progress,
            )
        )
        for model in (candidate, base)
    }
    quality = {a.label: a for a in quality_answers}
    canaries = training_canaries(config, spec.data.train)
    row_ids = tuple(p.id for p in prompts) + tuple(f"test-{ex.index}" for ex in examples)
    rows, canary_rows = {}, {}
    for label in (candidate.label, base.label):
        rows[label], canary_rows[label] = score_rows(
            prompts,
            answers[label],
            examples,
            quality.get(label),
            system_prompt=system_prompt,
            canaries=canaries,
            config=config,
        )
        if quality.get(label) is None:  # keep the vectors the same length for the paired comparison
            for metric in SAFETY_METRICS:
                rows[label][metric] += [math.nan] * len(examples)
    metrics, ceilings, extra = _with_azure(config, prompts, answers, rows, len(examples), azure_credential)
    boot: dict[str, float | int] = {
        "resamples": spec.evaluation.bootstrap_resamples,
        "confidence": spec.evaluation.confidence,
        "seed": spec.finetune.seed,
    }
    cand = summarise_safety(
        candidate.label, rows[candidate.label], row_ids, canary_rows[candidate.label], boot=boot
    )
    base_scores = summarise_safety(
        base.label,
        rows[base.label],
        row_ids,
        canary_rows[base.label],
        against=rows[candidate.label],
        boot=boot,
    )
    decision = decide_safety(
        cand,
        base_scores,
        metrics=metrics,
        max_regression=config.max_regression,
        require_significant=config.require_significant,
        ceilings=ceilings,
        check_canaries=bool(canaries),
        extra=extra,
    )
    return SafetyEvaluation(
        tuple(prompts),
        answers,
        row_ids,
        rows,
        {cand.label: cand, base.label: base_scores},
        decision,
        system_prompt,
        len(canaries),
        ceilings=ceilings,
    )


def _with_azure(
    config: SafetyConfig,
    prompts: Sequence[RedTeamPrompt],
    answers: dict[str, ModelAnswers],
    rows: dict[str, dict[str, list[float]]],
    quality_rows: int,
    credential: Any,
) -> tuple[tuple[str, ...], dict[str, float], list[SafetyCheck]]:
    """Add Azure's verdicts to ``rows`` (red-team rows; NaN for quality rows); metrics, ceilings, checks."""
    ceilings: dict[str, float] = dict(config.ceilings)
    if config.azure is None:
        return SAFETY_METRICS, ceilings, []
    from tuneops.tasks.evaluation.safety.azure import (
        azure_indicators,
        completeness_checks,
        credential_for,
        metric_name,
    )

    found = azure_indicators(config.azure, prompts, answers, credential or credential_for(config.azure))
    for label, per_metric in found.items():
        for metric, values in per_metric.items():
            rows[label][metric] = [*values, *([math.nan] * quality_rows)]
    ceilings.update({metric_name(k): v for k, v in config.azure.ceilings.items()})
    azure_metrics = tuple(metric_name(e) for e in dict.fromkeys(config.azure.evaluators))
    return SAFETY_METRICS + azure_metrics, ceilings, completeness_checks(found, prompts)
