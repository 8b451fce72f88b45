"""Benchmark of the evaluation stage: answer generation throughput and offline scoring throughput.

1. Generation: ``--rows`` test rows answered through the official openai SDK by an
   OpenAI-compatible endpoint (the chat stub, in its own process) that answers after a fixed
   ``--latency-ms``. Reports wall time against the ideal ``rows x latency / concurrency`` (goal:
   >= 80% of ideal at concurrency 64).
2. Scoring: ``--score-rows`` answers scored by the offline evaluators (F1, ROUGE, BLEU, GLEU,
   METEOR, format, refusal) through azure-ai-evaluation's ``evaluate()``; reports rows/s.

Usage::

    python bench/evaluation_bench.py                      # 5,000 rows, 100 ms, concurrency 64
    python bench/evaluation_bench.py --rows 500 --score-rows 200   # a quick run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuneops.settings import quiet_third_parties
from tuneops.tasks.evaluation.generate import generate_answers, require_complete
from tuneops.tasks.evaluation.score import score_answers
from tuneops.tasks.evaluation.types import (
    Answer,
    GenerationSettings,
    ModelAnswers,
    ModelUnderTest,
    TestExample,
)

WORDS = [
    "the",
    "capital",
    "of",
    "norway",
    "is",
    "oslo",
    "and",
    "the",
    "capital",
    "of",
    "iceland",
    "is",
    "reykjavik",
    "near",
    "the",
    "sea",
]


def examples(n: int) -> list[TestExample]:
    """Distinct short questions with one-sentence references (realistic token counts)."""
    rows = []
    for i in range(n):
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)]
        question = f"Question {i}: {' '.join(words[:6])}?"
        rows.append(TestExample(i, (("user", question),), " ".join(words) + "."))
    return rows


def bench_generation(rows: int, latency_ms: float, concurrency: int) -> float:
    stub = subprocess.Popen(
        [sys.executable, "-m", "tuneops.testing.chat_stub", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stub.stdout is not None
        base_url = stub.stdout.readline().split()[-1]
        model = ModelUnderTest("candidate", base_url, "stub-model", api_key="bench")
        data = examples(rows)
        started = time.perf_counter()
        result = generate_answers(
            model, data, dataset_digest="bench", settings=GenerationSettings(), concurrency=concurrency,
            show_progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - started
        require_complete(result)
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    ideal = rows * latency_ms / 1000 / concurrency
    ratio = ideal / wall
    print(f"generation: {rows} rows, {latency_ms:g} ms each, concurrency {concurrency}")
    print(f"  wall {wall:.2f} s, ideal {ideal:.2f} s -> {ratio:.0%} of ideal (goal >= 80%)")
    print(f"  {rows / wall:.0f} rows/s")
    return ratio


def bench_scoring(rows: int) -> float:
    data = examples(rows)
    answers = ModelAnswers(
        ModelUnderTest("candidate", "http://127.0.0.1:9/v1", "m"),
        tuple(Answer(ex.index, ex.reference if ex.index % 2 else ex.query, 100.0) for ex in data),
    )
    metrics = ["f1", "rouge", "bleu", "gleu", "meteor", "format", "refusal"]
    with tempfile.TemporaryDirectory() as tmp:
        score_answers(examples(5), [ModelAnswers(answers.model, answers.answers[:5])], metrics=metrics,
                      nltk_dir=Path(tmp))  # fmt: skip  # builds the NLTK data, outside the timing
        started = time.perf_counter()
        scored = score_answers(data, [answers], metrics=metrics, nltk_dir=Path(tmp))
        wall = time.perf_counter() - started
    print(f"scoring: {rows} rows x {len(scored.metrics)} offline evaluators ({', '.join(scored.metrics)})")
    print(f"  wall {wall:.2f} s -> {rows / wall:.0f} rows/s")
    if scored.skipped:
        print(f"  skipped: {scored.skipped}")
    return rows / wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5000, help="generation rows (default 5000)")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--score-rows", type=int, default=1000, help="scoring rows (default 1000)")
    args = parser.parse_args()
    quiet_third_parties()
    ratio = bench_generation(args.rows, args.latency_ms, args.concurrency)
    bench_scoring(args.score_rows)
    print(f"ratio of ideal: {ratio:.2f}")


if __name__ == "__main__":
    main()
