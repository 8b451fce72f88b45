"""A local server speaking the documented Azure OpenAI shapes, for protocol tests of the Azure adapter.

This is a *protocol* stub, not Azure: it answers what Azure OpenAI documents for fine-tuning, so
the adapter is tested at the HTTP boundary without a subscription.

Data plane (``{endpoint}/openai/...``): every request needs the ``api-version`` query parameter
and the ``api-key`` header; ``/openai/files`` and ``/openai/fine_tuning/jobs`` as in OpenAI's
protocol, except that job creation needs ``trainingType``, jobs wait in ``pending`` (not
``queued``), and several fields come back null (``organization_id``, ``seed``,
``estimated_finish``, ``result_files``).

Management plane: ``PUT``/``GET /subscriptions/{s}/resourceGroups/{rg}/providers/
Microsoft.CognitiveServices/accounts/{a}/deployments/{d}?api-version=...`` with a bearer token;
a new deployment reports ``provisioningState: Creating`` and turns ``Succeeded`` after a few GETs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneops.serving.openai_wire import error_body
from tuneops.testing.openai_stub import OpenAIStubServer

_DEPLOYMENT = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.CognitiveServices/accounts/(?P<account>[^/]+)/deployments/(?P<name>[^/]+)$"
)


class AzureOpenAIStubServer(OpenAIStubServer):
    """Azure OpenAI's data plane under ``/openai`` plus the deployments management API.

    Args:
        api_key: the ``api-key`` header value the data plane expects.
        bearer_token: the management-plane token expected in ``Authorization: Bearer``.
        creating_polls: GETs a deployment stays ``Creating`` before ``Succeeded``.
        fail_deployments: deployments end ``Failed`` instead.
    """

    path_prefix = "/openai"
    queued_status = "pending"

    def __init__(
        self,
        api_key: str = "azure-test-key",
        *,
        bearer_token: str = "mgmt-test-token",
        creating_polls: int = 2,
        fail_deployments: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=api_key, **kwargs)
        self.bearer_token = bearer_token
        self.creating_polls = creating_polls
        self.fail_deployments = fail_deployments
        self.deployments: dict[str, dict[str, Any]] = {}
        self.api_versions: set[str] = set()
        self._deployment_polls: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        """What to give ``AzureOpenAI(azure_endpoint=...)`` and the spec's ``provider.endpoint``."""
        return self.root_url

    def _authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        return bool(headers.get("api-key", "") == self.api_key)

    def _check_request(self, headers: Any, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]] | None:
        if "api-version" not in query:
            return 404, error_body("Resource not found", code="404")
        self.api_versions.add(query["api-version"][0])
        if not self._authorized(headers, query):
            return 401, error_body(
                "Access denied due to invalid subscription key or wrong API endpoint.", code="401"
            )
        return None

    def _validate_create(self, payload: dict[str, Any]) -> str | None:
        if payload.get("trainingType") not in {"Standard", "Global", "Developer", "GlobalStandard"}:
            return "trainingType is required (Standard, Global or Developer)"
        return super()._validate_create(payload)

    def _new_job(self, body: dict[str, Any]) -> dict[str, Any]:
        job = super()._new_job(body)
        job.update(
            organization_id=None,
            seed=None,
            estimated_finish=None,
            result_files=None,
            trainingType=body.get("trainingType"),
            integrations=None,
        )
        return job

    def handle_outside(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]] | None:
        match = _DEPLOYMENT.match(path)
        if match is None:
            return None
        if "api-version" not in query:
            return (
                400,
                {
                    "error": {
                        "code": "MissingApiVersionParameter",
                        "message": "The api-version query parameter (?api-version=) is required.",
                    }
                },
                {},
            )
        if headers.get("Authorization", "") != f"Bearer {self.bearer_token}":
            return (
                401,
                {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}},
                {},
            )
        name = match.group("name")
        self.state.requests.append((method, path))
        if method == "PUT":
            return self._put_deployment(path, name, json.loads(body or b"{}"))
        if method == "GET":
            deployment = self.deployments.get(name)
            if deployment is None:
                return (
                    404,
                    {"error": {"code": "DeploymentNotFound", "message": f"Deployment {name} not found."}},
                    {},
                )
            polls = self._deployment_polls[name] = self._deployment_polls.get(name, 0) + 1
            if deployment["properties"]["provisioningState"] == "Creating" and polls >= self.creating_polls:
                deployment["properties"]["provisioningState"] = (
                    "Failed" if self.fail_deployments else "Succeeded"
                )
            return 200, deployment, {}
        return 405, {"error": {"code": "MethodNotAllowed", "message": method}}, {}

    def _put_deployment(self, path: str, name: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        model = ((body.get("properties") or {}).get("model")) or {}
        succeeded = {j["fine_tuned_model"] for j in self.state.jobs.values() if j["status"] == "succeeded"}
        if model.get("format") != "OpenAI" or model.get("name") not in succeeded or not body.get("sku"):
            return (
                400,
                {
                    "error": {
                        "code": "InvalidResourceProperties",
                        "message": f"model {model.get('name')!r} is not a succeeded fine-tune",
                    }
                },
                {},
            )
        existing = self.deployments.get(name)
        if existing is not None:
            return 200, existing, {}
        self.deployments[name] = {
            "id": path,
            "name": name,
            "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": body["sku"],
            "properties": {"model": model, "provisioningState": "Creating"},
        }
        return 201, self.deployments[name], {}
