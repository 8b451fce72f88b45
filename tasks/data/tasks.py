"""Thin Prefect tasks of the data stage: version, and the review loop's three steps.

``synthesize_examples`` and ``harvest_served_requests`` fill review queues; ``export_accepted`` writes a
queue's accepted rows (and their provenance sidecar) to the file the spec names, which
``data.train`` (a folder or glob) includes, so the next ``version_dataset`` versions them with
per-row provenance. A person reviews in between (``tuneops data review``); a retrain flow calls
``export_accepted`` before ``version_dataset`` to pick up whatever was accepted since. The logic
lives in ``version``, ``synthesize``, ``harvest`` and ``review``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.catalog import store_for
from tuneops.tasks.data.harvest import HarvestReport, harvest
from tuneops.tasks.data.review import ReviewQueue, export_reviewed
from tuneops.tasks.data.store import TransientStoreError
from tuneops.tasks.data.synthesize import SynthesisReport, synthesize_from_spec
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.data.version import version_from_spec


def _transient_store_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the store failed transiently; invalid data never heals by retrying."""
    try:
        state.result()
    except TransientStoreError:
        return True
    except Exception:
        return False
    return False


@task(
    name="version-dataset",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=_transient_store_error,
)
def version_dataset(spec: Spec, settings: TuneopsSettings) -> DatasetVersion:
    """Validate, split and commit the spec's data to the settings' data store (idempotent)."""
    return version_from_spec(
        spec, store=store_for(settings), home=settings.state_home, s3_endpoint_url=settings.s3_endpoint_url
    )


@task(name="synthesize-examples")
def synthesize_examples(
    spec: Spec, settings: TuneopsSettings, count: int = 20, seeds: int = 10
) -> SynthesisReport:
    """Ask the spec's teacher for ``count`` candidates from ``seeds`` training rows; queue them for review.

    No task retries: the teacher client retries transient errors itself, and a re-run only
    queues candidates not queued yet.
    """
    return synthesize_from_spec(spec, settings, count=count, seeds=seeds)


@task(name="harvest-requests")
def harvest_served_requests(spec: Spec, settings: TuneopsSettings, model: str | None = None) -> HarvestReport:
    """Queue the model's served requests with good feedback (captured, format-checked, redacted)."""
    config = spec.data.harvest
    return harvest(
        str(settings.state_db_url),
        model or spec.model.name,
        config,
        ReviewQueue.named(settings.state_home, config.queue),
        system_prompt=spec.data.system_prompt.text,
    )


@task(name="export-accepted")
def export_accepted(spec: Spec, settings: TuneopsSettings, queue: str = "synthetic") -> Path:
    """Write ``queue``'s accepted rows and provenance sidecar to its output file; return the file.

    Rewritten whole from the queue's journals (idempotent); the output is ``data.synthesize.output``
    or ``data.harvest.output`` for those queues, else ``data/reviewed/<queue>.jsonl``, relative to
    the project.
    """
    output = Path("data/reviewed") / f"{queue}.jsonl"
    for config in (spec.data.synthesize, spec.data.harvest):
        if config.queue == queue:
            output = config.output
    target = output if output.is_absolute() else settings.project_dir / output
    export_reviewed(ReviewQueue.named(settings.state_home, queue), target)
    return target
