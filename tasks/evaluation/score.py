"""Score answers with azure-ai-evaluation's ``evaluate()``: offline metrics, format, refusal, judges.

One ``evaluate()`` call scores every row of every model (its per-call overhead is large, its
per-row cost small). BLEU, GLEU and METEOR run only when their NLTK data is present (built locally
by ``nltk_data.ensure_nltk_data``); otherwise they are skipped with a warning, never downloaded.
LLM judges run when the spec configures a judge endpoint (any OpenAI-compatible server); the
endpoint is probed once first (``require_judge``), because azure-ai-evaluation retries a judge
that times out or answers 5xx for minutes per row.
No ``azure_ai_project`` is passed, so nothing leaves the machine except calls to the judge.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.errors import ProviderError, SpecError, TransientProviderError
from tuneops.tasks.evaluation.formats import FormatComplianceEvaluator, RefusalEvaluator
from tuneops.tasks.evaluation.nltk_data import NLTK_EVALUATOR_NEEDS, ensure_nltk_data
from tuneops.tasks.evaluation.types import ModelAnswers, TestExample

log = logging.getLogger(__name__)

OFFLINE_METRICS = ("f1", "rouge", "bleu", "gleu", "meteor")
NLTK_METRICS = frozenset({"bleu", "gleu", "meteor"})
CUSTOM_METRICS = ("format", "refusal")
JUDGE_METRICS = ("relevance", "coherence", "fluency", "groundedness")
_RESULT_KEYS = {"f1": "f1_score"}
JUDGE_PROBE_TIMEOUT_S = 3.0  # one GET of the judge's /models; a judge that is up answers in milliseconds


@dataclass(frozen=True)
class JudgeEndpoint:
    """An OpenAI-compatible endpoint for LLM-judge evaluators."""

    base_url: str
    model: str
    api_key: str
    evaluators: tuple[str, ...] = ("relevance", "coherence", "fluency")


@dataclass(frozen=True)
class RowScores:
    """Per-row scores per model: ``scores[label][metric][i]`` for row ``i`` (NaN = unscored)."""

    scores: dict[str, dict[str, list[float]]]
    metrics: tuple[str, ...]
    skipped: dict[str, str]
    reasons: dict[str, list[str]]

    def for_model(self, label: str) -> dict[str, list[float]]:
        return self.scores[label]


KNOWN_METRICS = (*OFFLINE_METRICS, *CUSTOM_METRICS, *JUDGE_METRICS)


def check_metrics(metrics: Sequence[str], gated: Sequence[str] = ()) -> None:
    """Fail fast, before any model is called, on metric names no evaluator produces.

    Raises:
        SpecError: an unknown metric in ``evaluation.metrics``, or a gate on a metric that is
            not computed (it would fail as "missing" only after every answer was generated).
    """
    for i, metric in enumerate(metrics):
        if metric not in KNOWN_METRICS:
            raise SpecError(
                f"evaluation.metrics[{i}]: unknown metric {metric!r}", hint=f"use {', '.join(KNOWN_METRICS)}"
            )
    for i, metric in enumerate(gated):
        if metric not in metrics:
            raise SpecError(
                f"evaluation.gates[{i}].metric: {metric!r} is not computed",
                hint=f"add it to evaluation.metrics (now {', '.join(metrics) or 'empty'})",
            )


def _build_evaluators(
    metrics: Sequence[str],
    nltk_available: set[str],
    format_evaluator: FormatComplianceEvaluator | None,
    judge: JudgeEndpoint | None,
) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    from azure.ai.evaluation import (
        BleuScoreEvaluator,
        F1ScoreEvaluator,
        GleuScoreEvaluator,
        MeteorScoreEvaluator,
        RougeScoreEvaluator,
        RougeType,
    )

    factories: dict[str, Callable[[], Callable[..., Any]]] = {
        "f1": F1ScoreEvaluator,
        "rouge": lambda: RougeScoreEvaluator(rouge_type=RougeType.ROUGE_L),
        "bleu": BleuScoreEvaluator,
        "gleu": GleuScoreEvaluator,
        "meteor": MeteorScoreEvaluator,
        "format": lambda: format_evaluator or FormatComplianceEvaluator(),
        "refusal": RefusalEvaluator,
    }
    evaluators: dict[str, Callable[..., Any]] = {}
    skipped: dict[str, str] = {}
    missing_nltk = NLTK_EVALUATOR_NEEDS - nltk_available
    for metric in metrics:
        if metric in JUDGE_METRICS:
            continue
        if metric not in factories:
            raise SpecError(
                f"evaluation.metrics: unknown metric {metric!r}", hint=f"use {', '.join(KNOWN_METRICS)}"
            )
        if metric in NLTK_METRICS and missing_nltk:
            skipped[metric] = f"NLTK data missing: {', '.join(sorted(missing_nltk))}"
            log.warning(
                "skipping %s: NLTK data missing (%s); see tuneops setup", metric, sorted(missing_nltk)
            )
            continue
        evaluators[metric] = factories[metric]()
    if judge is not None:
        evaluators.update(_judge_evaluators(judge))
    for metric in metrics:
        if metric in JUDGE_METRICS and metric not in evaluators:
            skipped[metric] = "no judge endpoint configured (evaluation.judge)"
    return evaluators, skipped


def require_judge(judge: JudgeEndpoint, *, timeout: float = JUDGE_PROBE_TIMEOUT_S) -> None:
    """Fail in seconds when the judge endpoint is down, before any row is sent to it.

    One ``GET {base_url}/models``, no retry, ``timeout`` per connect and read. Any answer below
    500 (a 404 from a server without ``/models`` included) counts as up: the judge calls then
    report their own errors. Refused or timed-out connections and 5xx answers count as down:
    azure-ai-evaluation would otherwise send every row and retry each for minutes.

    Raises:
        TransientProviderError: "judge endpoint unreachable (<base_url>): <why>".
    """
    import openai

    client = openai.OpenAI(base_url=judge.base_url, api_key=judge.api_key, max_retries=0, timeout=timeout)
    try:
        with client:
            client.models.list()
    except openai.APITimeoutError as exc:
        why = f"no answer within {timeout:g} s"
        raise TransientProviderError(f"judge endpoint unreachable ({judge.base_url}): {why}") from exc
    except openai.APIConnectionError as exc:
        why = str(exc.__cause__ or exc) or type(exc).__name__
        raise TransientProviderError(f"judge endpoint unreachable ({judge.base_url}): {why}") from exc
    except openai.APIStatusError as exc:
        if exc.status_code >= 500:
            why = f"HTTP {exc.status_code}"
            raise TransientProviderError(
                f"judge endpoint unreachable ({judge.base_url}): {why}", status_code=exc.status_code
            ) from exc


def _judge_evaluators(judge: JudgeEndpoint) -> dict[str, Callable[..., Any]]:
    from azure.ai.evaluation import (
        CoherenceEvaluator,
        FluencyEvaluator,
        GroundednessEvaluator,
        OpenAIModelConfiguration,
        RelevanceEvaluator,
    )

    config = OpenAIModelConfiguration(
        type="openai", base_url=judge.base_url, api_key=judge.api_key, model=judge.model
    )
    classes = {
        "relevance": RelevanceEvaluator,
        "coherence": CoherenceEvaluator,
        "fluency": FluencyEvaluator,
        "groundedness": GroundednessEvaluator,
    }
    return {name: classes[name](model_config=config) for name in judge.evaluators}


@contextlib.contextmanager
def _nltk_data_on_path(directory: Path, verified: bool) -> Iterator[None]:
    """Put our NLTK folder first on NLTK's path; skip azure's per-row data check once verified.

    azure-ai-evaluation checks (and may download) its NLTK data on every row; that check is
    ~70% of BLEU's time. With every resource verified present, it is a no-op for this call only.
    """
    import nltk
    from azure.ai.evaluation._common import utils as azure_utils

    original_check = azure_utils.ensure_nltk_data_downloaded
    nltk.data.path.insert(0, str(directory))
    if verified:
        azure_utils.ensure_nltk_data_downloaded = lambda: None
    try:
        yield
    finally:
        azure_utils.ensure_nltk_data_downloaded = original_check
        with contextlib.suppress(ValueError):
            nltk.data.path.remove(str(directory))


def score_answers(
    examples: Sequence[TestExample],
    answers: Sequence[ModelAnswers],
    *,
    metrics: Sequence[str],
    nltk_dir: Path,
    format_evaluator: FormatComplianceEvaluator | None = None,
    judge: JudgeEndpoint | None = None,
) -> RowScores:
    """Score every model's answers against the references, row by row.

    Args:
        examples: the test rows (references).
        answers: each model's complete answers (see ``generate.require_complete``).
        metrics: metric names from the spec (``f1``, ``rouge``, ``bleu``, ``format``, ...).
        nltk_dir: NLTK data folder, filled from local sources if needed.
        format_evaluator: the spec's format rules.
        judge: LLM-judge endpoint, when configured.

    Raises:
        SpecError: an unknown metric name.
        TransientProviderError: the judge endpoint is down (``require_judge``).
        ProviderError: the evaluators failed altogether.
    """
    if judge is not None and judge.evaluators:
        require_judge(judge)
    available = ensure_nltk_data(nltk_dir) if set(metrics) & NLTK_METRICS else set()
    verified = available >= NLTK_EVALUATOR_NEEDS
    # METEOR checks its NLTK data when constructed: build the evaluators with our data on the path.
    with _nltk_data_on_path(nltk_dir, verified):
        evaluators, skipped = _build_evaluators(metrics, available, format_evaluator, judge)
        scored = tuple(evaluators)
        scores: dict[str, dict[str, list[float]]] = {
            a.label: {m: [math.nan] * len(examples) for m in scored} for a in answers
        }
        reasons: dict[str, list[str]] = {a.label: [""] * len(examples) for a in answers}
        if not evaluators:
            return RowScores(scores, scored, skipped, reasons)
        with tempfile.TemporaryDirectory(prefix="tuneops-eval-") as tmp:
            data = Path(tmp) / "rows.jsonl"
            _write_rows(data, examples, answers)
            result = _run_evaluate(data, evaluators)
    for row in result["rows"]:
        label, i = row["inputs.label"], int(row["inputs.row"])
        for metric in scored:
            value = row.get(f"outputs.{metric}.{_RESULT_KEYS.get(metric, metric)}")
            scores[label][metric][i] = _as_float(value)
        reasons[label][i] = str(row.get("outputs.format.format_reason") or "")
    return RowScores(scores, scored, skipped, reasons)


def _write_rows(path: Path, examples: Sequence[TestExample], answers: Sequence[ModelAnswers]) -> None:
    """One JSONL row per (model, example): the columns evaluate() maps to evaluator arguments."""
    position = {ex.index: i for i, ex in enumerate(examples)}
    with path.open("w", encoding="utf-8") as handle:
        for model_answers in answers:
            for answer in model_answers.answers:
                ex = examples[position[answer.index]]
                row = {
                    "label": model_answers.label,
                    "row": position[answer.index],
                    "query": ex.query or " ",
                    "context": ex.context or " ",
                    "response": answer.response or "",
                    "ground_truth": ex.reference,
                }
                handle.write(json.dumps(row) + "\n")


def _as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


# Loggers of azure-ai-evaluation's batch engine: a progress line per row and a warning per custom
# evaluator ("Aggregated metrics ... not a dictionary"); our own progress and summary replace them.
_CHATTY_LOGGERS = ("run", "azure.ai.evaluation")


@contextlib.contextmanager
def _quiet_loggers(names: Sequence[str]) -> Iterator[None]:
    # The batch engine's progress logger is not in logging's registry: it is a module attribute.
    from azure.ai.evaluation._legacy._common._logging import bulk_logger

    loggers = [logging.getLogger(name) for name in names] + [bulk_logger]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _run_evaluate(data: Path, evaluators: dict[str, Any]) -> dict[str, Any]:
    from azure.ai.evaluation import evaluate
    from azure.ai.evaluation._exceptions import EvaluationException

    chatter = io.StringIO()  # evaluate() prints a run summary per evaluator to stdout
    try:
        with contextlib.redirect_stdout(chatter), _quiet_loggers(_CHATTY_LOGGERS):
            result = evaluate(data=str(data), evaluators=evaluators, fail_on_evaluator_errors=False)
    except EvaluationException as exc:
        raise ProviderError(f"scoring failed: {exc}") from exc
    return dict(result)
