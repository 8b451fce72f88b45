"""The exception tree: user errors are one line with a hint; transient errors carry retry facts."""

from __future__ import annotations

from tuneops import errors


def test_one_line_folds_whitespace_and_appends_the_hint():
    error = errors.DatasetError("train.jsonl:3:\n  bad   role", hint="use system, user or assistant")
    assert error.one_line() == "train.jsonl:3: bad role (use system, user or assistant)"
    assert error.exit_code == 1


def test_usage_errors_exit_2_and_everything_is_a_tuneops_error():
    assert errors.UsageError("x").exit_code == 2
    for cls in (
        errors.SpecError,
        errors.TransientProviderError,
        errors.PromotionRefusedError,
        errors.ServiceError,
    ):
        assert issubclass(cls, errors.TuneopsError)
    assert issubclass(errors.PromotionRefusedError, errors.UserError)


def test_transient_error_keeps_retry_after_and_ambiguity():
    error = errors.TransientProviderError("timeout", status_code=None, retry_after=2.5, ambiguous=True)
    assert (error.retry_after, error.ambiguous, error.status_code) == (2.5, True, None)
