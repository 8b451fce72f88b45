"""From the spec's ``rollout`` section to the pure verdict's policy and the strategy's step plan.

No SDK: the flow, the CLI and ``bench/rollout_sim.py`` build their policy and plan here, so the
benchmark judges exactly what a rollout with the same spec would.
"""

from __future__ import annotations

from tuneops.spec import RolloutConfig
from tuneops.tasks.rollout.rules import (
    Guardrail,
    RolloutPolicy,
    Step,
    Strategy,
    ab_requests_per_arm,
    plan_rollout,
)


def policy_for(config: RolloutConfig) -> RolloutPolicy:
    """The verdict's policy: guardrails, error budget, minimum sample, time limit."""
    guardrails = tuple(
        Guardrail(g.metric, g.threshold, g.min_absolute_change, g.min_relative_change)
        for g in config.guardrails
    )
    return RolloutPolicy(
        guardrails=guardrails,
        alpha=config.alpha,
        min_samples=config.min_samples_per_arm,
        max_duration_seconds=config.max_duration_seconds,
    )


def plan_for(config: RolloutConfig, strategy: Strategy | None = None) -> tuple[Step, ...]:
    """The step plan of ``strategy`` (default: the spec's) with the spec's sizes and holds."""
    chosen: Strategy = strategy or config.strategy
    ab_requests = 0
    if chosen == "ab":
        ab_requests = ab_requests_per_arm(
            baseline_rate=config.ab.baseline_rate,
            minimum_detectable_effect=config.ab.minimum_detectable_effect,
            power=config.ab.power,
            policy=policy_for(config),
            metric=config.ab.metric,
        )
    return plan_rollout(
        chosen,
        steps_percent=config.steps,
        min_requests_per_step=config.min_requests_per_step,
        min_step_seconds=config.min_step_seconds,
        bake_seconds=config.bake_seconds,
        shadow_percent=config.shadow_percent,
        ab_percent=config.ab.challenger_percent,
        ab_requests=ab_requests,
    )
