"""Simulated rollouts through the pure verdict: false rollbacks, power, requests to rollback.

    python bench/rollout_sim.py [--rollouts 1000] [--interval-requests 500] [--seed 7] [--json out.json]

Each rollout is the spec's default canary (5 -> 25 -> 50 -> 100%, ``min_requests_per_step`` 400
per arm, guardrail minimum 100 per arm, the default guardrails at alpha 0.05; all read from
``RolloutConfig()`` and the step's minimum duration ignored) on synthetic traffic:
every analysis interval sends ``--interval-requests`` requests, each to the challenger with the
step's weight, each an error, a format failure, a refusal and a latency drawn from the arm's
rates. After every interval the rollout is judged, exactly as the flow does, until it is promoted,
rolled back or runs out of intervals. Three scenarios:

* **A/A**: the challenger is the champion (2% errors, 90% format compliance, 3% refusals, p95
  ~600 ms); the goal is a false-rollback rate <= 5%;
* **format -5 pts**: compliance 85% instead of 90%; the goal is power >= 0.9 to roll it back;
* **errors +20 pts**: 22% errors instead of 2%; the goal is a median <= 200 challenger requests
  before the rollback.

Beside the sequential verdict, the same traffic is judged by two naive analyses peeked at every
interval: a fixed-horizon one-sided z-test (the same alpha split over the checks), and a
Flagger/Argo-style fixed threshold (roll back when the challenger is observed worse than the
champion by more than a fixed margin: +1 pt errors, -2 pts format, +1 pt refusals, +20% p95).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from tuneops.spec import RolloutConfig
from tuneops.tasks.rollout.planning import plan_for, policy_for
from tuneops.tasks.rollout.rules import ArmSample, RolloutPolicy, StepProgress, judge
from tuneops.tasks.rollout.stats import quantile

Outcome = Literal["promoted", "rolled back", "undecided"]


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.02
    format_rate: float = 0.90
    refusal_rate: float = 0.03
    latency_median_ms: float = 300.0
    latency_sigma: float = 0.4


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    challenger_requests: int
    total_requests: int


class _Accumulator:
    """One arm's cumulative traffic; ``sample()`` is the verdict's input."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.requests = self.errors = self.format_checked = self.format_ok = self.refusals = 0
        self.latencies = np.empty(0)

    def add(self, rng: np.random.Generator, arm: Arm, n: int) -> None:
        if n == 0:
            return
        errors = int(rng.binomial(n, arm.error_rate))
        answered = n - errors
        self.requests += n
        self.errors += errors
        self.format_checked += answered
        self.format_ok += int(rng.binomial(answered, arm.format_rate))
        self.refusals += int(rng.binomial(answered, arm.refusal_rate))
        drawn = rng.lognormal(math.log(arm.latency_median_ms), arm.latency_sigma, n)
        self.latencies = np.sort(np.concatenate([self.latencies, drawn]))

    def sample(self) -> ArmSample:
        return ArmSample(
            self.label, None, self.requests, self.errors, self.format_checked, self.format_ok,
            self.format_checked, self.refusals, tuple(self.latencies.tolist()),
        )  # fmt: skip


def sequential(ch: ArmSample, cp: ArmSample, policy: RolloutPolicy, progress: StepProgress) -> str:
    return judge(ch, cp, policy, progress).action


def _z_breach(ch: ArmSample, cp: ArmSample, policy: RolloutPolicy) -> bool:
    """Fixed-horizon one-sided z-tests at alpha / checks, as if each look were the only one."""
    z = NormalDist().inv_cdf(1 - policy.alpha / policy.check_count())
    for metric, (x1, n1), (x0, n0), worse_up in (
        ("error_rate", (ch.errors, ch.requests), (cp.errors, cp.requests), True),
        ("format_compliance", (ch.format_ok, ch.format_checked), (cp.format_ok, cp.format_checked), False),
        ("refusal_rate", (ch.refusals, ch.refusal_checked), (cp.refusals, cp.refusal_checked), True),
    ):
        del metric
        if min(n1, n0) < policy.min_samples:
            continue
        p1, p0 = x1 / n1, x0 / n0
        pooled = (x1 + x0) / (n1 + n0)
        se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n0), 1e-12))
        if ((p1 - p0) if worse_up else (p0 - p1)) / se > z:
            return True
    if min(len(ch.latencies_ms), len(cp.latencies_ms)) >= policy.min_samples:
        # No fixed-horizon test for a p95 in common use: the same +20% margin as the threshold check.
        return quantile(ch.latencies_ms, 0.95) > 1.2 * quantile(cp.latencies_ms, 0.95)
    return False


def _threshold_breach(ch: ArmSample, cp: ArmSample, policy: RolloutPolicy) -> bool:
    """Flagger/Argo style: the observed value past a fixed margin from the champion's."""
    if min(ch.requests, cp.requests) < policy.min_samples:
        return False
    return (
        ch.errors / ch.requests > cp.errors / cp.requests + 0.01
        or ch.format_ok / ch.format_checked < cp.format_ok / cp.format_checked - 0.02
        or ch.refusals / ch.refusal_checked > cp.refusals / cp.refusal_checked + 0.01
        or quantile(ch.latencies_ms, 0.95) > 1.2 * quantile(cp.latencies_ms, 0.95)
    )


def _naive(check: Any) -> Any:
    def decide(ch: ArmSample, cp: ArmSample, policy: RolloutPolicy, progress: StepProgress) -> str:
        if check(ch, cp, policy):
            return "rollback"
        held = min(progress.challenger_step_requests, progress.champion_step_requests)
        return "proceed" if held >= progress.required_requests else "wait"

    return decide


def simulate(
    rng: np.random.Generator, champion: Arm, challenger: Arm, decide: Any, policy: RolloutPolicy,
    interval_requests: int, max_intervals: int,
) -> Result:  # fmt: skip
    plan = plan_for(CONFIG, "canary")
    ch, cp = _Accumulator("challenger"), _Accumulator("champion")
    index, step_ch, step_cp, total = 0, 0, 0, 0
    for _ in range(max_intervals):
        step = plan[index]
        n_ch = int(rng.binomial(interval_requests, step.weight / 10_000))
        ch.add(rng, challenger, n_ch)
        cp.add(rng, champion, interval_requests - n_ch)
        step_ch, step_cp, total = (
            step_ch + n_ch,
            step_cp + interval_requests - n_ch,
            total + interval_requests,
        )
        progress = StepProgress(0.0, 0.0, step_ch, step_cp, step.min_requests)
        action = decide(ch.sample(), cp.sample(), policy, progress)
        if action == "rollback":
            return Result("rolled back", ch.requests, total)
        if action == "proceed":
            index, step_ch, step_cp = index + 1, 0, 0
            if plan[index].kind == "promote":
                return Result("promoted", ch.requests, total)
    return Result("undecided", ch.requests, total)


CONFIG = RolloutConfig()  # the spec's defaults: what a rollout without a rollout section runs
SCENARIOS: dict[str, Arm] = {
    "A/A": Arm(),
    "format -5 pts": Arm(format_rate=0.85),
    "errors +20 pts": Arm(error_rate=0.22),
}
METHODS = {
    "sequential (ours)": sequential,
    "z-test peeked": _naive(_z_breach),
    "fixed threshold": _naive(_threshold_breach),
}


def _median(values: list[int]) -> float | None:
    return statistics.median(values) if values else None


def run(rollouts: int, interval_requests: int, seed: int, max_intervals: int) -> dict[str, dict[str, Any]]:
    policy = policy_for(CONFIG)
    table: dict[str, dict[str, Any]] = {}
    for method, decide in METHODS.items():
        for scenario, challenger in SCENARIOS.items():
            rng = np.random.default_rng(seed)
            results = [
                simulate(rng, Arm(), challenger, decide, policy, interval_requests, max_intervals)
                for _ in range(rollouts)
            ]
            rolled = [r for r in results if r.outcome == "rolled back"]
            table.setdefault(method, {})[scenario] = {
                "rollback_rate": len(rolled) / rollouts,
                "undecided": sum(r.outcome == "undecided" for r in results) / rollouts,
                "median_challenger_requests_to_rollback": _median([r.challenger_requests for r in rolled]),
                "median_total_requests_to_rollback": _median([r.total_requests for r in rolled]),
            }  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--interval-requests", type=int, default=500)
    parser.add_argument("--max-intervals", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    table = run(args.rollouts, args.interval_requests, args.seed, args.max_intervals)
    print(
        f"{args.rollouts} rollouts per cell, {args.interval_requests} requests per interval, default canary"
    )
    print(
        f"{'method':<20} {'A/A false rollback':>19} {'power (format -5)':>18} "
        f"{'median ch. req. (err +20)':>26}"
    )
    for method, row in table.items():
        aa, fmt, err = row["A/A"], row["format -5 pts"], row["errors +20 pts"]
        med = err["median_challenger_requests_to_rollback"]
        print(f"{method:<20} {aa['rollback_rate']:>19.3f} {fmt['rollback_rate']:>18.3f} "
              f"{'-' if med is None else f'{med:.0f}':>26}")  # fmt: skip
    goals = table["sequential (ours)"]
    err_med = goals["errors +20 pts"]["median_challenger_requests_to_rollback"]
    print("goals: A/A <= 0.05:", goals["A/A"]["rollback_rate"] <= 0.05,
          "| power >= 0.9:", goals["format -5 pts"]["rollback_rate"] >= 0.9,
          "| median <= 200:", err_med is not None and err_med <= 200)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
