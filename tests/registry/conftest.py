"""Fixtures for the registry tests: a real MLflow store, a real ledger, a real chat endpoint.

``build_version`` creates what the stages would have left behind (a dataset version with its
manifest in a ``file://`` data store, a fine-tune run, an evaluation run) and registers it, so
lineage can be tested without waiting for the other stages.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.register import register_model
from tuneops.registry.types import DatasetLink, RegisteredVersion, RegistrationRequest
from tuneops.tasks.data.tracking import links_from_version


@dataclass
class ChatStub:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that echoes; records what it was sent."""

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def chat_stub() -> Iterator[ChatStub]:
    stub = ChatStub(base_url="")

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append(body)
            stub.auth_headers.append(self.headers.get("Authorization") or self.headers.get("api-key") or "")
            stub.paths.append(self.path)
            if not self.path.split("?")[0].endswith("/chat/completions"):
                self.send_error(404)
                return
            last = body["messages"][-1]["content"]
            payload = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": f"{body['model']}: {last}"},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(mlflow_store: Any) -> RegistryStore:
    return RegistryStore(mlflow_store.tracking_uri, mlflow_store.artifact_root)


def mlflow_client(store: RegistryStore) -> Any:
    """MLflow's own client on the store: what the MLflow UI or a script does outside tuneops."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


@dataclass(frozen=True)
class BuiltVersion:
    """A registered version and everything the stages made for it."""

    version: RegisteredVersion
    request: RegistrationRequest
    finetune_run_id: str
    eval_run_id: str
    manifest: dict[str, Any]


def write_dataset(root: Path, name: str, seed: str) -> tuple[tuple[DatasetLink, ...], dict[str, Any]]:
    """Version a small chat dataset with the real data stage into a ``file://`` store."""
    from tuneops.tasks.data.store import open_store
    from tuneops.tasks.data.version import DatasetSources, version_files

    files = {}
    for split, rows in (("train", 20), ("validation", 4), ("test", 4)):
        path = root / "input" / seed / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"{seed} {split} question {i}?"},
                        {"role": "assistant", "content": f"answer {i}."},
                    ]
                }
            )
            for i in range(rows)
        ]
        path.write_text("\n".join(lines) + "\n")
        files[split] = path
    version = version_files(
        DatasetSources(train=files["train"], validation=files["validation"], test=files["test"]),
        name=name,
        store=open_store((root / "store").as_uri()),
        home=root / "home",
        workers=1,
    )
    return links_from_version(version), version.manifest


@pytest.fixture
def build_version(store: RegistryStore, tmp_path: Path, chat_stub: ChatStub) -> Callable[..., BuiltVersion]:
    def build(
        name: str = "support-bot",
        job_id: str = "ftjob-1",
        *,
        gate_passed: bool | None = True,
        seed: str = "v1",
        api_key_env: str | None = None,
    ) -> BuiltVersion:
        import mlflow

        links, manifest = write_dataset(tmp_path / "data", name, seed)
        experiment_id = store.ensure_experiment(name)
        client = mlflow_client(store)
        ft = client.create_run(experiment_id, run_name=f"finetune-{job_id}", tags={"tuneops.job_id": job_id})
        for key, value in {"n_epochs": "3", "batch_size": "4", "learning_rate_multiplier": "2.0"}.items():
            client.log_param(ft.info.run_id, key, value)
        client.log_metric(ft.info.run_id, "trained_tokens", 1234)
        client.log_metric(ft.info.run_id, "train_loss", 0.42)
        client.set_terminated(ft.info.run_id)
        ev = client.create_run(experiment_id, run_name=f"evaluate-{job_id}")
        for key, value in {"candidate.f1": 0.81, "base.f1": 0.52, "champion.f1": 0.77}.items():
            client.log_metric(ev.info.run_id, key, value)
        client.set_tag(ev.info.run_id, "tuneops.gate", "passed" if gate_passed else "failed")
        decision = {
            "passed": bool(gate_passed),
            "candidate": "candidate",
            "checks": [
                {
                    "kind": "threshold",
                    "passed": bool(gate_passed),
                    "message": "f1 0.81 >= 0.6",
                    "metric": "f1",
                    "against": None,
                    "observed": 0.81,
                    "required": 0.6,
                }
            ],
        }
        client.log_dict(ev.info.run_id, decision, "evaluation/decision.json")
        client.set_terminated(ev.info.run_id)
        request = RegistrationRequest(
            model_name=name,
            provider="local",
            base_model="tiny-gpt2",
            endpoint_base_url=chat_stub.base_url,
            endpoint_model=f"ft:tiny-gpt2:{job_id}",
            job_id=job_id,
            api_key_env=api_key_env,
            hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2.0},
            trained_tokens=1234,
            estimated_cost=0.0123,
            datasets=links,
            eval_run_id=ev.info.run_id,
            gate_passed=gate_passed,
            gate_reasons=("f1 0.81 >= 0.6", "beats base by 0.29") if gate_passed else ("f1 0.31 < 0.6",),
            flow_run_id="6b1f3c2e-0000-4000-8000-000000000001",
            finetune_run_id=ft.info.run_id,
        )
        version = register_model(request, store)
        assert mlflow.active_run() is None
        return BuiltVersion(version, request, ft.info.run_id, ev.info.run_id, manifest)

    return build
