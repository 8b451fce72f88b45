"""One exception tree for the whole of tuneops.

Adapters translate third-party errors into these at the edge (``raise ... from exc``) so
that flows, tasks and the CLI only ever reason about our own types::

    TuneopsError                      anything tuneops raises on purpose
    ├── UserError                     the user can fix it: one-line message, exit code 1 (or 2)
    │   ├── SpecError                 tuneops.yaml is missing or invalid
    │   ├── DatasetError              a dataset file cannot be read or is invalid
    │   ├── UsageError                a command was called wrongly (exit code 2)
    │   └── BudgetExceededError       the cost guard refused to submit a job
    ├── StoreError                    the data store or state database failed
    ├── ProviderError                 a model provider (OpenAI API endpoint) failed
    │   ├── TransientProviderError    worth retrying: 429, 5xx, timeouts, dropped connections
    │   ├── ProviderAuthError         401/403: the key is wrong or missing
    │   ├── ProviderRejectedError     4xx other than auth: the request itself is wrong
    │   └── FineTuneFailedError       the provider ran the job and it failed or was cancelled
    ├── RegistryError                 MLflow (tracking and registry) / promotion ledger problems
    │   ├── VersionNotFoundError      no such model version / alias / run (also a StoreError: the
    │   │                             data catalog raises it for a missing dataset version)
    │   └── PromotionRefusedError     a guard refused an alias move (e.g. gate failed, no --force)
    └── ServiceError                  a local service (tuning service, gateway) could not start

A rejection by a quality gate is *not* an exception: it is a result (see the evaluation stage).
"""

from __future__ import annotations


class TuneopsError(Exception):
    """Base of every error tuneops raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message shown to users: the problem and, when known, what to do about it."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UserError(TuneopsError):
    """Something the user can fix; shown without a traceback."""


class SpecError(UserError):
    """The spec file is missing or invalid."""


class DatasetError(UserError):
    """A dataset file cannot be read or is not valid chat fine-tuning data."""


class UsageError(UserError):
    """A command was called with arguments that do not fit together."""

    exit_code = 2


class BudgetExceededError(UserError):
    """The cost guard refused a job whose estimated training tokens exceed the budget."""


class StoreError(TuneopsError):
    """The data store or the state database failed."""


class ProviderError(TuneopsError):
    """A model provider failed. ``status_code`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, hint: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


class TransientProviderError(ProviderError):
    """A failure worth retrying: rate limits, server errors, timeouts, dropped connections.

    ``retry_after`` carries the provider's Retry-After, in seconds, when it sent one.
    ``ambiguous`` is true when the request may have been applied even though it failed
    (a timeout or dropped connection on a POST): callers must look before they retry.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message, hint=hint, status_code=status_code)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class ProviderAuthError(ProviderError):
    """The provider refused our credentials."""


class ProviderRejectedError(ProviderError):
    """The provider refused the request itself (bad model, bad file, bad hyperparameters)."""


class FineTuneFailedError(ProviderError):
    """The provider ran the fine-tune job and it ended failed or cancelled."""


class RegistryError(TuneopsError):
    """MLflow (runs, registry) or the promotion ledger failed; every MLflow error lands here."""


class VersionNotFoundError(RegistryError, StoreError):
    """A model version, alias or run (or a dataset version) that was asked for does not exist.

    Mostly the registry's answer, hence a :class:`RegistryError`; it stays a :class:`StoreError`
    too because the data catalog raises it for dataset versions and callers catch it as such.
    """


class PromotionRefusedError(RegistryError, UserError):
    """A guard refused an alias move; the message says how to override it."""


class ServiceError(TuneopsError):
    """A local service could not be started or reached."""
