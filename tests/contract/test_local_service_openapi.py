"""What the local service answers validates against OpenAI's published OpenAPI description.

The reference (``shared/reference/openai/openapi-subset.json``) still marks some fields
OpenAPI-3.0 style (``nullable: true``); a small converter turns those into JSON Schema
``anyOf [..., null]`` so a standard validator checks every body, error bodies included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples, local_service, tiny_test_model  # noqa: F401
from tuneops.testing.reference.openapi import assert_matches, openapi30_to_jsonschema

pytestmark = pytest.mark.slow


def test_the_converter_handles_nullable() -> None:
    schema = openapi30_to_jsonschema(
        {"type": "object", "properties": {"a": {"type": "string", "nullable": True, "enum": ["x"]}}}
    )
    validator = Draft202012Validator(schema)
    assert (
        validator.is_valid({"a": None})
        and validator.is_valid({"a": "x"})
        and not validator.is_valid({"a": "y"})
    )
    positive = Draft202012Validator(
        openapi30_to_jsonschema({"type": "number", "minimum": 0, "exclusiveMinimum": True})
    )
    assert positive.is_valid(1.0) and positive.is_valid(0.5) and not positive.is_valid(0)


@pytest.fixture
def http(local_service: ServiceProcess) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=local_service.base_url, timeout=120) as client:
        yield client


def test_every_answer_validates(schemas: dict[str, Any], http: httpx.Client) -> None:
    assert_matches("ListModelsResponse", http.get("/models").json())
    assert_matches("Model", http.get("/models/tuneops-tiny").json())

    upload = http.post(
        "/files",
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", as_jsonl(claims_chat_examples(12)))},
    )
    assert_matches("OpenAIFile", upload.json())
    file_id = upload.json()["id"]
    assert_matches("OpenAIFile", http.get(f"/files/{file_id}").json())
    assert_matches("ListFilesResponse", http.get("/files").json())

    created = http.post(
        "/fine_tuning/jobs",
        json={
            "model": "tuneops-tiny",
            "training_file": file_id,
            "validation_file": file_id,
            "suffix": "contract",
            "metadata": {"k": "v"},
            "hyperparameters": {"n_epochs": 1, "batch_size": 4},
        },
    )
    assert_matches("FineTuningJob", created.json())
    job_id = created.json()["id"]
    deadline = time.monotonic() + 240
    while (job := http.get(f"/fine_tuning/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["status"] == "succeeded", job["error"]
    assert_matches("FineTuningJob", job)
    assert_matches(
        "ListPaginatedFineTuningJobsResponse",
        http.get("/fine_tuning/jobs", params={"limit": 5}).json(),
    )
    assert_matches("ListFineTuningJobEventsResponse", http.get(f"/fine_tuning/jobs/{job_id}/events").json())
    assert_matches(
        "ListFineTuningJobCheckpointsResponse",
        http.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json(),
    )

    messages = [{"role": "user", "content": "Hello"}]
    for model in ("tuneops-tiny", job["fine_tuned_model"]):
        reply = http.post("/chat/completions", json={"model": model, "messages": messages, "max_tokens": 5})
        assert_matches("CreateChatCompletionResponse", reply.json())
        with http.stream(
            "POST",
            "/chat/completions",
            json={
                "model": model,
                "messages": messages,
                "max_tokens": 5,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as stream:
            lines = [line for line in stream.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            assert_matches("CreateChatCompletionStreamResponse", json.loads(line.removeprefix("data: ")))

    second = http.post("/fine_tuning/jobs", json={"model": "tuneops-tiny", "training_file": file_id}).json()
    assert_matches("FineTuningJob", http.post(f"/fine_tuning/jobs/{second['id']}/cancel").json())
    assert_matches("DeleteFileResponse", http.delete(f"/files/{file_id}").json())


def test_error_bodies_validate(schemas: dict[str, Any], http: httpx.Client) -> None:
    responses = [
        http.post("/chat/completions", content=b"{oops"),
        http.post(
            "/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
        ),
        http.post("/chat/completions", json={"model": "tuneops-tiny", "messages": []}),
        http.get("/files/file-nope"),
        http.post("/files", data={"purpose": "fine-tune"}, files={"file": ("a.jsonl", b"not json\n")}),
        http.post("/fine_tuning/jobs", json={"model": "tuneops-tiny", "training_file": "file-nope"}),
        http.post(
            "/fine_tuning/jobs",
            json={"model": "tuneops-tiny", "training_file": "f", "hyperparameters": {"n_epochs": -1}},
        ),
        http.get("/fine_tuning/jobs/ftjob-nope"),
        http.get("/unknown"),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text
        assert_matches("ErrorResponse", response.json())
