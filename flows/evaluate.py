"""The ``evaluate`` flow: only the evaluation stage, for a candidate model id and a test split.

Reads like the stage: find the test split → evaluate the candidate against the base model (and
the champion, when its endpoint model id is given) → the gate's decision, returned as a result.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.evaluation.pipeline import (
    BASE_LABEL,
    CANDIDATE_LABEL,
    CHAMPION_LABEL,
    EvaluationResult,
    model_under_test,
)
from tuneops.tasks.evaluation.sources import resolve_test_split
from tuneops.tasks.evaluation.tasks import evaluate_candidate_task


@flow(name="evaluate", validate_parameters=True)
def evaluate(
    spec_path: str,
    candidate_model: str,
    dataset_ref: str | None = None,
    test_file: str | None = None,
    champion_model: str | None = None,
    show_progress: bool = False,
) -> EvaluationResult:
    """Evaluate ``candidate_model`` on the spec's provider; returns the result with the decision.

    Args:
        spec_path: the project's ``tuneops.yaml``; settings come from its folder and environment.
        candidate_model: the fine-tune's endpoint model id (``ft:...``).
        dataset_ref: ``NAME@DIGEST`` of a dataset version whose test split is used.
        test_file: a local JSONL test file instead (default: the spec's ``data.test``).
        champion_model: the current champion's endpoint model id, when there is one.
        show_progress: draw progress bars (the CLI does; deployments do not).
    """
    spec, project_dir = load_spec(Path(spec_path))
    settings = TuneopsSettings.load(project_dir)
    split = resolve_test_split(spec, settings, dataset_ref, Path(test_file) if test_file else None)
    champion = model_under_test(spec, settings, CHAMPION_LABEL, champion_model) if champion_model else None
    return evaluate_candidate_task(
        spec,
        settings,
        split.path,
        model_under_test(spec, settings, CANDIDATE_LABEL, candidate_model),
        model_under_test(spec, settings, BASE_LABEL, spec.model.base_model),
        champion,
        split.digest,
        split.train_path,
        show_progress=show_progress,
    )
