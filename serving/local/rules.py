"""Pure decisions of the local service: ids, model names, hyperparameters, early stopping, paging.

No I/O and no SDK imports, so every rule here is unit-tested exhaustively. A refusal is an
``ApiError`` (from :mod:`tuneops.serving.openai_wire`), which the HTTP layer answers in OpenAI's
error shape.
"""

from __future__ import annotations

import math
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tuneops.serving.openai_wire import ApiError

ORGANIZATION = "tuneops"
DEFAULT_BASE_LEARNING_RATE = 1e-2
DEFAULT_N_EPOCHS = 3
MAX_N_EPOCHS = 50
MAX_BATCH_SIZE = 256
MIN_TRAINING_EXAMPLES = 10
# GPT-2's attention and MLP (tuneops-tiny), and the usual q/v projections of Llama-style models
# (smollm2-135m-instruct): LoRA trains those present; a model with none of them gets all linear layers.
DEFAULT_LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "q_proj", "v_proj")
_ID_ALPHABET = string.ascii_letters + string.digits
_SUFFIX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FT_NAME = re.compile(
    r"^ft:(?P<base>[^:]+):(?P<org>[^:]*):(?P<suffix>[^:]*):(?P<short>[A-Za-z0-9]+)(?::ckpt-step-(?P<step>\d+))?$"
)
T = TypeVar("T")


def new_id(prefix: str, length: int = 24) -> str:
    """An OpenAI-looking object id, e.g. ``ftjob-3k9...``."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def short_job_id(job_id: str) -> str:
    """The 8 characters of a job id that end its fine-tuned model name."""
    return job_id.rsplit("-", 1)[-1][-8:]


def fine_tuned_model_name(
    base: str, suffix: str | None, job_id: str, organization: str = ORGANIZATION
) -> str:
    """``ft:<base>:<org>:<suffix>:<id>``, the naming OpenAI uses for fine-tuned models."""
    return f"ft:{base}:{organization}:{suffix or ''}:{short_job_id(job_id)}"


def checkpoint_model_name(fine_tuned_model: str, step: int) -> str:
    """The name of one checkpoint of a fine-tune, callable like the final model."""
    return f"{fine_tuned_model}:ckpt-step-{step}"


@dataclass(frozen=True)
class FineTunedName:
    """The parts of a ``ft:`` model name."""

    base: str
    organization: str
    suffix: str
    short_id: str
    checkpoint_step: int | None


def parse_fine_tuned_name(name: str) -> FineTunedName | None:
    """Split a ``ft:`` model name into its parts; None when ``name`` is not one."""
    match = _FT_NAME.match(name)
    if not match:
        return None
    step = match.group("step")
    return FineTunedName(
        base=match.group("base"),
        organization=match.group("org"),
        suffix=match.group("suffix"),
        short_id=match.group("short"),
        checkpoint_step=int(step) if step is not None else None,
    )


def validate_suffix(suffix: object) -> str | None:
    """A suffix is optional; when given, 1-64 characters of letters, digits, ``.``, ``_``, ``-``."""
    if suffix is None:
        return None
    if not isinstance(suffix, str) or not _SUFFIX.match(suffix):
        raise ApiError("suffix must be 1-64 characters of letters, digits, '.', '_' or '-'.", param="suffix")
    return suffix


def validate_metadata(metadata: object) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string pairs, keys <= 64 chars, values <= 512 chars."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ApiError("metadata must be an object of string keys and string values.", param="metadata")
    if len(metadata) > 16:
        raise ApiError("metadata may hold at most 16 key-value pairs.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ApiError("metadata keys and values must be strings.", param="metadata")
        if len(key) > 64 or len(value) > 512:
            raise ApiError(
                f"metadata key {key[:64]!r}: keys are at most 64 characters, values at most 512.",
                param="metadata",
            )
    return dict(metadata)


@dataclass(frozen=True)
class Hyperparameters:
    """Resolved training settings of a job: no ``auto`` left, LoRA included."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS
    early_stopping_patience: int = 1

    def public(self) -> dict[str, Any]:
        """The three fields OpenAI reports on the job object."""
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


@dataclass(frozen=True)
class RequestedHyperparameters:
    """Hyperparameters as requested: ``None`` stands for ``auto``."""

    n_epochs: int | None = None
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    lora: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "lora": dict(self.lora),
        }


def _auto_or(value: object, name: str, kind: type, low: float, high: float | None, param: str) -> Any:
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"{name} must be 'auto' or a number.", param=param, code="invalid_hyperparameters")
    if kind is int and (not float(value).is_integer()):
        raise ApiError(f"{name} must be a whole number.", param=param, code="invalid_hyperparameters")
    if value < low or (high is not None and value > high) or (kind is float and value <= 0):
        bounds = f"between {low:g} and {high:g}" if high is not None else "greater than 0"
        raise ApiError(f"{name} must be {bounds}, got {value}.", param=param, code="invalid_hyperparameters")
    return kind(value)


def parse_hyperparameters(hyperparameters: object, method: object) -> RequestedHyperparameters:
    """Read ``hyperparameters`` or ``method={"type": "supervised", ...}`` from a job request.

    Besides OpenAI's three fields, ``lora_r``, ``lora_alpha``, ``lora_dropout`` and
    ``lora_target_modules`` are accepted (the SDK passes unknown keys through).
    """
    param = "hyperparameters"
    raw: object = hyperparameters
    if method is not None:
        if not isinstance(method, Mapping) or method.get("type") != "supervised":
            raise ApiError("Only method type 'supervised' is supported by this service.", param="method.type")
        if hyperparameters is not None:
            raise ApiError(
                "Give hyperparameters either at the top level or in method, not both.", param=param
            )
        supervised = method.get("supervised") or {}
        if not isinstance(supervised, Mapping):
            raise ApiError("method.supervised must be an object.", param="method.supervised")
        raw = supervised.get("hyperparameters")
        param = "method.supervised.hyperparameters"
    if raw is None:
        return RequestedHyperparameters()
    if not isinstance(raw, Mapping):
        raise ApiError("hyperparameters must be an object.", param=param)
    known = {
        "n_epochs",
        "batch_size",
        "learning_rate_multiplier",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ApiError(
            f"Unknown hyperparameter(s): {', '.join(unknown)}.", param=param, code="invalid_hyperparameters"
        )
    lora: dict[str, Any] = {}
    if "lora_r" in raw:
        lora["lora_r"] = _auto_or(raw["lora_r"], "lora_r", int, 1, 256, f"{param}.lora_r")
    if "lora_alpha" in raw:
        lora["lora_alpha"] = _auto_or(raw["lora_alpha"], "lora_alpha", int, 1, 1024, f"{param}.lora_alpha")
    if "lora_dropout" in raw:
        dropout = raw["lora_dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ApiError(
                "lora_dropout must be a number in [0, 1).",
                param=f"{param}.lora_dropout",
                code="invalid_hyperparameters",
            )
        lora["lora_dropout"] = float(dropout)
    if "lora_target_modules" in raw:
        targets = raw["lora_target_modules"]
        if (
            not isinstance(targets, Sequence)
            or isinstance(targets, str)
            or not targets
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise ApiError(
                "lora_target_modules must be a non-empty list of module names.",
                param=f"{param}.lora_target_modules",
                code="invalid_hyperparameters",
            )
        lora["lora_target_modules"] = tuple(targets)
    return RequestedHyperparameters(
        n_epochs=_auto_or(raw.get("n_epochs"), "n_epochs", int, 1, MAX_N_EPOCHS, f"{param}.n_epochs"),
        batch_size=_auto_or(
            raw.get("batch_size"), "batch_size", int, 1, MAX_BATCH_SIZE, f"{param}.batch_size"
        ),
        learning_rate_multiplier=_auto_or(
            raw.get("learning_rate_multiplier"),
            "learning_rate_multiplier",
            float,
            0,
            None,
            f"{param}.learning_rate_multiplier",
        ),
        lora={k: v for k, v in lora.items() if v is not None},
    )


def resolve_hyperparameters(requested: RequestedHyperparameters, n_train_examples: int) -> Hyperparameters:
    """Fill in ``auto``: 3 epochs, a batch of about a tenth of the data (1-8), multiplier 1."""
    batch = requested.batch_size or min(8, max(1, n_train_examples // 10))
    return Hyperparameters(
        n_epochs=requested.n_epochs or DEFAULT_N_EPOCHS,
        batch_size=min(batch, max(1, n_train_examples)),
        learning_rate_multiplier=requested.learning_rate_multiplier or 1.0,
        **requested.lora,
    )


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last batch may be short)."""
    return max(1, math.ceil(n_examples / batch_size))


def should_stop_early(validation_losses: Sequence[float], patience: int = 1) -> bool:
    """Stop when validation loss has not improved on its best for ``patience`` epochs in a row.

    ``validation_losses`` holds one value per finished epoch (the base model's value excluded).
    """
    if patience < 1 or len(validation_losses) <= patience:
        return False
    best_before = min(validation_losses[:-patience])
    return all(loss >= best_before for loss in validation_losses[-patience:])


def best_epoch(validation_losses: Sequence[float]) -> int:
    """1-based epoch with the lowest validation loss (the earliest on ties)."""
    if not validation_losses:
        raise ValueError("no validation losses")
    return min(range(len(validation_losses)), key=lambda i: (validation_losses[i], i)) + 1


def paginate(
    items: Sequence[T], *, after: str | None, limit: int, key: Callable[[T], str]
) -> tuple[list[T], bool]:
    """Items after the one whose key is ``after`` (cursor paging as OpenAI does it), and has_more."""
    if limit < 1:
        raise ApiError("limit must be at least 1.", param="limit")
    start = 0
    if after is not None:
        keys = [key(item) for item in items]
        if after not in keys:
            raise ApiError(f"No object with id {after!r} to page after.", param="after")
        start = keys.index(after) + 1
    page = list(items[start : start + limit])
    return page, start + limit < len(items)


def metadata_matches(metadata: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """True when every wanted key has exactly the wanted value."""
    return all(metadata.get(key) == value for key, value in wanted.items())
