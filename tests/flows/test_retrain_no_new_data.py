"""A drift-triggered retrain on data a version was already trained on trains nothing and says so."""

from __future__ import annotations

from tuneops.flows.retrain_steps import NO_NEW_DATA, is_drift_reason, no_new_data, version_trained_on
from tuneops.registry.types import RegisteredVersion
from tuneops.tasks.data.types import DatasetVersion, SplitFile


def _dataset(train_sha: str) -> DatasetVersion:
    split = SplitFile(name="train", uri="file:///x/train.jsonl", sha256=train_sha, rows=10, tokens=100)
    return DatasetVersion(name="claims", digest="d" * 64, uri="file:///x", splits={"train": split})


def _version(number: str, train_sha: str | None) -> RegisteredVersion:
    tags = {"tuneops.train_digest": train_sha} if train_sha else {}
    return RegisteredVersion(model_name="m", version=number, source="s", run_id=None, tags=tags)


def test_drift_reasons_are_recognised() -> None:
    assert is_drift_reason("drift: embedding AUC 0.7")
    assert not is_drift_reason("schedule") and not is_drift_reason("manual")


def test_newest_version_on_the_same_training_split_is_found() -> None:
    versions = [_version("1", "a"), _version("2", "b"), _version("3", "a"), _version("4", None)]
    assert version_trained_on(versions, "a") == "3"
    assert version_trained_on(versions, "c") is None
    assert version_trained_on(versions, None) is None


def test_drift_on_unchanged_data_is_skipped_with_the_plain_message() -> None:
    skipped = no_new_data("drift: psi 0.4", _dataset("a"), [_version("1", "a")])
    assert skipped is not None and skipped.trained_version == "1"
    assert skipped.message.startswith(NO_NEW_DATA) and "nothing trained" in skipped.message


def test_new_data_or_another_reason_goes_ahead() -> None:
    assert no_new_data("drift: psi 0.4", _dataset("new"), [_version("1", "a")]) is None
    assert no_new_data("schedule", _dataset("a"), [_version("1", "a")]) is None
    assert no_new_data("drift: x", _dataset("a"), []) is None
