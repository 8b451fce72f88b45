"""Adapter for Azure OpenAI: the ``AzureOpenAI`` client plus deployment through the management API.

Azure differs from OpenAI in ways this module absorbs: requests carry ``api_version``; jobs wait
in ``pending`` and leave some fields null (normalised by ``job_from_sdk``); and a succeeded
fine-tune cannot be called until it is *deployed* with
``PUT .../Microsoft.CognitiveServices/accounts/{a}/deployments/{d}`` on the management plane,
authenticated with an Azure AD token (azure-identity). The deployment name is what inference
then uses as ``model``.

What is sent follows Microsoft's REST spec for the configured api-version (the data-plane
authoring spec, e.g. ``2025-04-01-preview``: ``FineTuningJobCreation``; the management-plane
``2024-10-01`` ``Deployment``), kept in ``tuneops/testing/reference/azure`` and enforced by the
validating stub: no ``metadata`` (not declared on job creation, not returned on the job, no
``metadata[...]`` list filter), so the idempotency key travels as a tag in ``suffix``;
hyperparameters at the top level (``SupervisedMethodRequest`` declares only ``type``); and
``trainingType`` only when the user sets ``provider.training_type``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import openai

from tuneops.errors import (
    FineTuneFailedError,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    SpecError,
    TransientProviderError,
)
from tuneops.spec import AzureOpenAIProviderConfig
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.tasks.finetune.rules import (
    PollPolicy,
    RetryPolicy,
    deployment_tags,
    is_managed_deployment,
    poll_interval,
    retry_delay,
    should_retry,
)
from tuneops.tasks.finetune.types import Deployment, FineTuneJob, FineTuneRequest, InferenceTarget

MANAGEMENT_API_VERSION = "2024-10-01"
"""Microsoft.CognitiveServices management API version used for deployments."""

METADATA_API_VERSIONS: frozenset[str] = frozenset()
"""Data-plane api-versions whose published spec declares job ``metadata`` (create, echo and list
filter). None that tuneops knows: ``2025-04-01-preview`` declares none of the three."""


def default_credential() -> Any:
    """azure-identity's ``DefaultAzureCredential`` (imported only when a deployment is made)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class AzureOpenAIProvider(OpenAICompatibleProvider):
    """Fine-tuning on Azure OpenAI; ``deploy`` makes the result callable.

    Args:
        config: the spec's ``provider`` section (endpoint, api_version, trainingType, account).
        api_key: the data-plane key (from settings).
        credential: anything with ``get_token(scope)`` for the management plane; default
            azure-identity's ``DefaultAzureCredential``. Tests pass a static token.
        deploy_poll: how often to check a deployment's ``provisioningState``.
    """

    def __init__(
        self,
        config: AzureOpenAIProviderConfig,
        *,
        api_key: str,
        timeout: float = 60.0,
        credential: Any | None = None,
        deploy_poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        client = openai.AzureOpenAI(
            azure_endpoint=config.endpoint,
            api_key=api_key,
            api_version=config.api_version,
            max_retries=0,
            timeout=timeout,
        )
        super().__init__(kind=config.kind, base_url=config.endpoint, api_key=api_key, client=client)
        self.config = config
        self._credential = credential
        self._deploy_poll = deploy_poll or PollPolicy(initial=5.0, max_interval=30.0, timeout=3600.0)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout)
        self.sends_metadata = config.api_version in METADATA_API_VERSIONS

    def close(self) -> None:
        super().close()
        self._http.close()

    def job_create_fields(self, request: FineTuneRequest) -> dict[str, Any]:
        """``FineTuningJobCreation``: hyperparameters at the top level, no ``method`` needed."""
        fields = super().job_create_fields(request)
        fields.pop("method", None)
        if request.hyperparameters:
            fields["hyperparameters"] = dict(request.hyperparameters)
        return fields

    def _job_create_extra(self) -> dict[str, Any]:
        # Not in Microsoft's REST spec (FineTuningJobCreation, 2025-04-01-preview); documented only
        # in the Azure OpenAI fine-tuning how-to ("Global training" / "Developer tier",
        # learn.microsoft.com/azure/ai-foundry/openai/how-to/fine-tuning), so sent only when set.
        if self.config.training_type is None:
            return {}
        return {"trainingType": self.config.training_type}

    # -- management plane ------------------------------------------------------------------
    def _deployments_url(self) -> str:
        config = self.config
        missing = [f for f in ("subscription_id", "resource_group", "account_name") if not getattr(config, f)]
        if missing:
            raise SpecError(
                f"provider.{missing[0]} is needed to deploy an Azure OpenAI fine-tune",
                hint="set provider.subscription_id, provider.resource_group and provider.account_name",
            )
        return (
            f"{config.management_endpoint.rstrip('/')}/subscriptions/{config.subscription_id}"
            f"/resourceGroups/{config.resource_group}/providers/Microsoft.CognitiveServices"
            f"/accounts/{config.account_name}/deployments"
        )

    def _deployment_url(self, name: str) -> str:
        return f"{self._deployments_url()}/{name}"

    def _token(self) -> str:
        scope = f"{self.config.management_endpoint.rstrip('/')}/.default"
        try:
            if self._credential is None:
                self._credential = default_credential()
            return str(self._credential.get_token(scope).token)
        except Exception as exc:  # azure-identity raises several unrelated types
            raise ProviderAuthError(
                f"could not get an Azure management token for {scope}: {type(exc).__name__}",
                hint="log in with 'az login' or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET",
            ) from exc

    def _call(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One management request, retried on transient errors (PUT, GET, DELETE are idempotent)."""
        attempt = 1
        while True:
            try:
                return self._call_once(method, url, body, params)
            except TransientProviderError as exc:
                if not should_retry(self._retry, attempt):
                    raise
                self._sleep(retry_delay(self._retry, attempt, exc.retry_after))
                attempt += 1

    def _call_once(
        self, method: str, url: str, body: dict[str, Any] | None, params: dict[str, str] | None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token()}"}
        query = params if params is not None else {"api-version": MANAGEMENT_API_VERSION}
        action = f"{method} deployment {url.rsplit('/', 1)[-1]}"
        try:
            response = self._http.request(method, url, params=query, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientProviderError(f"{action}: {type(exc).__name__}") from exc
        if response.status_code < 300:
            data = response.json() if response.content else None
            return dict(data) if isinstance(data, dict) else {}
        try:
            detail = response.json().get("error", {}).get("message", response.text)
        except ValueError:
            detail = response.text[:200]
        message = f"{action}: HTTP {response.status_code}: {detail}"
        if response.status_code in (401, 403):
            raise ProviderAuthError(message, status_code=response.status_code)
        if response.status_code in (408, 409, 429) or response.status_code >= 500:
            retry_after = response.headers.get("retry-after")
            raise TransientProviderError(
                message,
                status_code=response.status_code,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        raise ProviderRejectedError(message, status_code=response.status_code)

    def deploy(self, job: FineTuneJob, name: str, *, model_name: str | None = None) -> FineTuneJob:
        """PUT the deployment (idempotent by name) and wait until it is provisioned.

        The deployment is tagged as tuneops' own (``rules.deployment_tags``): only tagged
        deployments are ever listed as tuneops' or deleted.
        """
        if not job.fine_tuned_model:
            raise ProviderError(f"job {job.id} has no fine-tuned model to deploy (status {job.status})")
        url = self._deployment_url(name)
        body = {
            "sku": {"name": self.config.deployment_sku, "capacity": self.config.deployment_capacity},
            "tags": deployment_tags(model_name or name, job.id),
            "properties": {"model": {"format": "OpenAI", "name": job.fine_tuned_model, "version": "1"}},
        }
        state = self._call("PUT", url, body).get("properties", {}).get("provisioningState")
        started, polls = time.monotonic(), 0
        while state not in ("Succeeded", "Failed", "Canceled"):
            timeout = self._deploy_poll.timeout
            if timeout is not None and time.monotonic() - started > timeout:
                raise ProviderError(
                    f"deployment {name} still {state} after {timeout:.0f} s",
                    hint="re-run to keep waiting; the PUT is idempotent",
                )
            self._sleep(poll_interval(self._deploy_poll, polls))
            polls += 1
            state = self._call("GET", url).get("properties", {}).get("provisioningState")
        if state != "Succeeded":
            raise FineTuneFailedError(
                f"deploying {job.fine_tuned_model} as {name} ended {state}",
                hint="check the Azure portal for the deployment's error and quota",
            )
        return dataclasses.replace(job, deployment=name)

    def list_deployments(self) -> list[Deployment]:
        """Every deployment on the account (all pages, following ``nextLink``)."""
        found: list[Deployment] = []
        url: str | None = self._deployments_url()
        params: dict[str, str] | None = None
        while url:
            page = self._call("GET", url, params=params)
            found.extend(_deployment(raw) for raw in page.get("value") or [])
            next_link = page.get("nextLink")
            if not next_link:
                break
            parsed = httpx.URL(str(next_link))  # it carries its own api-version and skip token
            url, params = str(parsed.copy_with(query=None)), dict(parsed.params)
        return found

    def delete_deployment(self, name: str, *, model_name: str) -> bool:
        """Delete a deployment tuneops made for ``model_name``; False when it is already gone.

        Raises ProviderRejectedError, touching nothing, when the deployment is not tagged as
        tuneops' own for that model: tuneops never deletes what it did not create.
        """
        url = self._deployment_url(name)
        try:
            current = _deployment(self._call("GET", url))
        except ProviderRejectedError as exc:
            if exc.status_code == 404:
                return False
            raise
        if not is_managed_deployment(current, model_name):
            raise ProviderRejectedError(
                f"deployment {name} was not created by tuneops for {model_name}; not deleting it",
                hint="delete it in the Azure portal if it is really unused",
            )
        try:
            self._call("DELETE", url)
        except ProviderRejectedError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def inference_target(self, job: FineTuneJob) -> InferenceTarget:
        """Azure inference calls the *deployment* by name, with the data-plane api_version."""
        if not job.deployment:
            raise ProviderRejectedError(f"job {job.id} is not deployed yet; Azure can only call deployments")
        return InferenceTarget(
            provider=self.kind,
            base_url=self.config.endpoint,
            model=job.deployment,
            api_version=self.config.api_version,
        )


def _deployment(raw: dict[str, Any]) -> Deployment:
    """Our Deployment from the management API's ``Deployment`` resource."""
    properties = raw.get("properties") or {}
    sku = raw.get("sku") or {}
    created = (raw.get("systemData") or {}).get("createdAt")
    stamp = None
    if isinstance(created, str):
        try:
            stamp = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        except ValueError:
            stamp = None
    return Deployment(
        name=str(raw.get("name") or str(raw.get("id", "")).rsplit("/", 1)[-1]),
        model=(properties.get("model") or {}).get("name"),
        provisioning_state=properties.get("provisioningState"),
        sku=sku.get("name"),
        capacity=sku.get("capacity"),
        tags={str(k): str(v) for k, v in (raw.get("tags") or {}).items()},
        created_at=stamp,
    )
