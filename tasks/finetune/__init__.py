"""The fine-tune stage: get a fine-tuned model out of a provider, exactly once, observably.

Public API (imported lazily, so ``tuneops.tasks.finetune.rules`` stays free of SDK imports):

- ``submit_finetune(spec, settings, dataset, attempt=1) -> FineTuneJob`` (Prefect task): the one
  job for this spec and dataset version, found again by its idempotency key or created once.
- ``wait_for_finetune(spec, settings, job, run_id=None, poll_interval=5.0, dataset=None)
  -> FineTuneJob`` (Prefect task): follows the job to success, logs loss curves, tokens, cost and
  a loss-curve PNG to MLflow, deploys it where the provider needs that (Azure); raises
  ``FineTuneFailedError`` with the provider's reason on failed/cancelled.
- ``inference_target(spec, settings, job) -> InferenceTarget``: base_url, model id (the Azure
  deployment name on Azure) and api_version, for evaluation and the gateway.
- ``retire_deployments(spec, settings, keep=None) -> RetirementReport`` (Prefect task): deletes
  the Azure deployments tuneops made whose version failed the gate or has held no alias for the
  grace period (``lifecycle``); never one tuneops did not create.
- ``provider_for(config, settings) -> FineTuneProvider`` and the types in ``types``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "submit_finetune": "tuneops.tasks.finetune.tasks",
    "wait_for_finetune": "tuneops.tasks.finetune.tasks",
    "inference_target": "tuneops.tasks.finetune.tasks",
    "retire_deployments": "tuneops.tasks.finetune.tasks",
    "retire_deployments_for": "tuneops.tasks.finetune.tasks",
    "submit_job_for": "tuneops.tasks.finetune.tasks",
    "wait_for_job": "tuneops.tasks.finetune.tasks",
    "provider_for": "tuneops.tasks.finetune.provider",
    "FineTuneProvider": "tuneops.tasks.finetune.provider",
    "FineTuneJob": "tuneops.tasks.finetune.types",
    "FineTuneRequest": "tuneops.tasks.finetune.types",
    "InferenceTarget": "tuneops.tasks.finetune.types",
    "JobStatus": "tuneops.tasks.finetune.types",
    "TrainingEvent": "tuneops.tasks.finetune.types",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
