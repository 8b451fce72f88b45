"""Where a drift check's inputs come from: the champion, its training data, the request log.

The champion is ``<model>@champion`` in the registry; its lineage (``registry.lineage``) names
the dataset version it was trained on (by digest) and the evaluation that judged it, whose
candidate metrics are the quality baseline. Served traffic comes from the request log
(``answer`` rows of the champion's version).

Prompt lengths are counted the same way on both sides (cl100k_base tokens of the last user
message), because the gateway's ``prompt_tokens`` include the chat template and would differ
from the training data for reasons that are not drift. When the gateway does not capture texts,
the window's ``prompt_tokens`` are compared with the champion's *reference window* instead: its
first ``window_hours`` of traffic after its promotion, counted the same way. Each answer's mean
token log-probability is the one the gateway logged (``serving.capture_logprobs``); rows without
one (a provider that returns none, rows from before) are left out of ``low_confidence_share``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from tuneops.errors import RegistryError, StoreError, VersionNotFoundError
from tuneops.requestlog import LoggedRequest, RequestLog
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.tokens import count_tokens
from tuneops.tasks.drift.measure import QualityBaseline, WindowSample

CHAMPION = "champion"
TRAINING_PROMPTS_MAX = 20_000


@dataclass(frozen=True)
class ChampionContext:
    """The served version and what it is compared with."""

    model: str
    version: str
    dataset_ref: str | None
    train_path: Path | None
    baseline: QualityBaseline
    promoted_at: datetime | None
    notes: tuple[str, ...] = ()


def last_user_text(prompt: str | None) -> str | None:
    """The last user message of a logged prompt (the gateway logs the messages as JSON)."""
    if not prompt:
        return None
    try:
        messages = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        return prompt
    if not isinstance(messages, list):
        return prompt
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return None


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(parts) or None
    return None


def training_prompts(path: Path, limit: int = TRAINING_PROMPTS_MAX) -> list[str]:
    """The user prompts of a chat JSONL split: per row, the last user message before the answer."""
    prompts: list[str] = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = orjson.loads(line)
            messages = row.get("messages", []) if isinstance(row, dict) else []
            text = last_user_text(
                orjson.dumps([m for m in messages if m.get("role") != "assistant"]).decode()
            )
            if text:
                prompts.append(text)
            if len(prompts) >= limit:
                break
    return prompts


def load_champion(spec: Spec, settings: TuneopsSettings) -> ChampionContext | None:
    """The champion with its training split and evaluation baseline; None when there is none.

    A link that cannot be followed (a manifest or split out of reach, no evaluation run) leaves
    that part empty and says so in ``notes``: the check then runs on what it has.
    """
    from tuneops.registry.conventions import ModelRef
    from tuneops.registry.ledger import Ledger
    from tuneops.registry.lineage import build_lineage, group_metrics
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.tasks.data.catalog import materialize_split, resolve_dataset_version, store_for

    store = RegistryStore.from_settings(settings)
    ledger = Ledger.open(settings.state_db_url or "")
    try:
        lineage = build_lineage(store, ledger, ModelRef(spec.model.name, alias=CHAMPION))
    except VersionNotFoundError:
        return None
    notes = list(lineage.warnings)
    train_path = None
    dataset_ref = None
    if lineage.dataset.name and lineage.dataset.digest:
        dataset_ref = f"{lineage.dataset.name}@{lineage.dataset.digest}"
        try:
            version = resolve_dataset_version(store_for(settings), dataset_ref)
            train_path = materialize_split(version, "train", settings)
        except (StoreError, RegistryError) as exc:
            notes.append(f"training data {dataset_ref} unreachable: {exc.one_line()}")
    else:
        notes.append("the champion's lineage names no dataset version")
    metrics = group_metrics(lineage.evaluation.metrics)
    promoted = [e.at for e in lineage.ledger if e.alias == CHAMPION and e.to_version == lineage.version]
    return ChampionContext(
        model=spec.model.name,
        version=lineage.version,
        dataset_ref=dataset_ref,
        train_path=train_path,
        baseline=_baseline(metrics),
        promoted_at=max(promoted) if promoted else lineage.version_created_at,
        notes=tuple(notes),
    )


def _baseline(metrics: dict[str, dict[str, float]]) -> QualityBaseline:
    """The evaluation's candidate means as rates the request log can be compared with."""
    candidate, base = metrics.get("candidate", {}), metrics.get("base", {})
    return QualityBaseline(
        format_compliance=candidate.get("format"),
        refusal_rate=candidate.get("refusal"),
        error_rate=0.0 if candidate else None,
        latency_p95_ms=candidate.get("latency_p95_ms"),
        base_latency_p95_ms=base.get("latency_p95_ms"),
        scores={
            **candidate,
            **{
                k.removeprefix("candidate."): v
                for k, v in metrics.get("safety", {}).items()
                if k.startswith("candidate.")
            },
        },
    )


def read_window(
    settings: TuneopsSettings, model: str, since: datetime, until: datetime, version: str | None
) -> list[LoggedRequest]:
    """The answered requests on ``model`` (served by ``version``) in ``[since, until)``."""
    log = RequestLog.open(settings.state_db_url or "")
    try:
        return log.window(model, since, until, versions=[version] if version else None)
    finally:
        log.close()


def reference_window(
    settings: TuneopsSettings, champion: ChampionContext, hours: int, before: datetime
) -> list[LoggedRequest]:
    """The champion's first ``hours`` of traffic after its promotion (ending no later than ``before``)."""
    if champion.promoted_at is None:
        return []
    until = min(champion.promoted_at + timedelta(hours=hours), before)
    if until <= champion.promoted_at:
        return []
    return read_window(settings, champion.model, champion.promoted_at, until, champion.version)


def window_sample(rows: list[LoggedRequest]) -> WindowSample:
    """The request log's rows as the columns the statistics read; lengths counted from texts."""
    prompts = [last_user_text(r.prompt_text) for r in rows]
    return WindowSample(
        prompts=prompts,
        prompt_tokens=[count_tokens(p) if p else None for p in prompts],
        status_codes=[r.status_code for r in rows],
        latencies_ms=[r.latency_ms for r in rows],
        format_ok=[r.format_ok for r in rows],
        refusals=[r.refusal for r in rows],
        feedback=[r.feedback_score for r in rows],
        mean_logprobs=[r.mean_logprob for r in rows],
    )


def logged_prompt_tokens(rows: list[LoggedRequest]) -> list[int]:
    """The provider-reported prompt tokens (when texts are not captured)."""
    return [r.prompt_tokens for r in rows if r.prompt_tokens is not None]


def describe_champion(champion: ChampionContext) -> dict[str, Any]:
    """The champion's context as plain JSON-able values (report and CLI)."""
    return json.loads(
        json.dumps(
            {
                "version": champion.version,
                "dataset": champion.dataset_ref,
                "train_path": str(champion.train_path) if champion.train_path else None,
                "promoted_at": champion.promoted_at.isoformat() if champion.promoted_at else None,
                "baseline": champion.baseline.__dict__,
                "notes": list(champion.notes),
            }
        )
    )
