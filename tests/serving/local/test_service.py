"""The service engine in-process (no HTTP): files, job validation, model resolution, queue order."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneops.serving.local.service import LocalService, ServiceConfig
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples
from tuneops.serving.openai_wire import ApiError


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LocalService]:
    engine = LocalService(ServiceConfig(home=tmp_path / "models", max_file_bytes=50_000))
    yield engine
    engine.store.close()


def _train(service: LocalService, n: int = 12) -> str:
    return service.create_file("train.jsonl", "fine-tune", as_jsonl(claims_chat_examples(n)))["id"]


def test_files_round_trip_and_page(service: LocalService) -> None:
    ids = [_train(service) for _ in range(3)]
    other = service.create_file("notes.txt", "user_data", b"hello")["id"]
    newest_first = service.list_files(purpose=None, after=None, limit=2, order="desc")
    assert [f["id"] for f in newest_first["data"]] == [other, ids[2]] and newest_first["has_more"]
    rest = service.list_files(purpose=None, after=ids[2], limit=10, order="desc")
    assert [f["id"] for f in rest["data"]] == [ids[1], ids[0]] and not rest["has_more"]
    only = service.list_files(purpose="fine-tune", after=None, limit=10, order="asc")
    assert [f["id"] for f in only["data"]] == ids and only["first_id"] == ids[0] and only["last_id"] == ids[2]
    assert service.file_content(other) == b"hello"
    assert service.delete_file(other)["deleted"]
    with pytest.raises(ApiError) as gone:
        service.get_file(other)
    assert gone.value.status_code == 404
    with pytest.raises(ApiError):
        service.list_files(purpose=None, after=None, limit=5, order="sideways")


def test_upload_limits_and_validation(service: LocalService) -> None:
    with pytest.raises(ApiError) as big:
        service.create_file("big.jsonl", "fine-tune", b"x" * 50_001)
    assert big.value.status_code == 413 and big.value.code == "file_too_large"
    with pytest.raises(ApiError) as bad:
        service.create_file("bad.jsonl", "fine-tune", b'{"messages": []}\n')
    assert bad.value.code == "invalid_file_format" and "line 1" in bad.value.message
    with pytest.raises(ApiError):
        service.create_file("x.jsonl", "weights", b"")


def test_job_is_validated_then_queued_with_resolved_hyperparameters(service: LocalService) -> None:
    job = service.create_job({"model": "tuneops-tiny", "training_file": _train(service, 40), "suffix": "s"})
    assert job["status"] == "queued" and job["fine_tuned_model"] is None
    assert job["hyperparameters"] == {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert job["method"]["supervised"]["hyperparameters"] == job["hyperparameters"]
    events = [e["message"] for e in reversed(service.list_events(job["id"], after=None, limit=10)["data"])]
    assert events[0].startswith("Validating training file") and events[1].startswith("Files validated")
    later = service.create_job({"model": "tuneops-tiny", "training_file": _train(service)})
    assert service.store.job_ids_with_status(["queued"]) == [job["id"], later["id"]]  # first in, first out
    cancelled = service.cancel_job(later["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    with pytest.raises(ApiError):
        service.cancel_job(later["id"])


def test_list_jobs_filters_by_metadata_and_pages(service: LocalService) -> None:
    train = _train(service)
    ids = [
        service.create_job({"model": "tuneops-tiny", "training_file": train, "metadata": {"n": str(i % 2)}})[
            "id"
        ]
        for i in range(5)
    ]
    odd = service.list_jobs(after=None, limit=10, metadata={"n": "1"})
    assert [j["id"] for j in odd["data"]] == [ids[3], ids[1]]
    page = service.list_jobs(after=ids[4], limit=2, metadata={})
    assert [j["id"] for j in page["data"]] == [ids[3], ids[2]] and page["has_more"]


def test_models_include_base_folders_and_unknown_names_are_404(
    service: LocalService, tmp_path: Path, tiny_test_model: Path
) -> None:
    shutil.copytree(tiny_test_model, service.base_dir / "my-model")
    assert [m["id"] for m in service.list_models()] == ["tuneops-tiny", "smollm2-135m-instruct", "my-model"]
    assert service.resolve_model("my-model") == (service.base_dir / "my-model", None)
    for name in (
        "gpt-4o",
        "ft:tuneops-tiny:tuneops::abcdefgh",
        "ft:tuneops-tiny:tuneops::abcdefgh:ckpt-step-3",
    ):
        with pytest.raises(ApiError) as missing:
            service.resolve_model(name)
        assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
    with pytest.raises(ApiError) as not_tunable:
        service.create_job({"model": "ft:tuneops-tiny:tuneops::abcdefgh", "training_file": _train(service)})
    assert not_tunable.value.param == "model"


def test_invalid_validation_file_fails_the_job_with_the_line(service: LocalService) -> None:
    valid = service.create_file("v.jsonl", "fine-tune", as_jsonl(claims_chat_examples(2)))["id"]
    job = service.create_job(
        {"model": "tuneops-tiny", "training_file": _train(service, 5), "validation_file": valid}
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_training_file" and "at least 10" in job["error"]["message"]
    assert job["error"]["param"] == "training_file"
