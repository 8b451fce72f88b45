"""The local service's pure rules: names, hyperparameters, early stopping, paging."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuneops.serving.local.rules import (
    Hyperparameters,
    RequestedHyperparameters,
    best_epoch,
    checkpoint_model_name,
    fine_tuned_model_name,
    metadata_matches,
    new_id,
    paginate,
    parse_fine_tuned_name,
    parse_hyperparameters,
    resolve_hyperparameters,
    should_stop_early,
    steps_per_epoch,
    validate_metadata,
    validate_suffix,
)
from tuneops.serving.openai_wire import ApiError


def test_ids_have_prefix_and_are_unique() -> None:
    ids = {new_id("ftjob-") for _ in range(200)}
    assert len(ids) == 200 and all(i.startswith("ftjob-") and len(i) == 30 for i in ids)


def test_fine_tuned_names_follow_openai_and_parse_back() -> None:
    name = fine_tuned_model_name("tuneops-tiny", "claims", "ftjob-abcdefghijklmnop12345678")
    assert name == "ft:tuneops-tiny:tuneops:claims:12345678"
    parsed = parse_fine_tuned_name(name)
    assert parsed is not None and (parsed.base, parsed.suffix, parsed.short_id) == (
        "tuneops-tiny",
        "claims",
        "12345678",
    )
    assert parsed.checkpoint_step is None
    ckpt = parse_fine_tuned_name(checkpoint_model_name(name, 88))
    assert ckpt is not None and ckpt.checkpoint_step == 88 and ckpt.short_id == "12345678"
    assert fine_tuned_model_name("m", None, "ftjob-xyz12345") == "ft:m:tuneops::xyz12345"
    assert parse_fine_tuned_name("tuneops-tiny") is None
    assert parse_fine_tuned_name("ft:only:two") is None


@given(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True))
def test_any_valid_suffix_round_trips(suffix: str) -> None:
    assert validate_suffix(suffix) == suffix
    parsed = parse_fine_tuned_name(fine_tuned_model_name("base", suffix, "ftjob-abcdefgh"))
    assert parsed is not None and parsed.suffix == suffix


@pytest.mark.parametrize("suffix", ["", "a" * 65, "has space", "colon:no", 12])
def test_bad_suffixes_are_rejected(suffix: object) -> None:
    with pytest.raises(ApiError) as info:
        validate_suffix(suffix)
    assert info.value.param == "suffix"


def test_metadata_rules() -> None:
    assert validate_metadata(None) == {}
    assert validate_metadata({"k": "v"}) == {"k": "v"}
    for bad in ({"k": 1}, {str(i): "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}, ["k"]):
        with pytest.raises(ApiError):
            validate_metadata(bad)
    assert metadata_matches({"a": "1", "b": "2"}, {"a": "1"})
    assert not metadata_matches({"a": "1"}, {"a": "2"})
    assert not metadata_matches({}, {"a": "1"})
    assert metadata_matches({}, {})


def test_hyperparameters_auto_and_explicit() -> None:
    assert parse_hyperparameters(None, None) == RequestedHyperparameters()
    auto = parse_hyperparameters(
        {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}, None
    )
    assert auto == RequestedHyperparameters()
    explicit = parse_hyperparameters(
        None,
        {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 2,
                    "batch_size": 4,
                    "learning_rate_multiplier": 0.5,
                    "lora_r": 4,
                    "lora_target_modules": ["c_attn"],
                }
            },
        },
    )
    assert (explicit.n_epochs, explicit.batch_size, explicit.learning_rate_multiplier) == (2, 4, 0.5)
    resolved = resolve_hyperparameters(explicit, 100)
    assert resolved.lora_r == 4 and resolved.lora_target_modules == ("c_attn",)
    assert resolved.public() == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}


@pytest.mark.parametrize(("n", "batch"), [(1, 1), (10, 1), (60, 6), (300, 8), (5000, 8)])
def test_auto_batch_size_scales_with_data(n: int, batch: int) -> None:
    resolved = resolve_hyperparameters(RequestedHyperparameters(), n)
    assert (
        resolved.batch_size == batch and resolved.n_epochs == 3 and resolved.learning_rate_multiplier == 1.0
    )


def test_explicit_batch_larger_than_data_is_capped() -> None:
    assert resolve_hyperparameters(RequestedHyperparameters(batch_size=64), 12).batch_size == 12


@pytest.mark.parametrize(
    ("hyper", "method", "param"),
    [
        ({"n_epochs": 0}, None, "hyperparameters.n_epochs"),
        ({"n_epochs": 51}, None, "hyperparameters.n_epochs"),
        ({"n_epochs": 1.5}, None, "hyperparameters.n_epochs"),
        ({"n_epochs": "many"}, None, "hyperparameters.n_epochs"),
        ({"n_epochs": True}, None, "hyperparameters.n_epochs"),
        ({"batch_size": 0}, None, "hyperparameters.batch_size"),
        ({"learning_rate_multiplier": 0}, None, "hyperparameters.learning_rate_multiplier"),
        ({"learning_rate_multiplier": -1}, None, "hyperparameters.learning_rate_multiplier"),
        ({"warmup": 3}, None, "hyperparameters"),
        ({"lora_dropout": 1.0}, None, "hyperparameters.lora_dropout"),
        ({"lora_target_modules": "c_attn"}, None, "hyperparameters.lora_target_modules"),
        ({"lora_target_modules": []}, None, "hyperparameters.lora_target_modules"),
        ("fast", None, "hyperparameters"),
        (None, {"type": "dpo"}, "method.type"),
        (None, {"type": "supervised", "supervised": "x"}, "method.supervised"),
        ({"n_epochs": 1}, {"type": "supervised"}, "hyperparameters"),
        (
            None,
            {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": -2}}},
            "method.supervised.hyperparameters.n_epochs",
        ),
    ],
)
def test_invalid_hyperparameters_name_the_parameter(hyper: object, method: object, param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_hyperparameters(hyper, method)
    assert info.value.param == param and info.value.status_code == 400


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(10, 3) == 4 and steps_per_epoch(9, 3) == 3 and steps_per_epoch(0, 8) == 1


@pytest.mark.parametrize(
    ("losses", "patience", "stop"),
    [
        ([], 1, False),
        ([3.0], 1, False),
        ([3.0, 2.0], 1, False),
        ([3.0, 2.0, 2.5], 1, True),
        ([3.0, 2.0, 2.0], 1, True),  # no improvement counts as not improving
        ([3.0, 2.0, 2.5], 2, False),
        ([3.0, 2.0, 2.5, 2.1], 2, True),
        ([3.0, 2.0, 2.5, 1.9], 2, False),
        ([3.0, 4.0], 0, False),
    ],
)
def test_early_stop_on_rising_validation_loss(losses: list[float], patience: int, stop: bool) -> None:
    assert should_stop_early(losses, patience) is stop


@given(st.lists(st.floats(min_value=0.01, max_value=10), min_size=1, max_size=20))
def test_best_epoch_is_the_minimum(losses: list[float]) -> None:
    epoch = best_epoch(losses)
    assert losses[epoch - 1] == min(losses) and losses.index(min(losses)) == epoch - 1


def test_best_epoch_needs_losses() -> None:
    with pytest.raises(ValueError):
        best_epoch([])


def test_paginate_by_cursor() -> None:
    items = [f"id{i}" for i in range(5)]
    assert paginate(items, after=None, limit=2, key=str) == (["id0", "id1"], True)
    assert paginate(items, after="id1", limit=2, key=str) == (["id2", "id3"], True)
    assert paginate(items, after="id3", limit=2, key=str) == (["id4"], False)
    assert paginate(items, after="id4", limit=2, key=str) == ([], False)
    with pytest.raises(ApiError):
        paginate(items, after="nope", limit=2, key=str)
    with pytest.raises(ApiError):
        paginate(items, after=None, limit=0, key=str)


@given(st.integers(min_value=0, max_value=30), st.integers(min_value=1, max_value=7))
def test_paging_visits_every_item_once(n: int, limit: int) -> None:
    items = [f"x{i}" for i in range(n)]
    seen: list[str] = []
    after = None
    while True:
        page, more = paginate(items, after=after, limit=limit, key=str)
        seen += page
        if not more:
            break
        after = page[-1]
    assert seen == items


def test_hyperparameters_default_to_gpt2_modules_and_llama_q_v() -> None:
    assert Hyperparameters(1, 1, 1.0).lora_target_modules == ("c_attn", "c_proj", "c_fc", "q_proj", "v_proj")
