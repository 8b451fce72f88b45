"""infra/compose.yaml: valid against the Compose specification's JSON schema, and every command,
option, environment variable, file and database it names exists for the code that reads it.

Each check is also shown to fail on a mutated copy, so a broken key cannot pass unnoticed.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.checks import INFRA, REPO, check_command, check_variable, failures
from tuneops.spec import load_spec

COMPOSE = INFRA / "compose.yaml"
TUNEOPS_DOCKERFILE = "infra/Dockerfile"
SERVICES = {"postgres", "minio", "mlflow", "prefect", "worker", "models", "gateway"}


def schema_errors(path: Path) -> list[str]:
    """``check-jsonschema --builtin-schema vendor.compose-spec`` on ``path``: its error lines."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return [] if result.returncode == 0 else [result.stdout + result.stderr]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def is_tuneops_image(service: dict[str, Any]) -> bool:
    return (service.get("build") or {}).get("dockerfile") == TUNEOPS_DOCKERFILE


def cross_check(compose: dict[str, Any], base: Path = INFRA) -> list[str]:
    """Everything the file names that the code or this repository must know; the problems found."""
    services: dict[str, dict[str, Any]] = compose["services"]
    problems: list[str] = []
    for name, service in services.items():
        image = None if is_tuneops_image(service) else service.get("image")
        if image is None and "build" not in service:
            problems.append(f"{name}: neither an image nor the tuneops build")
        if image is None:
            problems += failures(check_command, [(service["command"],)])
        variables = [(key, value, image) for key, value in environment(service).items()]
        problems += [f"{name}: {p}" for p in failures(_check_variable, variables)]
        for dependency in service.get("depends_on") or []:
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
        network = service.get("network_mode", "")
        if network.startswith("service:") and network.removeprefix("service:") not in services:
            problems.append(f"{name}: network_mode names unknown service {network}")
        for volume in service.get("volumes") or []:
            # the default of ${VAR:-default}, then the part before the first colon
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(volume)).split(":", 1)[0]
            if source.startswith("."):
                if not (base / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist")
            elif source not in (compose.get("volumes") or {}):
                problems.append(f"{name}: volume {source} is not declared")
    return problems


def _check_variable(name: str, value: str, image: str | None) -> None:
    check_variable(name, value, image=image)


def postgres_databases(compose: dict[str, Any], base: Path = INFRA) -> tuple[set[str], set[str]]:
    """(databases the services connect to, databases the postgres service creates)."""
    text = yaml.safe_dump(compose)
    used = set(re.findall(r"postgresql\+\w+://[^@\s]+@postgres:5432/(\w+)", text))
    created = {environment(compose["services"]["postgres"])["POSTGRES_DB"]}
    for volume in compose["services"]["postgres"].get("volumes", []):
        source = str(volume).split(":", 1)[0]
        if source.endswith(".sql"):
            created |= set(re.findall(r"CREATE DATABASE (\w+)", (base / source).read_text(), flags=re.I))
    return used, created


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def mutated(compose: dict[str, Any], tmp_path: Path, change: Any) -> Path:
    broken = copy.deepcopy(compose)
    change(broken)
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    return path


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    assert schema_errors(COMPOSE) == []


def test_a_misspelled_service_key_fails_the_schema(compose: dict[str, Any], tmp_path: Path) -> None:
    def misspell(c: dict[str, Any]) -> None:
        c["services"]["gateway"]["enviroment"] = c["services"]["gateway"].pop("environment")

    [error] = schema_errors(mutated(compose, tmp_path, misspell))
    assert "enviroment" in error


def test_the_stack_has_every_at_scale_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


def test_commands_variables_files_and_volumes_are_known_to_the_code(compose: dict[str, Any]) -> None:
    assert cross_check(compose) == []


def _mlflow_option(s: dict[str, Any]) -> None:
    s["mlflow"]["command"] = s["mlflow"]["command"].replace("--artifacts-destination", "--artifact-dest")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["gateway"].update(command="tuneops serve gatway"), "no sub-command 'gatway'"),
        (_mlflow_option, "No such option"),
        (lambda s: s["worker"].update(command="prefect worker start --typ process"), "Unknown option"),
        (lambda s: s["models"]["environment"].update(TUNEOPS_STATE_DB_URI="x"), "TUNEOPS_STATE_DB_URI"),
        (lambda s: s["prefect"]["environment"].update(PREFECT_API_DB_URL="x"), "PREFECT_API_DB_URL"),
        (lambda s: s["mlflow"]["environment"].update(MLFLOW_S3_ENDPOINT="x"), "MLFLOW_S3_ENDPOINT"),
        (lambda s: s["gateway"].update(depends_on=["mlfow"]), "unknown service mlfow"),
        (lambda s: s["gateway"]["volumes"].append("cache:/cache"), "volume cache"),
    ],
    ids=["tuneops-command", "mlflow-option", "prefect-option", "tuneops-env", "prefect-env", "mlflow-env",
         "depends-on", "volume"],
)  # fmt: skip
def test_a_broken_name_fails_the_cross_check(compose: dict[str, Any], change: Any, expected: str) -> None:
    broken = copy.deepcopy(compose)
    for service in broken["services"].values():  # unshare the YAML anchors' mappings
        if "environment" in service:
            service["environment"] = dict(service["environment"])
    change(broken["services"])
    problems = cross_check(broken)
    assert any(expected in p for p in problems), problems


def test_every_database_a_service_connects_to_is_created(compose: dict[str, Any], tmp_path: Path) -> None:
    used, created = postgres_databases(compose)
    assert used and used <= created, (used, created)
    (tmp_path / "postgres-init.sql").write_text("CREATE DATABASE mlflow OWNER tuneops;\n")  # prefect's lost
    broken = copy.deepcopy(compose)
    broken["services"]["postgres"]["volumes"][1] = "./postgres-init.sql:/docker-entrypoint-initdb.d/i.sql"
    used, created = postgres_databases(broken, base=tmp_path)
    assert used - created == {"prefect"}


def test_the_worker_serves_the_pool_tuneops_deploy_creates(compose: dict[str, Any]) -> None:
    project = REPO / "examples"  # the default TUNEOPS_PROJECT_DIR
    spec, _ = load_spec(project / "tuneops.yaml")
    command = compose["services"]["worker"]["command"].split()
    assert command[command.index("--pool") + 1] == spec.schedule.work_pool
    assert spec.provider.kind == "local" and spec.provider.base_url.startswith("http://127.0.0.1:8765")
    # ... which is why worker and gateway share the local service's network namespace
    for name in ("worker", "gateway"):
        assert compose["services"][name]["network_mode"] == "service:models"
    assert "8780:8780" in compose["services"]["models"]["ports"]
