"""The project's Prefect deployments, built from its spec: one definition for the YAML and the server.

``deployment_definitions`` returns the deployments in ``prefect.yaml`` form (the checked-in
``deployments/prefect.yaml`` is this, for the example spec, and a test holds them equal);
``apply_deployments`` registers the same definitions on the server in ``PREFECT_API_URL``, the
way ``prefect deploy`` does (deployment upserted by flow and name, its triggers replaced):

- ``retrain-<model>``: cron ``schedule.retrain_cron`` (reason ``schedule``) and a trigger on
  ``tuneops.drift.detected`` for exactly ``tuneops.model.<model>`` (reason ``drift: <summary>``);
- ``monitor-drift-<model>``: every ``monitoring.interval_minutes``;
- ``rollout-<model>``: triggered by ``tuneops.model.registered`` when
  ``schedule.rollout_on_registered`` and the rollout flow exists.

Runs start in the project folder (a pull step), and entrypoints are installed modules, so a
worker needs tuneops installed, not this repository.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tuneops import events
from tuneops.spec import Spec

RETRAIN_ENTRYPOINT = "tuneops.flows.retrain.retrain"
MONITOR_ENTRYPOINT = "tuneops.flows.monitor.monitor_drift"
ROLLOUT_MODULE = "tuneops.flows.rollout"
PROJECT_DIR_TEMPLATE = "{{ $TUNEOPS_PROJECT_DIR }}"
SCHEDULE_REASON = "schedule"


@dataclass(frozen=True)
class AppliedDeployment:
    """One deployment as registered: its name, id and what makes it run."""

    name: str
    deployment_id: str
    schedules: tuple[str, ...]
    triggers: tuple[str, ...]


def _rollout_entrypoint() -> tuple[str, dict[str, Any]] | None:
    """The rollout flow's entrypoint and its trigger parameters, if the module exists yet."""
    if importlib.util.find_spec(ROLLOUT_MODULE) is None:
        return None
    from prefect import Flow

    module = importlib.import_module(ROLLOUT_MODULE)
    flows = [
        (name, obj) for name, obj in vars(module).items() if isinstance(obj, Flow) and obj.name == "rollout"
    ]
    if not flows:
        return None
    name, _ = flows[0]
    # no version from the event: the flow rolls out the ``challenger`` alias, which only a
    # version whose gate passed holds (a registered version may have failed its gate)
    parameters: dict[str, Any] = {}
    return f"{ROLLOUT_MODULE}.{name}", parameters


def deployment_definitions(spec: Spec, spec_path: str = "tuneops.yaml") -> list[dict[str, Any]]:
    """The project's deployments in ``prefect.yaml`` form (``spec_path`` as runs will see it)."""
    model, plan = spec.model.name, spec.schedule

    def pool() -> dict[str, Any]:
        return {"name": plan.work_pool}

    def resource() -> dict[str, Any]:
        return {"prefect.resource.id": events.model_resource_id(model)}

    retrain: dict[str, Any] = {
        "name": f"retrain-{model}",
        "description": "Version data, fine-tune, evaluate against base and champion, gate, register.",
        "entrypoint": RETRAIN_ENTRYPOINT,
        "tags": ["tuneops", "retrain", model],
        "work_pool": pool(),
        "parameters": {"spec_path": spec_path},
        "schedules": [],
        "triggers": [],
    }
    if plan.retrain_cron:
        retrain["schedules"].append(
            {
                "cron": plan.retrain_cron,
                "timezone": plan.timezone,
                "active": True,
                "parameters": {"reason": SCHEDULE_REASON},
            }
        )
    if plan.retrain_on_drift:
        retrain["triggers"].append(
            {
                "type": "event",
                "enabled": True,
                "match": resource(),
                "expect": [events.DRIFT_DETECTED],
                "parameters": {"spec_path": spec_path, "reason": events.RETRAIN_REASON_TEMPLATE},
            }
        )
    definitions = [retrain]
    if plan.monitor:
        definitions.append(
            {
                "name": f"monitor-drift-{model}",
                "description": "Judge the champion's served traffic for drift; emit tuneops.drift.detected.",
                "entrypoint": MONITOR_ENTRYPOINT,
                "tags": ["tuneops", "monitor-drift", model],
                "work_pool": pool(),
                "parameters": {"spec_path": spec_path},
                "schedules": [{"interval": spec.monitoring.interval_minutes * 60, "active": True}],
                "triggers": [],
            }
        )
    rollout = _rollout_entrypoint() if plan.rollout_on_registered else None
    if rollout is not None:
        entrypoint, parameters = rollout
        definitions.append(
            {
                "name": f"rollout-{model}",
                "description": "Roll the new challenger out (strategy from the spec's rollout section).",
                "entrypoint": entrypoint,
                "tags": ["tuneops", "rollout", model],
                "work_pool": pool(),
                "parameters": {"spec_path": spec_path},
                "schedules": [],
                "triggers": [
                    {
                        "type": "event",
                        "enabled": True,
                        "match": resource(),
                        "expect": [events.MODEL_REGISTERED],
                        "parameters": {"spec_path": spec_path, **parameters},
                    }
                ],
            }
        )
    return definitions


def prefect_yaml(
    spec: Spec, spec_path: str = "tuneops.yaml", directory: str = PROJECT_DIR_TEMPLATE
) -> dict[str, Any]:
    """A whole ``prefect.yaml`` for ``prefect deploy --all``: pull step, then the deployments."""
    from prefect import __version__ as prefect_version

    return {
        "name": "tuneops",
        "prefect-version": prefect_version,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": directory}}],
        "deployments": deployment_definitions(spec, spec_path),
    }


YAML_HEADER = """\
# Prefect deployments of tuneops' example project (`tuneops init`, model `{model}`).
# GENERATED by `tuneops deploy --print-yaml --spec examples/tuneops.yaml` from
# tuneops/flows/deployments.py (the code `tuneops deploy` registers with); tests/deployments checks
# that this file is exactly that output. Edit the spec's `schedule:`/`monitoring:` or the code.
#
# Deploy a project with `tuneops deploy` (PREFECT_API_URL set), or from this file:
#   TUNEOPS_PROJECT_DIR=/path/to/project prefect deploy --prefect-file deployments/prefect.yaml --all
# then start a worker for the pool: prefect worker start --pool {pool}
# Runs start in the project folder ($TUNEOPS_PROJECT_DIR: tuneops.yaml and .env), and entrypoints are
# installed modules. The drift trigger matches the model's resource id exactly: a wildcard would
# retrain every model whenever any of them drifts.
"""


def render_prefect_yaml(spec: Spec) -> str:
    """``prefect_yaml`` as the text of a file, with the header saying where it comes from."""
    import yaml

    header = YAML_HEADER.format(model=spec.model.name, pool=spec.schedule.work_pool)
    return header + yaml.safe_dump(prefect_yaml(spec), sort_keys=False, width=110)


def rollout_skipped(spec: Spec) -> str | None:
    """Why the rollout deployment was left out though the spec asks for it (None: not asked / made)."""
    if spec.schedule.rollout_on_registered and _rollout_entrypoint() is None:
        return f"{ROLLOUT_MODULE} has no 'rollout' flow yet: the rollout deployment was not made"
    return None


async def _ensure_process_pool(client: Any, name: str) -> bool:
    """Create the process work pool ``name`` if missing; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        await client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        return True


def _schedule(definition: dict[str, Any]) -> Any:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if "cron" in definition:
        schedule: Any = CronSchedule(cron=definition["cron"], timezone=definition.get("timezone", "UTC"))
    else:
        schedule = IntervalSchedule(interval=timedelta(seconds=definition["interval"]))
    return DeploymentScheduleCreate(
        schedule=schedule,
        active=definition.get("active", True),
        parameters=definition.get("parameters") or {},
    )


async def apply_deployments(spec: Spec, spec_file: Path) -> tuple[list[AppliedDeployment], bool]:
    """Register the project's deployments on the server in ``PREFECT_API_URL``.

    Returns the deployments and whether the work pool had to be created. Re-running updates them
    in place (same names), replacing their schedules and triggers.
    """
    from prefect.client.orchestration import get_client
    from prefect.events import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from pydantic import TypeAdapter

    spec_path = str(spec_file.resolve())
    project_dir = spec_file.resolve().parent
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(project_dir.resolve())}}]
    applied = []
    async with get_client() as client:
        created_pool = await _ensure_process_pool(client, spec.schedule.work_pool)
        for definition in deployment_definitions(spec, spec_path):
            flow = load_flow_from_entrypoint(definition["entrypoint"], use_placeholder_flow=False)
            flow_id = await client.create_flow_from_name(flow.name)
            # an upsert replaces the deployment's schedules only when asked: clear them first
            existing = await _existing(client, flow.name, definition["name"])
            if existing is not None:
                for old in await client.read_deployment_schedules(existing):
                    await client.delete_deployment_schedule(existing, old.id)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name=definition["name"],
                description=definition["description"],
                entrypoint=definition["entrypoint"],
                work_pool_name=definition["work_pool"]["name"],
                parameters=definition["parameters"],
                tags=definition["tags"],
                schedules=[_schedule(s) for s in definition["schedules"]],
                pull_steps=pull,
                path=str(project_dir.resolve()),
                parameter_openapi_schema=parameter_schema(flow).model_dump(),
                enforce_parameter_schema=True,
            )
            await client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
            adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
            for i, trigger_spec in enumerate(definition["triggers"], start=1):
                trigger = adapter.validate_python(
                    {"name": f"{definition['name']}__automation_{i}", **trigger_spec}
                )
                trigger.set_deployment_id(deployment_id)
                await client.create_automation(trigger.as_automation())
            applied.append(
                AppliedDeployment(
                    name=f"{flow.name}/{definition['name']}",
                    deployment_id=str(deployment_id),
                    schedules=tuple(_describe_schedule(s) for s in definition["schedules"]),
                    triggers=tuple(
                        f"{', '.join(t['expect'])} on {t['match']['prefect.resource.id']}"
                        for t in definition["triggers"]
                    ),
                )
            )
    return applied, created_pool


async def _existing(client: Any, flow_name: str, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return (await client.read_deployment_by_name(f"{flow_name}/{name}")).id
    except ObjectNotFound:
        return None


def _describe_schedule(definition: dict[str, Any]) -> str:
    if "cron" in definition:
        return f"cron {definition['cron']} ({definition.get('timezone', 'UTC')})"
    return f"every {definition['interval'] // 60} min"
