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


def test_finetune_from_and_overfitting_gate(tmp_path: Path):
    spec, _ = load_spec(
        write(tmp_path, MINIMAL + "finetune: {from: champion, max_validation_loss_rise: 0.1}\n")
    )
    assert spec.finetune.from_ == "champion" and spec.finetune.from_alias == "champion"
    assert spec.finetune.max_validation_loss_rise == 0.1
    explicit, _ = load_spec(
        write(tmp_path, MINIMAL + "finetune: {from: 'ft:tuneops-tiny:tuneops:bot:abcd1234'}\n")
    )
    assert explicit.finetune.from_alias is None
    assert explicit.finetune.from_ == "ft:tuneops-tiny:tuneops:bot:abcd1234"
    default, _ = load_spec(write(tmp_path, MINIMAL))
    assert default.finetune.from_ is None and default.finetune.max_validation_loss_rise is None
    assert default.evaluation.checkpoints == "final" and default.evaluation.few_shot is None


def test_few_shot_baseline_and_gates_naming_it(tmp_path: Path):
    text = MINIMAL + (
        "evaluation:\n  checkpoints: all\n  few_shot: {examples: 4, seed: 3}\n  gates:\n"
        "    - {metric: format, threshold: 0.9}\n"
        "    - {metric: format, baseline: few_shot, min_absolute_change: 0.1, require_significant: true}\n"
        "    - {metric: f1, baseline: few-shot}\n"
    )
    spec, _ = load_spec(write(tmp_path, text))
    assert spec.evaluation.checkpoints == "all"
    assert spec.evaluation.few_shot is not None
    assert (spec.evaluation.few_shot.examples, spec.evaluation.few_shot.seed) == (4, 3)
    assert [g.baseline for g in spec.evaluation.gates] == ["base", "few_shot", "few_shot"]


def test_earlier_few_shot_baseline_spelling_still_loads(tmp_path: Path):
    spec, _ = load_spec(write(tmp_path, MINIMAL + "evaluation: {few_shot_baseline: 2}\n"))
    assert spec.evaluation.few_shot is not None and spec.evaluation.few_shot.examples == 2
    off, _ = load_spec(write(tmp_path, MINIMAL + "evaluation: {few_shot_baseline: 0}\n"))
    assert off.evaluation.few_shot is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("finetune: {from: champoin}\n", "finetune.from"),
        ("finetune: {max_validation_loss_rise: -0.1}\n", "finetune.max_validation_loss_rise"),
        ("evaluation: {checkpoints: latest}\n", "evaluation.checkpoints"),
        ("evaluation: {gates: [{metric: f1, baseline: few_shot, min_absolute_change: 0.1}]}\n", "few_shot"),
        ("evaluation: {gates: [{metric: f1, baseline: champion}]}\n", "baseline"),
        ("evaluation: {few_shot: {examples: 0}}\n", "evaluation.few_shot.examples"),
    ],
)
def test_invalid_new_fields_fail_with_the_field_named(tmp_path: Path, text: str, fragment: str):
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, MINIMAL + text))
    assert fragment in caught.value.one_line()
