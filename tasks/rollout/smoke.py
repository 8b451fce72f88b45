"""Blue-green's smoke replay: is the deployed challenger the model that was evaluated?

The evaluation that let the version through its gate logged every candidate answer
(``evaluation/rows.json``). The replay sends the same rows through the *gateway* pinned to the
challenger (``NAME@challenger``, the official ``openai`` SDK, the evaluation's sampling settings:
temperature, max tokens, seed) and hands the pairs to the pure :func:`judge_smoke`. A wrong
deployment (another fine-tune behind the endpoint, a base model, a stale adapter) answers
differently and the switch is refused.

The conversations are rebuilt from the evaluated dataset version's test split when the lineage
reaches it (system prompt and earlier turns included); otherwise the logged question alone is
sent, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from tuneops.errors import TuneopsError, UserError
from tuneops.registry.conventions import CHALLENGER, TAG_EVAL_RUN_ID, ModelRef
from tuneops.registry.ledger import Ledger
from tuneops.registry.lineage import build_lineage
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.settings import TuneopsSettings
from tuneops.tasks.rollout.rules import SmokeCase

VERSION_HEADER = "x-tuneops-model-version"


@dataclass(frozen=True)
class EvaluatedRow:
    """One evaluated candidate answer and the conversation that produced it."""

    row: int
    messages: tuple[dict[str, str], ...]
    expected: str


def evaluated_answers(settings: TuneopsSettings, model: str, version: str) -> list[tuple[int, str, str]]:
    """(row, query, candidate response) of the evaluation that let ``version`` through its gate.

    Raises:
        UserError: the version names no evaluation run, or the run logged no rows.
    """
    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    run_id = store.get_version(model, version).tags.get(TAG_EVAL_RUN_ID)
    if not run_id:
        raise UserError(f"version {version} of {model} has no {TAG_EVAL_RUN_ID} tag: nothing to replay")
    table = store.load_json_artifact(run_id, "evaluation/rows.json")
    if not table:
        raise UserError(f"evaluation run {run_id} has no evaluation/rows.json to replay")
    cols = table["columns"]
    i, q, m, r = (cols.index(c) for c in ("row", "query", "model", "response"))
    return [(int(row[i]), row[q], row[r]) for row in table["data"] if row[m] == "candidate"]


def _test_conversations(settings: TuneopsSettings, model: str, version: str) -> dict[int, tuple[Any, ...]]:
    """Row index -> conversation of the evaluated test split, or {} when it is out of reach."""
    from tuneops.tasks.data.catalog import materialize_split, resolve_dataset_version, store_for
    from tuneops.tasks.evaluation.testset import read_test_split

    try:
        store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
        ledger = Ledger.open(settings.state_db_url or "")
        try:
            lineage = build_lineage(store, ledger, ModelRef(model, None, version))
        finally:
            ledger.close()
        if not (lineage.dataset.name and lineage.dataset.digest):
            return {}
        ref = f"{lineage.dataset.name}@{lineage.dataset.digest}"
        dataset = resolve_dataset_version(store_for(settings), ref)
        if dataset.split("test") is None:
            return {}
        examples = read_test_split(materialize_split(dataset, "test", settings))
    except TuneopsError:
        return {}
    return {ex.index: ex.messages for ex in examples}


def smoke_rows(
    settings: TuneopsSettings, model: str, version: str, limit: int
) -> tuple[list[EvaluatedRow], bool]:
    """The first ``limit`` evaluated rows to replay, and whether full conversations were found."""
    answers = evaluated_answers(settings, model, version)[:limit]
    conversations = _test_conversations(settings, model, version)
    rows = []
    for row, query, expected in answers:
        turns = conversations.get(row)
        messages = (
            tuple({"role": role, "content": content} for role, content in turns)
            if turns
            else ({"role": "user", "content": query},)
        )
        rows.append(EvaluatedRow(row, messages, expected))
    return rows, bool(conversations)


def replay_pinned(
    gateway_url: str,
    api_key: str | None,
    model: str,
    rows: Sequence[EvaluatedRow],
    *,
    temperature: float,
    max_tokens: int,
    seed: int | None,
    timeout: float = 120.0,
) -> list[SmokeCase]:
    """Send each row through the gateway pinned to ``NAME@challenger``; what came back, row by row."""
    client = openai.OpenAI(base_url=gateway_url, api_key=api_key or "unused", max_retries=2, timeout=timeout)
    cases = []
    try:
        for row in rows:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=f"{model}@{CHALLENGER}", messages=list(row.messages),  # type: ignore[arg-type]
                    temperature=temperature, max_tokens=max_tokens, seed=seed, user="tuneops-smoke",
                )  # fmt: skip
            except openai.APIError as exc:
                cases.append(SmokeCase(row.row, row.expected, None, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            answer = raw.parse().choices[0].message.content or ""
            cases.append(SmokeCase(row.row, row.expected, answer, None, raw.headers.get(VERSION_HEADER)))
    finally:
        client.close()
    return cases
