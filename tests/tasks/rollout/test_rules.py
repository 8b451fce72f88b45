"""The online verdict and the strategies' step plans: pure logic, no SDK, no I/O."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneops.spec import RolloutConfig
from tuneops.tasks.rollout.planning import plan_for, policy_for
from tuneops.tasks.rollout.rules import (
    INSUFFICIENT_TRAFFIC,
    ArmSample,
    Guardrail,
    RolloutPolicy,
    StepProgress,
    ab_requests_per_arm,
    evaluate_guardrails,
    judge,
    next_transition,
    plan_rollout,
)
from tuneops.tasks.rollout.stats import (
    Moments,
    mixture_radius,
    proportion_difference_interval,
    proportion_interval,
    proportion_sample_size,
    quantile_interval,
)


def arm(label: str, n: int, *, errors: float = 0.02, fmt: float = 0.9, refusals: float = 0.03,
        latency: float = 300.0, seed: int = 0, feedback: Moments | None = None,
        cost: Moments | None = None) -> ArmSample:  # fmt: skip
    """An arm whose counts are exactly the given rates (deterministic latencies around ``latency``)."""
    rng = random.Random(seed)
    e = round(n * errors)
    answered = n - e
    lat = tuple(sorted(latency * math.exp(rng.gauss(0, 0.3)) for _ in range(n)))
    return ArmSample(label, None, n, e, answered, round(answered * fmt), answered, round(answered * refusals),
                     lat, feedback or Moments(), cost or Moments())  # fmt: skip


def progress(ch: int = 1000, cp: int = 1000, need: int = 200, elapsed: float = 10.0, step: float = 10.0,
             min_step: float = 0.0) -> StepProgress:  # fmt: skip
    return StepProgress(elapsed, step, ch, cp, need, min_step)


POLICY = RolloutPolicy()


# --- stats ------------------------------------------------------------------------------------


def test_mixture_radius_shrinks_with_information_and_grows_with_confidence() -> None:
    assert mixture_radius(1e-3, 0.05, 0.05) > mixture_radius(1e-4, 0.05, 0.05)
    assert mixture_radius(1e-3, 0.01, 0.05) > mixture_radius(1e-3, 0.05, 0.05)
    # Wider than a fixed-horizon interval: the price of looking at every interval.
    assert mixture_radius(1e-3, 0.05, 0.05) > 1.96 * math.sqrt(1e-3)
    with pytest.raises(ValueError, match="alpha"):
        mixture_radius(1e-3, 1.5, 0.05)
    with pytest.raises(ValueError, match="tau"):
        mixture_radius(1e-3, 0.05, 0.0)


@given(x=st.integers(0, 500), extra=st.integers(0, 500))
def test_proportion_interval_contains_estimate_and_stays_in_unit_range(x: int, extra: int) -> None:
    n = x + extra
    if n == 0:
        return
    iv = proportion_interval(x, n, alpha=0.05, tau=0.05)
    assert 0.0 <= iv.low <= x / n <= iv.high <= 1.0


@given(x1=st.integers(0, 300), n1=st.integers(1, 300), x0=st.integers(0, 300), n0=st.integers(1, 300))
def test_difference_interval_is_antisymmetric(x1: int, n1: int, x0: int, n0: int) -> None:
    x1, x0 = min(x1, n1), min(x0, n0)
    ab = proportion_difference_interval(x1, n1, x0, n0, alpha=0.05, tau=0.05)
    ba = proportion_difference_interval(x0, n0, x1, n1, alpha=0.05, tau=0.05)
    assert ab.low == pytest.approx(-ba.high) and ab.high == pytest.approx(-ba.low)
    assert ab.low <= ab.estimate <= ab.high


def test_confidence_sequence_covers_at_every_look_in_simulation() -> None:
    """Time-uniform coverage: over 300 streams looked at after every 25 draws, misses stay <= alpha."""
    rng = random.Random(3)
    misses = 0
    for _ in range(300):
        x = 0
        for n in range(1, 2001):
            x += rng.random() < 0.1
            if n % 25 == 0 and not (lambda iv: iv.low <= 0.1 <= iv.high)(
                proportion_interval(x, n, alpha=0.05, tau=0.05)
            ):
                misses += 1
                break
    assert misses / 300 <= 0.05


def test_quantile_interval_brackets_p95_and_is_infinite_on_thin_data() -> None:
    values = tuple(float(v) for v in range(1, 1001))
    iv = quantile_interval(values, 0.95, alpha=0.05)
    assert iv.low <= 950 <= iv.high
    assert iv.estimate == 950
    thin = quantile_interval((1.0, 2.0, 3.0), 0.95, alpha=0.05)
    assert thin.high == math.inf


def test_sequential_sample_size_exceeds_the_fixed_horizon_one() -> None:
    n = proportion_sample_size(0.9, 0.05, alpha=0.0125, power=0.9, tau=0.05)
    fixed = (2.24 + 1.28) ** 2 * (0.9 * 0.1 + 0.85 * 0.15) / 0.05**2
    assert n > fixed
    assert proportion_sample_size(0.9, 0.10, alpha=0.0125, power=0.9, tau=0.05) < n
    with pytest.raises(ValueError, match="detectable"):
        proportion_sample_size(0.9, 0.0, alpha=0.05, power=0.9, tau=0.05)


# --- the verdict --------------------------------------------------------------------------------


def test_identical_arms_with_enough_data_proceed_with_observed_and_required() -> None:
    verdict = judge(arm("challenger", 800), arm("champion", 4000, seed=1), POLICY, progress())
    assert verdict.action == "proceed"
    assert {c.metric for c in verdict.checks} == {"error_rate", "latency_p95_ms", "format_compliance",
                                                  "refusal_rate"}  # fmt: skip
    for check in verdict.checks:
        assert check.status == "holding"
        assert check.interval is not None and check.observed is not None
        assert check.interval.low <= check.observed <= check.interval.high
    latency = next(c for c in verdict.checks if c.metric == "latency_p95_ms")
    assert latency.kind == "min_relative_change" and latency.required == -0.2


def test_thin_data_waits_even_when_the_challenger_looks_terrible() -> None:
    verdict = judge(arm("challenger", 40, errors=0.5), arm("champion", 4000), POLICY, progress(ch=40))
    assert verdict.action == "wait"
    assert all(c.status == "waiting" for c in verdict.checks)
    assert any("waiting for data" in r for r in verdict.reasons)


def test_thin_data_past_max_duration_aborts_for_insufficient_traffic_never_passes() -> None:
    policy = RolloutPolicy(max_duration_seconds=60)
    verdict = judge(arm("challenger", 30), arm("champion", 60), policy, progress(ch=30, cp=60, elapsed=61))
    assert verdict.action == "abort"
    assert verdict.reasons[0].startswith(INSUFFICIENT_TRAFFIC)


def test_step_hold_waits_for_requests_and_duration() -> None:
    ch, cp = arm("challenger", 800), arm("champion", 4000)
    assert judge(ch, cp, POLICY, progress(ch=150, need=200)).action == "wait"
    held = judge(ch, cp, POLICY, progress(step=10, min_step=60))
    assert held.action == "wait" and any("held" in r for r in held.reasons)


def test_error_spike_rolls_back_and_names_the_breach() -> None:
    verdict = judge(arm("challenger", 120, errors=0.22), arm("champion", 2400), POLICY, progress(ch=120))
    assert verdict.action == "rollback"
    (breach,) = verdict.breaches
    assert breach.metric == "error_rate" and breach.interval is not None
    assert breach.interval.high < breach.required == 0.0
    assert "breached" in verdict.reasons[0]


def test_a_breach_wins_over_insufficient_traffic() -> None:
    policy = RolloutPolicy(max_duration_seconds=1)
    verdict = judge(arm("challenger", 200, errors=0.4), arm("champion", 300), policy,
                    progress(ch=200, cp=300, need=1000, elapsed=100))  # fmt: skip
    assert verdict.action == "rollback"


def test_format_drop_of_ten_points_is_breached_at_a_few_hundred_requests() -> None:
    verdict = judge(arm("challenger", 600, fmt=0.8), arm("champion", 4000), POLICY, progress())
    assert [c.metric for c in verdict.breaches] == ["format_compliance"]


def test_tolerated_loss_is_not_a_breach() -> None:
    policy = RolloutPolicy(guardrails=(Guardrail("latency_p95_ms", min_relative_change=-0.5),))
    slower = arm("challenger", 2000, latency=360.0)  # 20% slower, 50% tolerated
    assert judge(slower, arm("champion", 2000, seed=2), policy, progress()).action == "proceed"
    strict = RolloutPolicy(guardrails=(Guardrail("latency_p95_ms", min_relative_change=0.0),))
    much_slower = arm("challenger", 2000, latency=600.0)
    assert judge(much_slower, arm("champion", 2000, seed=2), strict, progress()).action == "rollback"


def test_threshold_is_an_absolute_bar_for_the_challenger_alone() -> None:
    policy = RolloutPolicy(guardrails=(Guardrail("error_rate", threshold=0.05, min_absolute_change=-1.0),))
    checks = evaluate_guardrails(
        arm("challenger", 1000, errors=0.15), arm("champion", 1000, errors=0.15), policy
    )
    threshold = next(c for c in checks if c.kind == "threshold")
    assert threshold.breached and threshold.required == 0.05
    # The threshold check needs no champion data.
    lone = evaluate_guardrails(arm("challenger", 1000, errors=0.15), ArmSample("champion"), policy)
    assert next(c for c in lone if c.kind == "threshold").breached


def test_feedback_and_cost_guardrails() -> None:
    cost_guard = Guardrail("cost_per_1k_requests_usd", min_relative_change=-0.1)
    policy = RolloutPolicy(guardrails=(Guardrail("feedback_score"), cost_guard))
    good = Moments.of([0.9, 0.8, 1.0, 0.7] * 100)
    bad = Moments.of([0.3, 0.4, 0.2, 0.5] * 100)
    cheap, dear = Moments.of([0.001, 0.0012] * 200), Moments.of([0.002, 0.0024] * 200)
    ch = arm("challenger", 400, feedback=bad, cost=dear)
    cp = arm("champion", 400, feedback=good, cost=cheap)
    verdict = judge(ch, cp, policy, progress())
    assert {c.metric for c in verdict.breaches} == {"feedback_score", "cost_per_1k_requests_usd"}
    cost = next(c for c in verdict.checks if c.metric == "cost_per_1k_requests_usd")
    assert cost.challenger == pytest.approx(2.2) and cost.champion == pytest.approx(1.1)
    ok = judge(arm("challenger", 400, feedback=good, cost=cheap), cp, policy, progress())
    assert ok.action == "proceed"


def test_missing_feedback_waits_instead_of_passing() -> None:
    policy = RolloutPolicy(guardrails=(Guardrail("feedback_score"),), max_duration_seconds=100)
    verdict = judge(arm("challenger", 1000), arm("champion", 1000), policy, progress())
    assert verdict.action == "wait"
    late = judge(arm("challenger", 1000), arm("champion", 1000), policy, progress(elapsed=200))
    assert late.action == "abort" and INSUFFICIENT_TRAFFIC in late.reasons[0]


def test_verdict_is_frozen_and_serialisable() -> None:
    verdict = judge(arm("challenger", 800), arm("champion", 4000), POLICY, progress())
    with pytest.raises(AttributeError):
        verdict.action = "rollback"  # type: ignore[misc]
    data = verdict.to_dict()
    assert data["action"] == "proceed" and len(data["checks"]) == 4
    assert verdict.summary().startswith("proceed: ")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(100, 3000), seed=st.integers(0, 10_000))
def test_a_better_challenger_is_never_rolled_back(n: int, seed: int) -> None:
    better = arm("challenger", n, errors=0.0, fmt=1.0, refusals=0.0, latency=200.0, seed=seed)
    assert judge(better, arm("champion", n, seed=seed + 1), POLICY, progress()).action != "rollback"


# --- plans and transitions ----------------------------------------------------------------------


def test_canary_plan_holds_each_weight_then_promotes() -> None:
    plan = plan_rollout(
        "canary", steps_percent=(5, 25, 50, 100), min_requests_per_step=200, min_step_seconds=30
    )
    assert [(s.kind, s.weight) for s in plan] == [("weight", 500), ("weight", 2500), ("weight", 5000),
                                                  ("promote", 10000)]  # fmt: skip
    assert all(s.judged and s.min_requests == 200 and s.min_seconds == 30 for s in plan[:-1])
    with pytest.raises(ValueError, match="increasing"):
        plan_rollout("canary", steps_percent=(25, 5, 100))


def test_blue_green_shadow_and_ab_plans() -> None:
    bg = plan_rollout("blue-green", bake_seconds=60)
    assert [s.kind for s in bg] == ["smoke", "switch", "bake"]
    assert bg[2].baseline == "before-switch" and bg[2].judged and bg[2].min_seconds == 60
    shadow = plan_rollout("shadow", shadow_percent=50)
    assert [(s.kind, s.weight) for s in shadow] == [("shadow", 5000), ("promote", 10000)]
    ab = plan_rollout("ab", ab_percent=50, ab_requests=1234, min_requests_per_step=200)
    assert ab[0].weight == 5000 and ab[0].min_requests == 1234
    with pytest.raises(ValueError, match="split"):
        plan_rollout("ab", ab_percent=100)


def test_transitions_follow_the_verdict() -> None:
    plan = plan_rollout("canary")
    verdict = judge(arm("challenger", 800), arm("champion", 4000), POLICY, progress())
    bad = judge(arm("challenger", 120, errors=0.3), arm("champion", 2400), POLICY, progress())
    wait = judge(arm("challenger", 10), arm("champion", 100), POLICY, progress())
    assert next_transition(plan, 0, verdict) == "advance"
    assert next_transition(plan, 2, verdict) == "promote"
    assert next_transition(plan, 1, bad) == "rollback"
    assert next_transition(plan, 1, wait) == "stay"
    assert next_transition(plan, 3, None) == "done"
    bg = plan_rollout("blue-green")
    assert next_transition(bg, 0, None) == "advance"  # smoke is checked by the flow, not judged
    assert next_transition(bg, 2, verdict) == "done"
    with pytest.raises(ValueError, match="verdict"):
        next_transition(plan, 0, None)


def test_spec_defaults_build_the_plan_and_policy_the_benchmark_uses() -> None:
    config = RolloutConfig()
    policy = policy_for(config)
    assert policy.min_samples == 100 and policy.alpha == 0.05 and policy.check_count() == 4
    assert [s.weight for s in plan_for(config)] == [500, 2500, 5000, 10000]
    ab = plan_for(config, "ab")
    expected = ab_requests_per_arm(
        baseline_rate=0.9,
        minimum_detectable_effect=0.05,
        power=0.9,
        policy=policy,
        metric="format_compliance",
    )
    assert ab[0].min_requests == expected > config.min_requests_per_step
