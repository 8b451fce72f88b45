"""infra/kubernetes/: every manifest valid against the Kubernetes OpenAPI schemas (offline, strict:
unknown keys fail), the Prefect work-pool base job template accepted by Prefect and rendering a
valid Job, and every command, setting and reference cross-checked. Each check fails on a
mutated copy."""

from __future__ import annotations

import copy
import json
import shlex
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.infra.checks import INFRA, check_command, check_variable, failures

KUBERNETES = INFRA / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
WORK_POOL = KUBERNETES / "prefect-work-pool.json"
VERSION = kubernetes_validate.latest_version()
GATEWAY = "tuneops-gateway"


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def schema_problems(doc: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        name = doc["metadata"].get("name") or doc["metadata"].get("generateName")
        return [f"{doc['kind']}/{name}: {exc.message} at {list(exc.path)}"]
    return []


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in {"Deployment", "Job"}:
        return list(doc["spec"]["template"]["spec"]["containers"])
    return []


def cross_check(docs: list[dict[str, Any]]) -> list[str]:
    """Commands, variables and references between the manifests; the problems found."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    problems: list[str] = []
    for config in by_kind.get("ConfigMap", {}).values():
        problems += failures(check_variable, config["data"].items())
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for container in containers(doc):
            if "command" in container:
                problems += failures(check_command, [(container["command"],)])
            names = [(e["name"], e.get("value", "x")) for e in container.get("env", [])]
            problems += [f"{where}: {p}" for p in failures(check_variable, names)]
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref is not None and ref not in by_kind.get("ConfigMap", {}):
                    problems.append(f"{where}: envFrom names unknown ConfigMap {ref}")
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if target["name"] not in by_kind.get(target["kind"], {}):
                problems.append(f"{where}: scales unknown {target['kind']} {target['name']}")
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            matched = [
                d for d in by_kind.get("Deployment", {}).values()
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]  # fmt: skip
            if not matched:
                problems.append(f"{where}: selects no Deployment's pods")
            ports = {p.get("name") for d in matched for c in containers(d) for p in c.get("ports", [])}
            for port in doc["spec"]["ports"]:
                if isinstance(port["targetPort"], str) and port["targetPort"] not in ports:
                    problems.append(f"{where}: targetPort {port['targetPort']} is no container port")
    return problems


def rendered_job(template: dict[str, Any]) -> dict[str, Any]:
    """The Job the Kubernetes worker would submit with the variables' defaults.

    Templating is Prefect's own; like the worker, the env mapping becomes a list of name/value
    pairs and the command string an argument list.
    """
    from prefect.utilities.templating import apply_values

    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    job = apply_values(template["job_configuration"], defaults)["job_manifest"]
    for container in job["spec"]["template"]["spec"]["containers"]:
        container["env"] = [{"name": k, "value": v} for k, v in (container.get("env") or {}).items()]
        container["args"] = shlex.split(container["args"])
    return job


def work_pool_problems(template: dict[str, Any]) -> list[str]:
    from prefect.server.schemas.actions import WorkPoolCreate
    from pydantic import ValidationError

    try:
        WorkPoolCreate(name="tuneops-k8s", type="kubernetes", base_job_template=template)
    except ValidationError as exc:
        return [str(exc)]
    variables = template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    jsonschema.validate(defaults, variables)
    return schema_problems(rendered_job(template))


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return documents()


@pytest.fixture(scope="module")
def work_pool() -> dict[str, Any]:
    return json.loads(WORK_POOL.read_text())


def test_the_manifests_hold_what_the_at_scale_column_needs(docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "tuneops-gateway"),
        ("Service", "tuneops-gateway"),
        ("HorizontalPodAutoscaler", "tuneops-gateway"),
        ("Deployment", "tuneops-mlflow"),
        ("Service", "tuneops-mlflow"),
        ("ConfigMap", "tuneops-settings"),
    } <= kinds


def test_every_manifest_is_valid_against_the_kubernetes_schemas(docs: list[dict[str, Any]]) -> None:
    assert [p for doc in docs for p in schema_problems(doc)] == []


def test_commands_settings_and_references_are_known(docs: list[dict[str, Any]]) -> None:
    assert cross_check(docs) == []


def test_gateway_replicas_share_the_postgresql_state_database(docs: list[dict[str, Any]]) -> None:
    [settings] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert settings["data"]["TUNEOPS_STATE_DB_URL"].startswith("postgresql+psycopg2://")
    [gateway] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY]
    [hpa] = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert gateway["spec"]["replicas"] >= 2 and hpa["spec"]["minReplicas"] >= 2
    # the only local state is the request-log spool, on a per-pod emptyDir
    assert [v for v in pod(gateway)["volumes"] if "emptyDir" not in v] == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: pod(d["Deployment"])["containers"][0]["ports"][0].update(containerPort="8780"),
         "is not of type 'integer'"),
        (lambda d: d["Deployment"]["spec"].update(replica=d["Deployment"]["spec"].pop("replicas")),
         "replica"),
        (lambda d: d["HorizontalPodAutoscaler"]["spec"].update(minReplica=2), "minReplica"),
    ],
    ids=["string-port", "misspelled-replicas", "unknown-hpa-key"],
)  # fmt: skip
def test_a_broken_key_fails_the_schema(docs: list[dict[str, Any]], change: Any, expected: str) -> None:
    broken = {d["kind"]: copy.deepcopy(d) for d in docs if d["metadata"]["name"] == GATEWAY}
    change(broken)
    problems = [p for doc in broken.values() for p in schema_problems(doc)]
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["command"].__setitem__(c["command"].index("--port"), "--prot"),
         "No such option: --prot"),
        (lambda c: c["env"].append({"name": "TUNEOPS_GATEWAY_KEYS", "value": "k"}), "TUNEOPS_GATEWAY_KEYS"),
        (lambda c: c["envFrom"][0]["configMapRef"].update(name="settings"), "unknown ConfigMap settings"),
        (lambda c: c["ports"][0].update(name="web"), "targetPort http is no container port"),
    ],
    ids=["command", "env", "configmap-ref", "port-name"],
)  # fmt: skip
def test_a_broken_name_fails_the_cross_check(docs: list[dict[str, Any]], change: Any, expected: str) -> None:
    broken = copy.deepcopy(docs)
    [gateway] = [d for d in broken if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY]
    change(pod(gateway)["containers"][0])
    problems = cross_check(broken)
    assert any(expected in p for p in problems), problems


def test_the_prefect_work_pool_template_is_accepted_and_renders_a_job(work_pool: dict[str, Any]) -> None:
    assert work_pool_problems(work_pool) == []
    job = rendered_job(work_pool)
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "tuneops-settings"}}]
    assert container["args"] == ["prefect", "flow-run", "execute"]


def test_a_broken_work_pool_template_fails(work_pool: dict[str, Any]) -> None:
    undeclared = json.loads(json.dumps(work_pool).replace("{{ image }}", "{{ img }}"))
    assert any("variables schema" in p for p in work_pool_problems(undeclared))
    misplaced = copy.deepcopy(work_pool)  # a JobSpec key inside the pod spec (a common slip)
    misplaced["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["completions"] = 1
    assert any("completions" in p for p in work_pool_problems(misplaced))
