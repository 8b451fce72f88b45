"""Benchmark: the drift verdict's time, power and false-alarm rate on 10,000-request windows.

Prompts of the reference topic are the example project's insurance claims
(``examples/generate_claims_dataset.py``); the other topic is travel-booking questions from
templates below. Scenarios, each over ``--trials`` windows of ``--window`` requests:

- ``same``: every prompt from the claims topic (a false alarm is any drifted verdict);
- ``topic``: 30% of prompts from the travel topic;
- ``length``: every prompt twice as long (two claims descriptions back to back).

To keep 100s of trials fast the pools are embedded once and windows resample them: each window
draws ``--window`` token lengths (PSI sees them all) and ``monitoring.embedding_sample`` prompts for
the embedding signals, exactly the sample a live check embeds. The *time* of one verdict is
measured separately, end to end on 10,000 fresh prompts: counting their tokens, embedding the
window's sample and the reference's (no cache), every statistic and the verdict.

Evidently (0.7.23), when ``--evidently-python`` names an interpreter that has it (a throwaway
venv), runs on the same windows: ``ValueDrift`` on the prompt text column (its text-content drift,
a domain classifier on the texts) and on the token-length column (its default numerical test);
a window is drifted when either column drifts.

    python bench/drift_bench.py --trials 100 --evidently-python /tmp/evvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

TRAVEL_TEMPLATES = [
    "I booked a {kind} from {a} to {b} on {day} and the {thing} was {problem}. Can I get {fix}?",
    "My {kind} to {b} leaves {day}; is it possible to {change} without paying a fee?",
    "We are {n} travellers flying {a} to {b}. Which {thing} options include {extra}?",
    "The hotel in {b} charged me twice for {n} nights. How do I get {fix}?",
    "Can you recommend {extra} near the airport in {b} for a {day} arrival?",
    "Our {kind} from {a} was delayed {n} hours and we missed the {thing}. What are my options?",
]
TRAVEL_SLOTS = {
    "kind": ["flight", "train", "ferry", "bus trip", "cruise", "rental car"],
    "a": ["Lisbon", "Oslo", "Chicago", "Nairobi", "Osaka", "Lima", "Prague", "Denver"],
    "b": ["Madrid", "Bangkok", "Toronto", "Cairo", "Sydney", "Reykjavik", "Hanoi", "Quito"],
    "day": ["Monday", "next Friday", "the 14th", "Sunday morning", "New Year's Eve", "tomorrow"],
    "thing": ["seat", "connection", "baggage allowance", "meal", "lounge access", "transfer"],
    "problem": ["missing", "cancelled", "overbooked", "downgraded", "lost", "not as described"],
    "fix": ["a refund", "a voucher", "an upgrade", "compensation", "a rebooking", "my money back"],
    "change": ["change the date", "add a bag", "switch seats", "cancel", "add a passenger"],
    "n": ["2", "3", "4", "5", "6"],
    "extra": ["breakfast", "free cancellation", "a pool", "parking", "late checkout", "wifi"],
}


def claims_prompts(n: int, seed: int) -> list[str]:
    import generate_claims_dataset as claims

    rng = random.Random(seed)
    return [str(claims.example(rng)["messages"][1]["content"]) for _ in range(n)]


def travel_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        template = rng.choice(TRAVEL_TEMPLATES)
        out.append(template.format(**{k: rng.choice(v) for k, v in TRAVEL_SLOTS.items()}))
    return out


def doubled(prompts: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{p} {rng.choice(prompts)}" for p in prompts]


class Pool:
    """Prompts of one kind, their token counts and (lazily) their embeddings."""

    def __init__(self, texts: list[str]) -> None:
        from tuneops.tasks.data.tokens import count_tokens
        from tuneops.tasks.drift.embed import embed_texts

        self.texts = texts
        self.tokens = np.array([count_tokens(t) for t in texts])
        self.embeddings = embed_texts(texts)


def window_of(
    pools: list[tuple[Pool, float]], window: int, sample: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], list[tuple[int, int]]]:
    """Token lengths of ``window`` requests and embeddings of ``sample`` of them, by mixture."""
    tokens, embeddings, token_picks, text_picks = [], [], [], []
    for which, (pool, share) in enumerate(pools):
        n_tok, n_emb = round(window * share), round(sample * share)
        t_idx = rng.integers(0, len(pool.texts), n_tok)
        e_idx = rng.choice(len(pool.texts), n_emb, replace=False)
        tokens.append(pool.tokens[t_idx])
        embeddings.append(pool.embeddings[e_idx])
        token_picks += [(which, int(i)) for i in t_idx]
        text_picks += [(which, int(i)) for i in e_idx]
    return np.concatenate(tokens), np.vstack(embeddings), token_picks, text_picks


def verdict_for(train: Pool, tokens: np.ndarray, embeddings: np.ndarray, config: Any, seed: int) -> Any:
    from tuneops.tasks.drift.measure import Reference, WindowSample, measure_window
    from tuneops.tasks.drift.rules import decide_drift

    n = len(tokens)
    window = WindowSample(
        prompts=[None] * n,
        prompt_tokens=tokens.tolist(),
        status_codes=[200] * n,
        latencies_ms=[100.0] * n,
    )
    reference = Reference(embeddings=train.embeddings, prompt_tokens=train.tokens.tolist())
    measured = measure_window(window, reference, embeddings, config, seed=seed)
    return decide_drift("bench", "1", measured, config)


def end_to_end_seconds(window: int, config: Any) -> tuple[float, Any]:
    """One live check: 10,000 fresh prompts, tokens counted, samples embedded, verdict."""
    from tuneops.tasks.data.tokens import count_tokens
    from tuneops.tasks.drift.embed import embed_texts
    from tuneops.tasks.drift.measure import (
        Reference,
        WindowSample,
        measure_window,
        sample_indices,
        texts_to_embed,
    )
    from tuneops.tasks.drift.rules import decide_drift

    embed_texts(["warm up the encoder"])  # loading the model once per process is not the check
    train_texts = claims_prompts(4000, seed=901)
    prompts = claims_prompts(window, seed=902)
    started = time.perf_counter()
    live = WindowSample(
        prompts=prompts,
        prompt_tokens=[count_tokens(p) for p in prompts],
        status_codes=[200] * window,
        latencies_ms=[100.0] * window,
    )
    current = embed_texts(texts_to_embed(live, config))
    ref_sample = [train_texts[i] for i in sample_indices(len(train_texts), config.embedding_sample, 0)]
    reference = Reference(
        embeddings=embed_texts(ref_sample), prompt_tokens=[count_tokens(t) for t in train_texts]
    )
    verdict = decide_drift("bench", "1", measure_window(live, reference, current, config), config)
    return time.perf_counter() - started, verdict


EVIDENTLY_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from evidently import Dataset, DataDefinition, Report
from evidently.metrics import ValueDrift

spec = json.load(open(sys.argv[1]))
pools = spec["pools"]
ref = pd.DataFrame({"prompt": spec["train_texts"]})
ref_tok = pd.DataFrame({"tokens": spec["train_tokens"]})
text_def = DataDefinition(text_columns=["prompt"])
num_def = DataDefinition(numerical_columns=["tokens"])
ref_text = Dataset.from_pandas(ref, data_definition=text_def)
ref_num = Dataset.from_pandas(ref_tok, data_definition=num_def)
out = []
for trial in spec["trials"]:
    started = time.perf_counter()
    texts = [pools[p]["texts"][i] for p, i in trial["texts"]]
    tokens = [pools[p]["tokens"][i] for p, i in trial["tokens"]]
    cur_text = Dataset.from_pandas(pd.DataFrame({"prompt": texts}), data_definition=text_def)
    cur_num = Dataset.from_pandas(pd.DataFrame({"tokens": tokens}), data_definition=num_def)
    drifted = []
    for cur, refd, column in ((cur_text, ref_text, "prompt"), (cur_num, ref_num, "tokens")):
        result = Report([ValueDrift(column=column)]).run(cur, refd).dict()
        metric = result["metrics"][0]
        params = metric["config"]["params"] if "params" in metric["config"] else metric["config"]
        value = metric["value"]
        threshold = params.get("threshold")
        method = params.get("method") or ""
        # Evidently's convention: p-value tests drift below the threshold, distances at or above it
        is_p = "p_value" in method or method in ("ks", "chisquare", "z", "fisher_exact", "t_test", "mannw")
        drifted.append(bool(value < threshold) if is_p else bool(value >= threshold))
        trial.setdefault("methods", []).append(f"{column}:{method}@{threshold}")
    out.append({"scenario": trial["scenario"], "drifted": any(drifted), "by_column": drifted,
                "seconds": time.perf_counter() - started, "methods": trial["methods"]})
json.dump(out, open(sys.argv[2], "w"))
"""


def run_evidently(
    python: str, train: Pool, pools: list[Pool], trials: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path, script = Path(tmp, "in.json"), Path(tmp, "out.json"), Path(tmp, "ev.py")
        script.write_text(EVIDENTLY_SCRIPT, encoding="utf-8")
        spec_path.write_text(
            json.dumps(
                {
                    "train_texts": train.texts,
                    "train_tokens": train.tokens.tolist(),
                    "pools": [{"texts": p.texts, "tokens": p.tokens.tolist()} for p in pools],
                    "trials": trials,
                }
            ),
            encoding="utf-8",
        )
        env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
        subprocess.run([python, str(script), str(spec_path), str(out_path)], check=True, env=env)
        return json.loads(out_path.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--evidently-python", default=None)
    parser.add_argument("--evidently-trials", type=int, default=None, help="default: --trials")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tuneops.spec import MonitoringConfig

    config = MonitoringConfig()
    results: dict[str, Any] = {
        "window": args.window,
        "trials": args.trials,
        "sample": config.embedding_sample,
    }

    seconds, verdict = end_to_end_seconds(args.window, config)
    results["verdict_seconds"] = round(seconds, 2)
    results["end_to_end_verdict"] = verdict.summary()
    print(f"one verdict on {args.window} fresh requests: {seconds:.1f} s ({verdict.summary()})", flush=True)

    started = time.perf_counter()
    train = Pool(claims_prompts(args.train, seed=1))
    same = Pool(claims_prompts(4000, seed=2))
    other = Pool(travel_prompts(2000, seed=3))
    long = Pool(doubled(claims_prompts(2000, seed=4), seed=5))
    results["pool_embedding_seconds"] = round(time.perf_counter() - started, 1)
    print(f"pools embedded in {results['pool_embedding_seconds']} s", flush=True)

    pools = [same, other, long]
    scenarios = {
        "same": [(same, 1.0)],
        "topic": [(same, 0.7), (other, 0.3)],
        "length": [(long, 1.0)],
    }
    rng = np.random.default_rng(7)
    evidently_trials: list[dict[str, Any]] = []
    n_evidently = args.evidently_trials if args.evidently_trials is not None else args.trials
    for name, mixture in scenarios.items():
        drifted, signals, times = 0, {}, []
        for trial in range(args.trials):
            tokens, embeddings, token_picks, text_picks = window_of(
                mixture, args.window, config.embedding_sample, rng
            )
            t0 = time.perf_counter()
            verdict = verdict_for(train, tokens, embeddings, config, seed=trial)
            times.append(time.perf_counter() - t0)
            drifted += verdict.drifted
            for s in verdict.drifted_signals:
                signals[s.name] = signals.get(s.name, 0) + 1
            if trial < n_evidently:
                index = {id(p): i for i, p in enumerate(pools)}
                evidently_trials.append(
                    {
                        "scenario": name,
                        "tokens": [(index[id(mixture[w][0])], i) for w, i in token_picks],
                        "texts": [(index[id(mixture[w][0])], i) for w, i in text_picks],
                    }
                )
        rate = drifted / args.trials
        results[name] = {
            "drifted_rate": rate,
            "by_signal": signals,
            "stats_seconds_mean": round(float(np.mean(times)), 3),
        }
        label = "false alarm rate" if name == "same" else "power"
        print(f"{name}: {label} {rate:.3f} over {args.trials} windows; signals {signals}", flush=True)

    if args.evidently_python:
        evidently = run_evidently(args.evidently_python, train, pools, evidently_trials)
        for name in scenarios:
            rows = [r for r in evidently if r["scenario"] == name]
            rate = sum(r["drifted"] for r in rows) / len(rows)
            by_column = [sum(r["by_column"][i] for r in rows) / len(rows) for i in (0, 1)]
            secs = float(np.mean([r["seconds"] for r in rows]))
            results[f"evidently_{name}"] = {
                "drifted_rate": rate,
                "text_drift_rate": by_column[0],
                "length_drift_rate": by_column[1],
                "seconds_mean": round(secs, 2),
                "trials": len(rows),
                "methods": rows[0]["methods"],
            }
            print(
                f"evidently {name}: drifted {rate:.3f} (text {by_column[0]:.3f}, length {by_column[1]:.3f}) "
                f"over {len(rows)} windows, {secs:.2f} s each; {rows[0]['methods']}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
