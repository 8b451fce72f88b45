"""Every file under deployments/ agrees with the code it names: flows, events, settings, the example.

A trigger on the wrong resource id or a parameter the flow does not take fails at run time on a
server, days later, or never fires at all; here it fails in a second. A new file under deployments/
fails ``test_every_file_under_deployments_is_checked`` until a check covers it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import AliasChoices, TypeAdapter
from sqlalchemy.engine import make_url

from tuneops import events
from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
PARAMS = sorted((DEPLOYMENTS / "params").glob("*.yaml"))
EXAMPLE_SPECS = (
    REPO / "tuneops" / "resources" / "example" / "tuneops.yaml",
    REPO / "examples" / "tuneops.yaml",
)


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))


DEPLOYMENT_CONFIGS = _prefect_yaml()["deployments"]


def _example_model() -> str:
    names = {load_spec(path)[0].model.name for path in EXAMPLE_SPECS}
    assert len(names) == 1, f"the shipped example and examples/ disagree on the model name: {names}"
    return names.pop()


def test_every_file_under_deployments_is_checked() -> None:
    present = {p for p in DEPLOYMENTS.rglob("*") if p.is_file()}
    checked = {PREFECT_YAML, *(p for p in PARAMS if p.name in PARAMS_CLAIMS)}
    assert present == checked, f"not checked by tests/deployments: {sorted(map(str, present - checked))}"


def test_prefect_yaml_is_what_prefect_deploy_reads() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.events import DeploymentTriggerTypes

    PrefectYamlModel.model_validate(_prefect_yaml())
    for config in DEPLOYMENT_CONFIGS:
        for trigger in config.get("triggers", []):
            TypeAdapter(DeploymentTriggerTypes).validate_python(trigger)
    assert DEPLOYMENT_CONFIGS, "prefect.yaml declares no deployment"


def _flow_at(entrypoint: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Load the flow the way a worker does: from the run's working directory (the project folder)."""
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(run_dir)
    flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    assert isinstance(flow, Flow), f"{entrypoint} is not a Prefect flow"
    return flow


@pytest.mark.parametrize("config", DEPLOYMENT_CONFIGS, ids=lambda c: c["name"])
def test_entrypoint_is_a_flow_found_from_the_project_folder(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pull step moves to $TUNEOPS_PROJECT_DIR before loading: a repo-relative file path would
    # not be found there, the installed module is.
    flow = _flow_at(config["entrypoint"], tmp_path, monkeypatch)
    assert config["name"] == f"{flow.name}-{_example_model()}", "name deployments <flow>-<model>"


def _render(value: Any, context: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    return env.from_string(value).render(context)


def _parameter_sets(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every parameter set a run of this deployment can get, merged over the deployment's own."""
    base = config.get("parameters") or {}
    sets = [("deployment", dict(base))]
    for i, schedule in enumerate(config.get("schedules") or []):
        sets.append((f"schedule {i}", {**base, **(schedule.get("parameters") or {})}))
    for i, trigger in enumerate(config.get("triggers") or []):
        sets.append((f"trigger {i}", {**base, **(trigger.get("parameters") or {})}))
    return sets


@pytest.mark.parametrize("config", DEPLOYMENT_CONFIGS, ids=lambda c: c["name"])
def test_parameters_fit_the_flow_signature(
    config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = _flow_at(config["entrypoint"], tmp_path, monkeypatch)
    signature = inspect.signature(flow.fn)
    required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
    model = _example_model()
    sample_event = {
        "event": {"event": events.DRIFT_DETECTED, "payload": events.event_payload(model, "psi 0.31")}
    }
    for where, parameters in _parameter_sets(config):
        unknown = set(parameters) - set(signature.parameters)
        assert not unknown, f"{where}: {flow.name} takes no parameter {sorted(unknown)}"
        assert required <= set(parameters), f"{where}: missing required {sorted(required - set(parameters))}"
        rendered = {name: _render(value, sample_event) for name, value in parameters.items()}
        flow.validate_parameters(rendered)


def test_drift_trigger_passes_the_payload_summary_as_reason() -> None:
    used = set()
    for config in DEPLOYMENT_CONFIGS:
        for trigger in config.get("triggers") or []:
            for value in (trigger.get("parameters") or {}).values():
                used |= set(re.findall(r"event\.payload\.(\w+)", str(value)))
            if events.DRIFT_DETECTED in trigger["expect"] and "reason" in (trigger.get("parameters") or {}):
                assert trigger["parameters"]["reason"] == events.RETRAIN_REASON_TEMPLATE
    assert used <= events.PAYLOAD_KEYS, f"payload keys no event carries: {sorted(used - events.PAYLOAD_KEYS)}"


@pytest.mark.parametrize("config", DEPLOYMENT_CONFIGS, ids=lambda c: c["name"])
def test_triggers_match_exactly_the_example_model_on_known_events(config: dict[str, Any]) -> None:
    triggers = config.get("triggers") or []
    for trigger in triggers:
        assert trigger["match"]["prefect.resource.id"] == events.model_resource_id(_example_model())
        assert trigger["expect"], "a trigger must name the events it waits for"
        assert set(trigger["expect"]) <= events.EVENT_NAMES, f"not in tuneops.events: {trigger['expect']}"


# --- params/*.yaml: environment for a project's flow runs (KEY=value in .env, or job_variables.env)


def _setting_names() -> dict[str, str]:
    """Environment name -> TuneopsSettings field, aliases included."""
    names = {}
    prefix = TuneopsSettings.model_config.get("env_prefix", "")
    for field_name, field in TuneopsSettings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [f"{prefix}{field_name}".upper()]
        names.update({str(choice).upper(): field_name for choice in choices})
    return names


def _load_as_dotenv(path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> TuneopsSettings:
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    for name in _setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(project)
    return TuneopsSettings.load(project)


def _sqlite_file(url: str) -> Path:
    parsed = make_url(url)
    assert parsed.drivername == "sqlite" and parsed.database, url
    return Path(parsed.database).resolve()


def _claims_the_embedded_default(settings: TuneopsSettings, project: Path) -> None:
    from tuneops.tasks.data.store import LocalStore, open_store

    default = TuneopsSettings(project_dir=project)
    store, default_store = open_store(settings.data_store_uri or ""), open_store(default.data_store_uri or "")
    assert isinstance(store, LocalStore) and isinstance(default_store, LocalStore)
    assert store.root.resolve() == default_store.root.resolve()
    assert _sqlite_file(settings.tracking_uri or "") == _sqlite_file(default.tracking_uri or "")
    assert _sqlite_file(settings.state_db_url or "") == _sqlite_file(default.state_db_url or "")


def _claims_the_at_scale_column(settings: TuneopsSettings, project: Path) -> None:
    data = urlparse(settings.data_store_uri or "")
    assert data.scheme == "s3" and data.netloc, "datasets on S3: s3://bucket/prefix"
    assert urlparse(settings.tracking_uri or "").scheme in ("http", "https"), "an MLflow server"
    assert make_url(settings.state_db_url or "").drivername == "postgresql+psycopg2", "GOTCHAS: psycopg2"


PARAMS_CLAIMS: dict[str, Callable[[TuneopsSettings, Path], None]] = {
    "local.yaml": _claims_the_embedded_default,
    "at-scale.yaml": _claims_the_at_scale_column,
}


@pytest.mark.parametrize("path", PARAMS, ids=lambda p: p.name)
def test_params_file_is_settings_that_load_as_claimed(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect.settings

    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(values, dict) and values, f"{path.name}: a mapping of environment names"
    assert all(isinstance(v, str) for v in values.values()), "environment values are strings"
    settings_names = _setting_names()
    for key in values:
        known = key in settings_names or (key.startswith("PREFECT_") and hasattr(prefect.settings, key))
        assert known, f"{path.name}: {key} is neither a tuneops nor a Prefect setting"

    settings = _load_as_dotenv(path, tmp_path, monkeypatch)
    for key, value in values.items():
        if key in settings_names:
            assert getattr(settings, settings_names[key]) == value, f"{key} did not load from .env"
    assert path.name in PARAMS_CLAIMS, f"no check says what {path.name} is for"
    PARAMS_CLAIMS[path.name](settings, tmp_path)
