"""Safety evaluation: a shipped red-team set, refusal and over-refusal, PII and canary leaks.

Modules: ``rules`` (pure detectors: refusal, PII, canaries, injections, system-prompt leaks, and
the per-prompt unsafe indicators), ``redteam`` (the red-team files: shipped package data plus the
spec's own), ``evaluate`` (answers the red-team set with each model and summarises it for the
gate in ``tuneops.tasks.evaluation.rules.decide_safety``), ``azure`` (azure-ai-evaluation's
service-backed safety evaluators, when ``evaluation.safety.azure`` names a Foundry project),
``summary`` (markdown, MLflow metrics, per-prompt table).
"""
