"""The spec's ``serving:`` section: defaults when absent, the examples' values when given."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.errors import SpecError
from tuneops.spec import ServingConfig, load_spec

REPO = Path(__file__).resolve().parents[2]


def test_serving_defaults_when_the_section_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "tuneops.yaml"
    path.write_text("model: {name: claims, base_model: tuneops-tiny}\ndata: {train: t.jsonl}\n")
    spec, _ = load_spec(path)
    assert spec.serving == ServingConfig()
    assert spec.serving.capture_text is True and spec.serving.refresh_seconds == 2


def test_examples_document_every_serving_key() -> None:
    for path in (
        REPO / "examples" / "tuneops.yaml",
        REPO / "tuneops" / "resources" / "example" / "tuneops.yaml",
    ):
        text = path.read_text()
        assert all(f"  {key}:" in text for key in ServingConfig.model_fields), path
        assert load_spec(path)[0].serving == ServingConfig()


def test_capture_can_be_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "tuneops.yaml"
    path.write_text(
        "model: {name: claims, base_model: tuneops-tiny}\ndata: {train: t.jsonl}\n"
        "serving: {capture_text: false, upstream_timeout_seconds: 5, refresh_seconds: 0.5}\n"
    )
    serving = load_spec(path)[0].serving
    assert (serving.capture_text, serving.upstream_timeout_seconds, serving.refresh_seconds) == (
        False,
        5,
        0.5,
    )


def test_logprob_capture_is_on_by_default_and_can_be_switched_off(tmp_path: Path) -> None:
    assert ServingConfig().capture_logprobs is True
    path = tmp_path / "tuneops.yaml"
    head = "model: {name: claims, base_model: tuneops-tiny}\ndata: {train: t.jsonl}\n"
    path.write_text(head + "serving: {capture_logprobs: false}\n")
    assert load_spec(path)[0].serving.capture_logprobs is False
    path.write_text(head + "serving: {capture_logprob: false}\n")  # a misspelt key is still an error
    with pytest.raises(SpecError, match="capture_logprob"):
        load_spec(path)
