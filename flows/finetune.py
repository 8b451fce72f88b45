"""The ``finetune`` flow: just the fine-tune stage, from a spec (and optionally a dataset version).

Reads like the stage: get the dataset version → find the fine-tune to continue (``finetune.from``,
if any) → submit the job (exactly once) → wait for it, recording the run in MLflow. Re-running
after a crash or a success attaches to the same job.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.finetune.dataset import resolve_dataset
from tuneops.tasks.finetune.tasks import resolve_parent_model, submit_finetune, wait_for_finetune
from tuneops.tasks.finetune.types import FineTuneJob


@flow(name="finetune", validate_parameters=True)
def finetune(
    spec_path: str,
    dataset_ref: str | None = None,
    attempt: int = 1,
    poll_interval: float = 5.0,
) -> FineTuneJob:
    """Fine-tune the spec's model on a dataset version; returns the succeeded job.

    Args:
        spec_path: the project's ``tuneops.yaml``; settings come from its folder and environment.
        dataset_ref: ``NAME@DIGEST`` of an existing version; default: version the spec's data.
        attempt: raise it to submit a new job after the previous one for the same inputs failed.
        poll_interval: seconds between the first status polls (backs off to 30 s).
    """
    spec, project_dir = load_spec(Path(spec_path))
    settings = TuneopsSettings.load(project_dir)
    dataset = resolve_dataset(spec, settings, dataset_ref)
    parent = resolve_parent_model(spec, settings)  # finetune.from: continue that fine-tune
    job = submit_finetune(
        spec, settings, dataset, attempt=attempt, start_from=parent.model if parent else None
    )
    return wait_for_finetune(spec, settings, job, poll_interval=poll_interval, dataset=dataset)
