"""The closed loop on real servers: served traffic drifts → ``monitor-drift`` → event → ``retrain``.

Everything is the real thing a team would run, on one machine: a ``prefect server`` on PostgreSQL
with the project's deployments (``tuneops deploy``) and a process worker; the local tuning service
on the tiny base model; a champion fine-tuned on claims (topic A) with ``tuneops run`` and promoted
by hand; ``tuneops serve gateway`` serving it; clients on the official ``openai`` SDK. Then:

1. before any traffic, ``tuneops monitor`` says the window is too thin and emits nothing;
2. claims traffic like the training data: no drift, nothing emitted, no retrain run;
3. travel questions (topic B) through the gateway, and new travel examples dropped into the
   project's data folder (``data.train`` is a folder): ``tuneops monitor`` (the ``monitor-drift``
   flow, recorded on the server) finds drift and emits ``tuneops.drift.detected``; the retrain
   deployment's trigger makes a run that the worker executes: the folder's union becomes a new
   dataset version, the fine-tune is evaluated, gated, registered and made ``challenger``;
4. the champion still serves the drifted traffic, so the next check fires again; with nothing new
   in the folder, that retrain trains nothing and says "drift detected, no new data";
5. ``tuneops lineage claims-bot@challenger`` names the monitor-drift flow run and the drift report
   run that caused it.

The monitor runs through ``tuneops monitor`` (one check now, what a user runs) rather than its
interval deployment, so that each window is checked exactly when the test has sent its traffic.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from tuneops.processes import ManagedProcess, free_port, start_process
from tuneops.requestlog import request_table
from tuneops.serving.local.testing import CLAIMS_SYSTEM_PROMPT, as_jsonl, claims_chat_examples
from tuneops.settings import QUIET_ENVIRONMENT, TuneopsSettings

from .conftest import (
    MODEL_NAME,
    RetrainProject,
    deploy,
    deployment_runs,
    prefect_env,
    start_worker,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

GATEWAY_KEY = "drift-loop-key"
WINDOW = 40  # requests per traffic window; the spec asks for at least MIN_REQUESTS
MIN_REQUESTS = 30
EPOCHS = 8  # enough for the tiny model to learn the answer format on claims and on travel
TRAVEL = (  # topic B: travel trouble, in the claims answer format so the fine-tune can learn it
    ("my flight from {a} to {b} was cancelled on {d}", "travel", "medium", "rebook_trip"),
    ("the hotel in {b} lost my booking for {d}", "travel", "low", "refund_booking"),
    ("our train to {b} was delayed {n} hours and we missed the ferry", "travel", "medium", "refund_booking"),
    ("my suitcase never arrived in {b} after the {d} flight", "travel", "high", "trace_baggage"),
)
CITIES = ("Lisbon", "Oslo", "Chicago", "Osaka", "Lima", "Prague", "Madrid", "Quito")


def travel_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        what, kind, priority, action = rng.choice(TRAVEL)
        user = what.format(
            a=rng.choice(CITIES),
            b=rng.choice(CITIES),
            d=rng.choice(("Monday", "Sunday")),
            n=rng.randint(2, 9),
        )
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": CLAIMS_SYSTEM_PROMPT},
                    {"role": "user", "content": f"Hello, {user}. What now?"},
                    {
                        "role": "assistant",
                        "content": f"CLAIM_TYPE={kind}; PRIORITY={priority}; NEXT={action}.",
                    },
                ]
            }
        )
    return rows


def loop_project(project: RetrainProject) -> None:
    """Move the training split into a folder (where new data is dropped) and set the monitor's window.

    ``max_latency_ratio`` is loosened because the evaluation measured latency alone while here
    the gateway, the service and a worker share two cores: this test is about topic drift. The
    gate counts only a *significant* loss to the champion (``require_significant``): the retrain
    learns a second topic from the same number of epochs, and on 30 claims test rows a small dip
    is noise, not a worse model.
    """
    folder = project.directory / "data" / "train"
    folder.mkdir(parents=True)
    (project.directory / "train.jsonl").rename(folder / "claims.jsonl")
    text = project.spec_path.read_text().replace("train: train.jsonl", "train: data/train")
    text = text.replace("n_epochs: 3", f"n_epochs: {EPOCHS}")
    text = text.replace("min_absolute_change: 0.05}", "min_absolute_change: 0.05, require_significant: true}")
    text += (
        f"monitoring: {{window_hours: 1, min_requests: {MIN_REQUESTS}, embedding_sample: 50,"
        " max_latency_ratio: 50}\n"
        "serving: {refresh_seconds: 0.5}\n"
    )
    project.spec_path.write_text(text)


def cli(project: RetrainProject, server: ManagedProcess, *args: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", *args],
        cwd=project.directory, env=prefect_env(server), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"tuneops {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def monitor(project: RetrainProject, server: ManagedProcess) -> dict[str, Any]:
    """``tuneops monitor --json``: one ``monitor-drift`` flow run on the server, its outcome."""
    out = cli(project, server, "monitor", "--json", timeout=600)
    return json.loads(out[out.index("{\n") :])


def start_gateway(project: RetrainProject, log_path: Path) -> ManagedProcess:
    port = free_port()
    command = [sys.executable, "-m", "tuneops.cli.main", "serve", "gateway", "--spec", str(project.spec_path),
               "--port", str(port)]  # fmt: skip
    return start_process(
        "the gateway", command, url=f"http://127.0.0.1:{port}/v1", health=f"http://127.0.0.1:{port}/health",
        log_path=log_path, env={**QUIET_ENVIRONMENT, "TUNEOPS_GATEWAY_API_KEYS": GATEWAY_KEY}, timeout=120,
    )  # fmt: skip


def send(gateway: ManagedProcess, prompts: list[str]) -> set[str]:
    """Ask each prompt through the gateway with the official SDK; returns the versions that answered."""
    client = openai.OpenAI(base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0, timeout=120)

    def ask(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL_NAME,
            messages=[
                {"role": "system", "content": CLAIMS_SYSTEM_PROMPT},
                {"role": "user", "content": prompts[i]},
            ],
            max_tokens=40,
            temperature=0,
            user=f"user-{i}",
        )
        assert raw.parse().choices[0].message.content is not None
        return raw.headers["x-tuneops-model-version"]

    with ThreadPoolExecutor(2) as pool:
        return set(pool.map(ask, range(len(prompts))))


def answered(state_db_url: str) -> int:
    engine = sa.create_engine(state_db_url)
    try:
        with engine.connect() as conn:
            query = (
                sa.select(sa.func.count()).select_from(request_table).where(request_table.c.role == "answer")
            )
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_drifted_traffic_retrains_on_the_new_data_and_lineage_names_the_drift_run(
    retrain_project: RetrainProject, prefect_server: ManagedProcess, tmp_path: Path
) -> None:
    from tuneops.registry.mlflow_store import RegistryStore

    started = time.monotonic()
    project, logs = retrain_project, tmp_path / "logs"
    loop_project(project)
    deploy(project, prefect_server, "{retrain_cron: null, monitor: false}")
    settings = TuneopsSettings.load(project.directory)
    state_db_url = settings.state_db_url or ""

    # the champion: fine-tuned on claims (topic A), promoted by hand after its evaluation
    cli(project, prefect_server, "run", "--reason", "first version")
    cli(
        project,
        prefect_server,
        "promote",
        MODEL_NAME,
        "1",
        "--alias",
        "champion",
        "--reason",
        "first version",
    )
    champion_at = time.monotonic()

    gateway = start_gateway(project, logs / "gateway.log")
    worker = start_worker(prefect_server, logs / "worker.log")
    with gateway, worker:
        thin = monitor(project, prefect_server)
        assert thin["status"] == "insufficient_traffic" and not thin["emitted"], thin

        claims = [str(r["messages"][1]["content"]) for r in claims_chat_examples(WINDOW, seed=99)]
        assert send(gateway, claims) == {"1"}
        assert wait_for(lambda: answered(state_db_url) >= WINDOW, timeout=30)
        normal = monitor(project, prefect_server)
        assert normal["status"] == "no_drift" and not normal["emitted"], normal

        travel = [str(r["messages"][1]["content"]) for r in travel_examples(WINDOW, seed=5)]
        assert send(gateway, travel) == {"1"}
        assert wait_for(lambda: answered(state_db_url) >= 2 * WINDOW, timeout=30)
        new_rows = travel_examples(60, seed=6)  # new data lands where data.train points
        (project.directory / "data" / "train" / "travel.jsonl").write_bytes(as_jsonl(new_rows))
        assert deployment_runs(prefect_server) == []  # nothing so far started a retrain

        drifted = monitor(project, prefect_server)
        traffic_done = time.monotonic()
        assert drifted["status"] == "drifted" and drifted["emitted"], drifted
        assert "embedding_auc" in {s["name"] for s in drifted["signals"] if s["drifted"]}
        monitor_run, report_run = drifted["flow_run_id"], drifted["report_run_id"]
        assert monitor_run and report_run

        runs = wait_for(lambda: deployment_runs(prefect_server), timeout=60)
        assert len(runs) == 1, runs
        reason = runs[0]["parameters"]["reason"]
        assert reason.startswith("drift: ") and monitor_run in reason and report_run in reason
        completed = wait_for(lambda: deployment_runs(prefect_server, state="COMPLETED"), timeout=900, every=3)
        assert completed, (logs / "worker.log").read_text()[-4000:]
        retrained_at = time.monotonic()

        # the champion still serves the drifted traffic: the next check fires again, but the
        # folder holds nothing new, so that retrain trains nothing and says why
        again = monitor(project, prefect_server)
        assert again["emitted"] and again["flow_run_id"] != monitor_run
        skipped = wait_for(lambda: len(deployment_runs(prefect_server, state="COMPLETED")) == 2, 300, every=3)
        assert skipped, (logs / "worker.log").read_text()[-4000:]
        second_run = next(r for r in deployment_runs(prefect_server) if r["id"] != runs[0]["id"])
        assert again["flow_run_id"] in second_run["parameters"]["reason"]
    artifact = httpx.post(
        f"{prefect_server.url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [f"retrain-{MODEL_NAME}"]}}},
        timeout=10,
    ).json()
    assert len(artifact) == 1 and "drift detected, no new data" in artifact[0]["data"], artifact
    skipped_at = time.monotonic()

    # the monitor's run is on the server, as a monitor-drift flow run that completed
    found = httpx.get(f"{prefect_server.url}/flow_runs/{monitor_run}", timeout=10).json()
    flow = httpx.get(f"{prefect_server.url}/flows/{found['flow_id']}", timeout=10).json()
    assert flow["name"] == "monitor-drift" and found["state"]["type"] == "COMPLETED"

    store = RegistryStore.from_settings(settings)
    first, second = store.versions(MODEL_NAME)  # the skipped run registered nothing
    assert second.tags["tuneops.gate"] == "passed", second.tags.get("tuneops.gate_reasons")
    assert store.aliases(MODEL_NAME) == {"champion": "1", "challenger": "2"}
    assert second.tags["tuneops.train_digest"] != first.tags["tuneops.train_digest"]
    assert second.tags["tuneops.flow_run_id"] == runs[0]["id"]

    lineage = json.loads(cli(project, prefect_server, "lineage", f"{MODEL_NAME}@challenger", "--json"))
    assert lineage["version"] == "2" and lineage["flow_run_id"] == runs[0]["id"]
    train = next(s for s in lineage["dataset"]["splits"] if s["split"] == "train")
    assert train["rows"] is not None and train["rows"] > 100  # the claims and the dropped travel rows
    trigger = lineage["trigger"]
    assert trigger["kind"] == "drift" and trigger["reason"] == reason
    assert (trigger["monitor_flow_run_id"], trigger["drift_report_run_id"]) == (monitor_run, report_run)
    assert trigger["drift_status"] == "drifted"
    shown = cli(project, prefect_server, "lineage", f"{MODEL_NAME}@challenger")
    assert f"monitor-drift flow run: {monitor_run}" in shown and f"drift report run: {report_run}" in shown

    print(
        f"\ndrift loop: champion {champion_at - started:.0f} s, traffic + three checks"
        f" {traffic_done - champion_at:.0f} s, triggered retrain {retrained_at - traffic_done:.0f} s,"
        f" check again + skipped retrain {skipped_at - retrained_at:.0f} s,"
        f" total {time.monotonic() - started:.0f} s"
    )
