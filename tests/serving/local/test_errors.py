"""Every kind of malformed request gets a 4xx in OpenAI's error shape, and the service keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples, serve_locally

pytestmark = pytest.mark.slow
KEY = "sk-local-test"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tiny_test_model: Path) -> Iterator[ServiceProcess]:
    with serve_locally(
        tmp_path_factory.mktemp("guarded") / "models", tiny_test_model, api_key=KEY
    ) as service:
        yield service


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_missing_or_wrong_key_is_401(guarded: ServiceProcess) -> None:
    assert _error(httpx.get(f"{guarded.base_url}/models"), 401)["code"] == "invalid_api_key"
    wrong = httpx.get(f"{guarded.base_url}/models", headers={"Authorization": "Bearer nope"})
    assert _error(wrong, 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=guarded.base_url, api_key="nope", max_retries=0).models.list()
    assert httpx.get(f"{guarded.root_url}/health").status_code == 200  # health needs no key


def test_malformed_requests_get_openai_errors(guarded: ServiceProcess) -> None:
    client = OpenAI(base_url=guarded.base_url, api_key=KEY, max_retries=0)
    auth = {"Authorization": f"Bearer {KEY}"}
    http = httpx.Client(base_url=guarded.base_url, headers=auth)

    bad_json = http.post(
        "/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert _error(bad_json, 400)["code"] == "invalid_json"
    assert _error(http.post("/fine_tuning/jobs", content=b"[1,"), 400)["code"] == "invalid_json"
    assert _error(http.post("/fine_tuning/jobs", json=[1]), 400)["code"] == "invalid_type"

    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert unknown_model.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="ft:tuneops-tiny:tuneops::deadbeef", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError) as bad_param:
        client.chat.completions.create(
            model="tuneops-tiny", messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    assert bad_param.value.body["param"] == "temperature"  # type: ignore[index]

    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.BadRequestError) as bad_purpose:
        client.files.create(file=("x.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    assert bad_purpose.value.body["param"] == "purpose"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad_content:
        client.files.create(
            file=("x.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n'), purpose="fine-tune"
        )
    assert "line 1" in bad_content.value.message
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.csv", b"a,b\n"), purpose="fine-tune")
    missing_file = http.post("/files", data={"purpose": "fine-tune"}, files={"other": ("a", b"b")})
    assert _error(missing_file, 400)["param"] == "file"

    train = client.files.create(file=("t.jsonl", as_jsonl(claims_chat_examples(12))), purpose="fine-tune")
    other = client.files.create(file=("notes.txt", b"free text"), purpose="user_data")
    cases = [
        ({"model": "gpt-17", "training_file": train.id}, "model"),
        ({"model": "tuneops-tiny", "training_file": "file-nope"}, "training_file"),
        (
            {"model": "tuneops-tiny", "training_file": train.id, "validation_file": "file-nope"},
            "validation_file",
        ),
        ({"model": "tuneops-tiny", "training_file": other.id}, "training_file"),
        (
            {"model": "tuneops-tiny", "training_file": train.id, "hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
        ),
        (
            {"model": "tuneops-tiny", "training_file": train.id, "hyperparameters": {"batch_size": "big"}},
            "hyperparameters.batch_size",
        ),
        (
            {"model": "tuneops-tiny", "training_file": train.id, "method": {"type": "reinforcement"}},
            "method.type",
        ),
        ({"model": "tuneops-tiny", "training_file": train.id, "suffix": "has space"}, "suffix"),
        ({"model": "tuneops-tiny", "training_file": train.id, "metadata": {"k": 1}}, "metadata"),
        ({"model": "tuneops-tiny"}, "training_file"),
    ]
    for body, param in cases:
        assert _error(http.post("/fine_tuning/jobs", json=body), 400)["param"] == param, body
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-nope")
    assert _error(http.get("/fine_tuning/jobs", params={"limit": "lots"}), 400)["param"] == "limit"
    assert _error(http.get("/fine_tuning/jobs", params={"after": "ftjob-nope"}), 400)["param"] == "after"
    assert _error(http.get("/no/such/route"), 404)["code"] == "unknown_url"

    too_few = client.files.create(file=("few.jsonl", as_jsonl(claims_chat_examples(3))), purpose="fine-tune")
    failed = client.fine_tuning.jobs.create(model="tuneops-tiny", training_file=too_few.id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "invalid_training_file" and "at least 10" in failed.error.message
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(failed.id)

    huge = http.post(
        "/chat/completions", content=b"x" * (9 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert _error(huge, 413)["code"] == "request_too_large"
    http.close()

    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model="tuneops-tiny", messages=[{"role": "user", "content": "word " * 3000}]
        )
    assert too_long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="tuneops-tiny", messages=[{"role": "user", "content": "word " * 3000}], stream=True
        )

    # ... and after all that the service still answers.
    reply = client.chat.completions.create(
        model="tuneops-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert reply.choices[0].message.role == "assistant"
