"""Thin Prefect tasks over the registry: what the ``retrain`` flow calls.

All are safe to retry and to re-run after a crash: registration looks the job up first, a
promotion to where the alias already is changes nothing, and the look-ups change nothing. The
writers retry only on failures that may be transient (MLflow or the state database unreachable),
never on a refusal or a missing version.
Arguments are plain strings and our frozen dataclasses, so Prefect can hash them for caching.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops import events
from tuneops.errors import RegistryError, UserError, VersionNotFoundError
from tuneops.registry.conventions import CHALLENGER, GATE_PASSED
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote
from tuneops.registry.register import register_model
from tuneops.registry.types import PromotionResult, RegisteredVersion, RegistrationRequest


def _transient_only(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry MLflow/state-DB failures; a refusal or a missing version will not heal by waiting."""
    try:
        state.result(raise_on_failure=True)
    except (UserError, VersionNotFoundError):
        return False
    except RegistryError:
        return True
    except Exception:
        return False
    return False


@task(name="register-model", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient_only)
def register_model_task(
    request: RegistrationRequest, tracking_uri: str, artifact_root: str | None = None
) -> RegisteredVersion:
    """Register one fine-tune as a model version (one version per job, however often it runs)."""
    return register_model(request, RegistryStore(tracking_uri, artifact_root))


@task(name="find-registered-version", cache_policy=NO_CACHE)
def find_registered_version(
    model_name: str, job_id: str, *, tracking_uri: str, artifact_root: str | None = None
) -> RegisteredVersion | None:
    """The version an earlier run registered for fine-tune ``job_id``, if any."""
    return RegistryStore(tracking_uri, artifact_root).find_version_by_job(model_name, job_id)


@task(name="challenger-still-owed", cache_policy=NO_CACHE)
def challenger_still_owed(version: RegisteredVersion, *, state_db_url: str) -> bool:
    """True when ``version`` passed its gate but ``challenger`` never pointed at it.

    That is a run killed between registering and moving the alias: the re-run owes the move. A
    version the ledger shows as challenger once is left alone, whatever people did with it since.
    """
    if version.gate != GATE_PASSED:
        return False
    ledger = Ledger.open(state_db_url)
    try:
        history = ledger.history(version.model_name, CHALLENGER)
    finally:
        ledger.close()
    return all(entry.to_version != version.version for entry in history)


@task(name="set-challenger", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient_only)
def set_challenger_task(
    model_name: str,
    version: str,
    *,
    tracking_uri: str,
    state_db_url: str,
    reason: str = "quality gate passed",
    actor: str | None = None,
) -> PromotionResult:
    """Point ``challenger`` at a freshly registered version and record it in the ledger (source "flow").

    When the alias really moved, emits ``tuneops.model.registered`` (version in the payload) so a
    ``rollout`` deployment's trigger can take the challenger on; a re-run that moves nothing emits
    nothing, so one challenger starts one rollout.
    """
    ledger = Ledger.open(state_db_url)
    try:
        result = promote(
            RegistryStore(tracking_uri),
            ledger,
            model_name,
            version,
            CHALLENGER,
            reason=reason,
            actor=actor,
            source="flow",
        )
    finally:
        ledger.close()
    if result.changed:
        events.emit(
            events.MODEL_REGISTERED, model_name, f"version {version} is the challenger: {reason}",
            version=str(version),
        )  # fmt: skip
    return result
