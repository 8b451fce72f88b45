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


def test_the_tree_in_the_docstring_matches_the_classes():
    """Every class drawn under a parent in ``errors``' docstring really subclasses it."""
    parents: list[str] = []
    drawn = 0
    for line in (errors.__doc__ or "").splitlines():
        stripped = line.lstrip(" │├└─")
        name = stripped.split(" ", 1)[0]
        if not name.endswith("Error"):
            continue
        depth = (len(line) - len(stripped)) // 4 - 1  # the docstring itself is indented once
        parents[depth:] = [name]
        if depth:
            assert issubclass(getattr(errors, name), getattr(errors, parents[depth - 1])), (
                f"{name} is drawn under {parents[depth - 1]}"
            )
            drawn += 1
    assert drawn >= 15


def test_mlflow_errors_have_one_home():
    """Whatever the registry cannot find is a RegistryError; the data catalog may catch it as a StoreError."""
    assert issubclass(errors.VersionNotFoundError, errors.RegistryError)
    assert issubclass(errors.VersionNotFoundError, errors.StoreError)
    assert not issubclass(errors.RegistryError, errors.StoreError)
