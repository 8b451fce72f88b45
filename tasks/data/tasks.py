"""Thin Prefect tasks of the data stage; the logic lives in ``version``."""

from __future__ import annotations

from typing import Any

from prefect import task

from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.catalog import store_for
from tuneops.tasks.data.store import TransientStoreError
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
