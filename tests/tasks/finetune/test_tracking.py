"""The fine-tune run in a real MLflow store: found again by job id, its splits as lineage inputs."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tuneops.tasks.data.tracking import links_from_version
from tuneops.tasks.finetune.rules import RetryPolicy
from tuneops.tasks.finetune.tasks import submit_job_for
from tuneops.tasks.finetune.tracking import FineTuneTracker, open_job_run

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def test_the_job_run_is_opened_once_with_the_splits_as_inputs(
    stub, make_spec, settings, dataset, provider
) -> None:
    spec = make_spec()
    job = submit_job_for(spec, settings, dataset, provider=provider, retry=FAST)
    links = links_from_version(dataset)
    first = open_job_run(
        settings, spec.model.name, job, dataset_ref=dataset.ref, datasets=links, manifest=dataset.manifest
    )
    again = open_job_run(
        settings, spec.model.name, job, dataset_ref=dataset.ref, datasets=links, manifest=dataset.manifest
    )
    assert again == first

    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(first)
    assert run.info.run_name == f"finetune-{job.id}"
    assert run.data.tags["tuneops.job_id"] == job.id and run.data.tags["tuneops.kind"] == "finetune"
    assert run.data.tags["tuneops.dataset"] == dataset.ref
    contexts = sorted(
        next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in run.inputs.dataset_inputs
    )
    assert contexts == sorted(dataset.splits)  # logged once, not once per open
    assert [a.path for a in client.list_artifacts(first, f"datasets/{dataset.name}")] == [
        f"datasets/{dataset.name}/manifest.json"
    ]
    tracker = FineTuneTracker.open(settings, spec.model.name, first)
    assert tracker.run_id == first and tracker.last_step == -1
