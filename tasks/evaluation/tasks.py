"""Thin Prefect tasks of the evaluation stage: the public API the ``retrain`` flow calls.

``evaluate_candidate`` does the work (see ``pipeline``); the task adds what belongs to Prefect:
a markdown artifact with the side-by-side table, and the gate-failed event (``events.GATE_FAILED``)
when the gate rejects the candidate. No Prefect retries: generation retries per row inside, and a
re-run reuses the cached answers. A failed gate is a returned result, never a failed task.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tuneops import events
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.evaluation.pipeline import EvaluationResult, evaluate_candidate
from tuneops.tasks.evaluation.types import ModelUnderTest
from tuneops.tasks.finetune.checkpoints import TrainingReport


def publish_evaluation(spec: Spec, result: EvaluationResult) -> None:
    """Markdown artifact of the comparison; the gate-failed event when it failed."""
    key = re.sub(r"[^a-z0-9-]", "-", f"evaluation-{spec.model.name}".lower())
    create_markdown_artifact(result.markdown, key=key, description=result.decision.summary()[:500])
    if not result.passed:
        events.emit(
            events.GATE_FAILED,
            spec.model.name,
            result.decision.summary(),
            candidate=result.summaries[result.decision.candidate].model,
            reasons=list(result.decision.reasons),
            mlflow_run_id=result.mlflow_run_id,
            dataset_digest=result.dataset_digest,
        )


@task(name="evaluate-candidate", cache_policy=NO_CACHE, retries=0)
def evaluate_candidate_task(
    spec: Spec,
    settings: TuneopsSettings,
    test_split: Path,
    candidate: ModelUnderTest | tuple[ModelUnderTest, ...],
    base: ModelUnderTest,
    champion: ModelUnderTest | None = None,
    dataset_digest: str | None = None,
    few_shot_source: Path | None = None,
    extra_tags: dict[str, str] | None = None,
    show_progress: bool = False,
    training: TrainingReport | None = None,
) -> EvaluationResult:
    """Evaluate and gate ``candidate`` (see ``pipeline.evaluate_candidate``); publish the result."""
    result = evaluate_candidate(
        spec, settings, test_split, candidate, base, champion, dataset_digest,
        few_shot_source=few_shot_source, show_progress=show_progress, extra_tags=extra_tags,
        training=training,
    )  # fmt: skip
    publish_evaluation(spec, result)
    return result
