"""Per-row provenance in dataset versions: synthesize (a teacher over real HTTP, real embeddings)
→ review (accept some, reject some, edit one) → export → version holds exactly the accepted rows,
each with its provenance, in the version's ``provenance.jsonl`` and summarised in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneops.spec import SplitConfig, SynthesizeConfig, SystemPromptConfig
from tuneops.tasks.data.provenance import PROVENANCE_FILE, load_sidecars, match_rows, sidecars_for
from tuneops.tasks.data.review import QueueItem, ReviewQueue, export_reviewed, provenance_path, row_sha256
from tuneops.tasks.data.store import open_store
from tuneops.tasks.data.synthesize import PROMPT_TEMPLATE_NAME, openai_complete, synthesize
from tuneops.tasks.data.validate import ValidationOptions
from tuneops.tasks.data.version import DatasetSources, version_files

from .conftest import example, valid_rows, write_jsonl

TOPICS = [
    "my bicycle was stolen at the station",
    "a pipe burst and flooded the kitchen",
    "hail dented the roof of my car",
    "my phone fell into the sea on holiday",
    "a neighbour's tree crushed my fence",
    "the airline lost my suitcase",
]


def stored_rows(uri: str) -> list[dict]:
    folder = Path(uri.removeprefix("file://"))
    rows = []
    for split in ("train", "validation", "test"):
        path = folder / f"{split}.jsonl"
        if path.is_file():
            rows += [json.loads(x) for x in path.read_text().splitlines()]
    return rows


@pytest.mark.slow
def test_synthesize_review_version_holds_exactly_the_accepted_rows_with_provenance(tmp_path: Path) -> None:
    from tuneops.tasks.drift.embed import embed_texts
    from tuneops.testing.chat_stub import Messages, StubConfig, running_chat_stub

    def teacher(model: str, messages: Messages) -> str:
        lines = [
            {"user": f"Claim: {t}.", "assistant": f"Decision: REVIEW\nReason: {t}.\nNext step: call."}
            for t in TOPICS
        ]
        return "\n".join(json.dumps(x) for x in lines)

    train = valid_rows(12)
    queue = ReviewQueue(tmp_path / "queue")
    with running_chat_stub(StubConfig(answer=teacher, api_key="k", models=("teacher",))) as stub:
        report = synthesize(
            complete=openai_complete(stub.base_url, "k", "teacher", temperature=0.9, max_tokens=512),
            teacher_model="teacher",
            system_prompt=None,
            seeds=train[:3],
            existing=train,
            n=6,
            config=SynthesizeConfig(examples_per_call=6),
            queue=queue,
            embed=embed_texts,
            options=ValidationOptions(min_examples=1),
        )
    assert report.queued == 6
    ids = [i.item_id for i in queue.items()]
    for item_id in ids[:3]:
        queue.decide(item_id, "accept", "ann")
    queue.decide(ids[3], "reject", "bob")
    edited = queue.items()[4].example
    edited = {"messages": [*edited["messages"][:-1], {"role": "assistant", "content": "Decision: DENY"}]}
    queue.decide(ids[4], "edit", "bob", edited)  # ids[5] stays pending: not data yet

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", train)
    export_reviewed(queue, data / "reviewed" / "synthetic.jsonl")
    assert sidecars_for(data) == [provenance_path(data / "reviewed" / "synthetic.jsonl")]
    from tuneops.tasks.data.sources import resolve_source

    store = open_store((tmp_path / "store").as_uri())
    version = version_files(
        DatasetSources(train=resolve_source(data, tmp_path / "home")),
        name="claims",
        store=store,
        home=tmp_path / "home",
        split=SplitConfig(validation=0.2, test=0.0, seed=1),
        system_prompt=SystemPromptConfig(policy="inject", text="You triage claims."),
        sidecars=sidecars_for(data),
        workers=1,
    )
    rows = stored_rows(version.uri)
    synthetic = [r for r in rows if "Claim:" in r["messages"][1]["content"]]
    accepted = {f"Claim: {t}." for t in TOPICS[:3]} | {f"Claim: {TOPICS[4]}."}
    assert {r["messages"][1]["content"] for r in synthetic} == accepted  # not the rejected, not the pending
    assert len(rows) == 12 + 4 and all(r["messages"][0]["role"] == "system" for r in rows)  # injected

    summary = version.manifest["provenance"]
    assert summary["rows"] == 4 and summary["by_origin"] == {"synthetic": 4} and summary["edited"] == 1
    assert summary["teacher_models"] == ["teacher"] and summary["prompt_templates"] == [PROMPT_TEMPLATE_NAME]
    assert summary["reviewers"] == ["ann", "bob"] and summary["request_ids"] == []
    lines = [
        json.loads(x)
        for x in store.read_bytes(f"datasets/claims/{version.digest}/{PROVENANCE_FILE}").splitlines()
    ]
    assert {line["row_sha256"] for line in lines} == {row_sha256(r) for r in synthetic}  # keyed by stored row
    assert sum(summary["by_split"].values()) == 4 and {line["split"] for line in lines} <= {
        "train",
        "validation",
    }
    by_user = {}
    for line in lines:
        [row] = [r for r in synthetic if row_sha256(r) == line["row_sha256"]]
        by_user[row["messages"][2]["content"]] = line
    deny = by_user["Decision: DENY"]
    assert (deny["decision"], deny["reviewer"], deny["teacher_model"]) == ("edit", "bob", "teacher")
    assert all(line["decided_at"] and line["prompt_template"] == PROMPT_TEMPLATE_NAME for line in lines)


def test_rows_are_matched_by_content_and_rows_without_a_sidecar_entry_have_none(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "queue")
    queue.add([QueueItem("req-r1", example(1, system=None), {"origin": "harvest", "request_id": "r1"})])
    queue.decide("req-r1", "accept", "ann")
    reviewed = tmp_path / "reviewed.jsonl"
    export_reviewed(queue, reviewed)
    index = load_sidecars(sidecars_for(reviewed))
    split = write_jsonl(
        tmp_path / "train.jsonl",
        [example(1, system="Injected."), example(2, system="Injected."), example(3, system=None)],
    )
    assert match_rows({"train": split}, index) == []  # the stored row carries the injected prompt
    [line] = match_rows({"train": split}, index, inject="Injected.")
    assert (line["request_id"], line["origin"], line["split"]) == ("r1", "harvest", "train")
    assert line["row_sha256"] == row_sha256(example(1, system="Injected."))


def test_a_version_without_reviewed_rows_has_no_provenance_and_keeps_its_digest(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", valid_rows(12))
    store = open_store((tmp_path / "store").as_uri())
    version = version_files(
        DatasetSources(train=path), name="plain", store=store, home=tmp_path / "h", workers=1
    )
    assert "provenance" not in version.manifest
    assert not store.exists(f"datasets/plain/{version.digest}/{PROVENANCE_FILE}")
