"""Benchmark of the local service on this machine: build, training throughput, chat latency, overhead.

    python bench/serving_bench.py [--home DIR] [--profile default|test] [--requests 50] [--json out.json]

Reports: the tuneops-tiny build time; LoRA training throughput (tokens/s) on ~300 short chat
examples and validation loss before/after; chat latency (p50/p95) through HTTP with the official
SDK, streaming time-to-first-token; and the service's own overhead per chat request, i.e. HTTP p50
minus in-process p50 for the same one-token generation (goal: < 5 ms).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(_pct(values, 0.95) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".tuneops/bench-models"))
    parser.add_argument("--profile", default="default", choices=["default", "test"])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--train-examples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from tuneops.settings import quiet_third_parties

    quiet_third_parties()
    import httpx
    import torch
    from openai import OpenAI

    from tuneops.serving.local.chatdata import parse_chat_jsonl
    from tuneops.serving.local.inference import SamplingParams, load_model
    from tuneops.serving.local.launcher import start_service
    from tuneops.serving.local.rules import Hyperparameters
    from tuneops.serving.local.testing import as_jsonl, claims_chat_examples
    from tuneops.serving.local.tinymodel import BUILD_INFO, TINY_MODEL_ID, ensure_tiny_model
    from tuneops.serving.local.training import train_lora

    torch.set_num_threads(1)
    report: dict[str, Any] = {"machine": {"torch_threads": 1, "cpu_count": __import__("os").cpu_count()}}
    base_dir = args.home / "base" / TINY_MODEL_ID
    started = time.perf_counter()
    ensure_tiny_model(base_dir, args.profile)
    info = json.loads((base_dir / BUILD_INFO).read_text())
    report["build"] = {
        "profile": info["profile"]["name"],
        "build_seconds": round(info["build_seconds"], 1),
        "pretrain_tokens_per_second": round(info["pretrain_tokens_per_second"]),
        "final_pretrain_loss": round(info["final_pretrain_loss"], 3),
        "seconds_this_run": round(time.perf_counter() - started, 1),
    }

    train = parse_chat_jsonl(as_jsonl(claims_chat_examples(args.train_examples, seed=1)))
    valid = parse_chat_jsonl(as_jsonl(claims_chat_examples(60, seed=2)))
    job_dir = args.home / "bench-job"
    shutil.rmtree(job_dir, ignore_errors=True)
    started = time.perf_counter()
    result = train_lora(
        base_dir,
        train,
        valid,
        Hyperparameters(n_epochs=args.epochs, batch_size=8, learning_rate_multiplier=1.0),
        job_dir,
        seed=0,
        base_learning_rate=1e-2,
    )
    report["training"] = {
        "examples": len(train),
        "epochs": args.epochs,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tokens_per_second": round(result.tokens_per_second),
        "base_valid_loss": round(result.base_valid_loss or 0, 4),
        "valid_losses": [round(v, 4) for v in result.valid_losses],
    }

    messages = claims_chat_examples(1, seed=42)[0]["messages"][:2]
    model = load_model(base_dir)
    one = SamplingParams(max_tokens=1, temperature=0)
    many = SamplingParams(max_tokens=32, temperature=0)
    inproc_one, inproc_many, http_one, sdk_one, sdk_many, ttft = [], [], [], [], [], []
    service = start_service(args.home, tiny_profile=args.profile)
    try:
        body_one = {"model": TINY_MODEL_ID, "messages": messages, "max_tokens": 1, "temperature": 0}
        with httpx.Client(base_url=service.base_url, timeout=60) as http:
            client = OpenAI(base_url=service.base_url, api_key="bench", max_retries=0)
            for _ in range(5):  # warm both sides up
                http.post("/chat/completions", json=body_one).raise_for_status()
                model.complete(messages, one)
            # Interleaved, so both sides see the same load on this shared machine.
            for _ in range(args.requests):
                t = time.perf_counter()
                model.complete(messages, one)
                inproc_one.append(time.perf_counter() - t)
                t = time.perf_counter()
                http.post("/chat/completions", json=body_one).raise_for_status()
                http_one.append(time.perf_counter() - t)
                t = time.perf_counter()
                model.complete(messages, many)
                inproc_many.append(time.perf_counter() - t)
                t = time.perf_counter()
                client.chat.completions.create(
                    model=TINY_MODEL_ID, messages=messages, max_tokens=1, temperature=0
                )
                sdk_one.append(time.perf_counter() - t)
                t = time.perf_counter()
                client.chat.completions.create(
                    model=TINY_MODEL_ID, messages=messages, max_tokens=32, temperature=0
                )
                sdk_many.append(time.perf_counter() - t)
                t = time.perf_counter()
                for _chunk in client.chat.completions.create(
                    model=TINY_MODEL_ID, messages=messages, max_tokens=32, temperature=0, stream=True
                ):
                    ttft.append(time.perf_counter() - t)
                    break
            client.close()
    finally:
        service.stop()
    report["chat"] = {
        "requests": args.requests,
        "in_process_1_token": _ms(inproc_one),
        "in_process_32_tokens": _ms(inproc_many),
        "http_1_token": _ms(http_one),
        "sdk_1_token": _ms(sdk_one),
        "sdk_32_tokens": _ms(sdk_many),
        "sdk_stream_time_to_first_chunk": _ms(ttft),
        "service_overhead_p50_ms": round(
            (statistics.median(http_one) - statistics.median(inproc_one)) * 1000, 2
        ),
        "service_overhead_via_sdk_p50_ms": round(
            (statistics.median(sdk_one) - statistics.median(inproc_one)) * 1000, 2
        ),
        "service_overhead_goal_ms": 5.0,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
