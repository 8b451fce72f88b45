"""Evaluating several checkpoints of one fine-tune, and the overfitting check in the gate.

With ``evaluation.checkpoints: all`` every checkpoint is answered and scored like any candidate;
the winner (best on the primary gate metric, ties to the lower validation loss, see
``tasks.finetune.checkpoints.choose_winner``) is the one gated and registered. With
``finetune.max_validation_loss_rise`` set, the gate also fails a chosen model whose validation
loss is that far above the run's best checkpoint (``rules.overfitting_check``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tuneops.spec import Spec
from tuneops.tasks.evaluation.rules import CheckOutcome, overfitting_check
from tuneops.tasks.evaluation.types import ModelSummary, ModelUnderTest
from tuneops.tasks.finetune.checkpoints import (
    CheckpointCandidate,
    TrainingReport,
    choose_winner,
    describe,
)


def primary_metric(spec: Spec) -> tuple[str, bool]:
    """The metric that picks among checkpoints: the first gate's, else the first metric."""
    if spec.evaluation.gates:
        gate = spec.evaluation.gates[0]
        return gate.metric, gate.greater_is_better
    return spec.evaluation.metrics[0], True


def winner_of(
    spec: Spec,
    candidates: Sequence[ModelUnderTest],
    summaries: Mapping[str, ModelSummary],
    training: TrainingReport | None,
) -> int:
    """Index of the candidate to gate and register (the only one when there is one)."""
    if len(candidates) == 1:
        return 0
    metric, greater = primary_metric(spec)
    scored = [
        (
            CheckpointCandidate(c.label, c.model, training.checkpoint_of(c.model) if training else None),
            summaries[c.label].mean(metric),
        )
        for c in candidates
    ]
    chosen = choose_winner(scored, greater_is_better=greater)
    return next(i for i, c in enumerate(candidates) if c.label == chosen.label)


def _which(training: TrainingReport, model: str) -> str:
    checkpoint = training.checkpoint_of(model)
    if checkpoint is None:
        return model
    final = "final, " if model == training.final_model else ""
    return f"{final}{describe(checkpoint)}"


def overfitting_checks(spec: Spec, model: str, training: TrainingReport | None) -> list[CheckOutcome]:
    """The overfitting gate for the chosen ``model``; nothing when the spec does not ask for it."""
    max_rise = spec.finetune.max_validation_loss_rise
    if max_rise is None:
        return []
    checkpoint = training.checkpoint_of(model) if training else None
    best = training.best if training else None
    return [
        overfitting_check(
            chosen=_which(training, model) if training else model,
            chosen_loss=checkpoint.valid_loss if checkpoint else None,
            best=describe(best) if best else None,
            best_loss=best.valid_loss if best else None,
            max_rise=max_rise,
        )
    ]


def training_markdown(training: TrainingReport | None, model: str) -> str:
    """The report's training section: best epoch, stopped early, where the chosen model stands."""
    if training is None:
        return ""
    lines = [f"**Training**: {training.summary()}."]
    rise = training.rise_of(model)
    if rise is not None:
        lines.append(f"Evaluated model: {_which(training, model)}, validation loss {rise:+.1%} vs the best.")
    return "\n\n".join(lines)
