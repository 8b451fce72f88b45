"""The spec: valid files load with defaults, invalid ones fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.errors import SpecError
from tuneops.spec import LocalProviderConfig, load_spec

MINIMAL = """
model: {name: claims, base_model: tuneops-tiny}
data: {train: data/train.jsonl}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tuneops.yaml"
    path.write_text(text)
    return path


def test_minimal_spec_gets_local_provider_and_absolute_paths(tmp_path: Path):
    spec, base = load_spec(write(tmp_path, MINIMAL))
    assert base == tmp_path.resolve()
    assert isinstance(spec.provider, LocalProviderConfig)
    assert spec.data.train == tmp_path.resolve() / "data/train.jsonl"
    assert spec.finetune.hyperparameters.n_epochs == "auto"
    assert spec.dataset_name == "claims"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (MINIMAL + "extra_section: 1\n", "extra_section"),
        (MINIMAL + "finetune: {hyperparameters: {n_epochs: many}}\n", "finetune.hyperparameters.n_epochs"),
        (MINIMAL + "provider: {kind: bedrock}\n", "provider"),
        (MINIMAL + "provider: {kind: azure-openai}\n", "endpoint"),
        (MINIMAL + "data: {train: a.jsonl, split: {validation: 0.5, test: 0.5}}\n", "training"),
        ("model: {name: 'bad name!', base_model: x}\ndata: {train: a.jsonl}\n", "model.name"),
        ("model: [\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_invalid_specs_fail_with_the_field_named(tmp_path: Path, text: str, fragment: str):
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    assert fragment in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_missing_spec_says_how_to_create_one(tmp_path: Path):
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "tuneops.yaml")
    assert "tuneops init" in caught.value.one_line()
