"""``tuneops run`` exactly as a user runs it: a subprocess, no PREFECT_API_URL (so the project's
own Prefect server runs for the length of the run), the project's state kept under
``<project>/.tuneops``, a summary at the end."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from .conftest import MODEL_NAME, RetrainProject

pytestmark = pytest.mark.slow


def test_tuneops_run_on_the_embedded_default_prints_a_summary_and_keeps_state_in_the_project(
    retrain_project: RetrainProject,
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_HOME"))}
    run = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "run", "--no-progress"],
        cwd=retrain_project.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{MODEL_NAME} version 1 (registered now)" in run.stdout
    assert "challenger → version 1" in run.stdout
    assert f"tuneops lineage {MODEL_NAME}/1" in run.stdout
    state = retrain_project.directory / ".tuneops"
    with sqlite3.connect(state / "prefect" / "prefect.db") as db:  # the run went through the project's server
        runs = db.execute(
            "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id"
        ).fetchall()
    assert ("retrain", "COMPLETED") in runs
    assert (state / "mlflow.db").is_file() and (state / "state.db").is_file()
    assert "Traceback" not in run.stdout + run.stderr
    assert "View at http" not in run.stdout + run.stderr  # that server has no UI: no dead links


def test_after_run_and_promote_the_gateway_serves_the_champions_fine_tune(retrain_project: RetrainProject):
    """Issue 11's first acceptance item as a user does it: ``tuneops run``, ``tuneops promote ...
    --alias champion``, ``tuneops serve gateway``; the official SDK, plain and streamed, gets the
    fine-tune's answers (the same text the local service gives for that fine-tune directly), in
    OpenAI's published shape."""
    import json

    import openai

    from tuneops.processes import free_port, start_process
    from tuneops.testing.reference.openapi import assert_matches

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_HOME"))}
    env.pop("TUNEOPS_GATEWAY_API_KEYS", None)

    def tuneops(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "tuneops.cli.main", *args],
            cwd=retrain_project.directory, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    tuneops("run", "--no-progress")
    tuneops("promote", MODEL_NAME, "1", "--alias", "champion", "--reason", "acceptance: serve it")
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "tuneops.cli.main", "serve", "gateway", "--port", str(port),
               "--spec", str(retrain_project.spec_path)]  # fmt: skip
    rows = [json.loads(line) for line in (retrain_project.directory / "test.jsonl").read_text().splitlines()]
    messages = [m for m in rows[0]["messages"] if m["role"] != "assistant"]
    with start_process(
        "the gateway", command, url=gateway_url, health=f"http://127.0.0.1:{port}/health",
        log_path=retrain_project.directory / "gateway.log", env=env, timeout=120,
    ):  # fmt: skip
        client = openai.OpenAI(base_url=gateway_url, api_key="no-key-needed", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL_NAME, messages=messages, temperature=0, max_tokens=40, user="first-user"
        )
        assert (raw.headers["x-tuneops-model-version"], raw.headers["x-tuneops-arm"]) == ("1", "champion")
        assert_matches("CreateChatCompletionResponse", json.loads(raw.http_response.text))
        answer = raw.parse().choices[0].message.content
        stream = client.chat.completions.create(
            model=MODEL_NAME, messages=messages, temperature=0, max_tokens=40, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        for chunk in chunks:
            assert_matches("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    direct = openai.OpenAI(base_url=retrain_project.base_url, api_key="unused", max_retries=0)
    fine_tunes = [m.id for m in direct.models.list().data if m.id.startswith("ft:")]
    assert len(fine_tunes) == 1  # the run made one fine-tune: version 1 is it
    expected = (
        direct.chat.completions.create(model=fine_tunes[0], messages=messages, temperature=0, max_tokens=40)
        .choices[0]
        .message.content
    )
    assert answer == expected and answer
