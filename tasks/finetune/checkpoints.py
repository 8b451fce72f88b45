"""Checkpoints of a fine-tune: which one is best, how far past it the final model is, which to evaluate.

Pure (no SDK, no I/O). The field's advice is to watch validation loss against training loss, stop
early and keep the best checkpoint: a model trained past its best has learned the training rows
rather than the task. Providers list a job's checkpoints with their validation loss (OpenAI's
``fine_tuning.job.checkpoint``; the local service makes one per epoch); from that list
:func:`analyse_training` tells the best checkpoint, whether the job stopped before the epochs it
was asked for, and how much higher the final model's validation loss is than the best
(``validation_loss_rise``, relative). :func:`checkpoint_candidates` turns the spec's
``evaluation.checkpoints`` (``final | best | all``) into the models to evaluate, and
:func:`choose_winner` picks among several evaluated ones.

The final model is the weights at the end of training, so it *is* the last checkpoint: its
validation loss is the last checkpoint's, and where a checkpoint would be evaluated that is the
last one, the job's own model id is used instead (that is what gets registered and served).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tuneops.tasks.finetune.types import Checkpoint

CheckpointChoice = Literal["final", "best", "all"]
CANDIDATE_LABEL = "candidate"


def epoch_of(step: int, *, total_steps: int | None, n_epochs: int | None) -> int | None:
    """The epoch ``step`` ends in, when the job's step count and epochs are known (else None).

    Every epoch has ``total_steps / n_epochs`` steps (the job plans whole epochs), so a
    checkpoint at the end of epoch 2 of 5 over 40 steps is at step 16.
    """
    if not total_steps or not n_epochs or total_steps < n_epochs or step < 1:
        return None
    per_epoch = total_steps / n_epochs
    return max(1, min(n_epochs, math.ceil(step / per_epoch - 1e-9)))


def relative_rise(loss: float, best: float) -> float:
    """How much higher ``loss`` is than ``best``, as a fraction of ``best`` (0 when not higher)."""
    if loss <= best:
        return 0.0
    return (loss - best) / best if best > 0 else math.inf


@dataclass(frozen=True)
class TrainingReport:
    """What a finished job's checkpoints say about overfitting.

    ``checkpoints`` are in step order; ``final_model`` is the job's own model id (the weights at
    the end, i.e. the last checkpoint); ``epochs_requested`` the job's resolved ``n_epochs``.
    """

    checkpoints: tuple[Checkpoint, ...]
    final_model: str | None = None
    epochs_requested: int | None = None

    @property
    def final(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    @property
    def best(self) -> Checkpoint | None:
        """The checkpoint with the lowest validation loss (the earlier one on a tie)."""
        scored = [c for c in self.checkpoints if _finite(c.valid_loss)]
        return min(scored, key=lambda c: (c.valid_loss, c.step)) if scored else None

    @property
    def stopped_early(self) -> bool | None:
        """True when training ended before the epochs asked for (None when that cannot be told)."""
        final = self.final
        if final is None or final.epoch is None or not self.epochs_requested:
            return None
        return bool(final.epoch < self.epochs_requested)

    def checkpoint_of(self, model: str) -> Checkpoint | None:
        """The checkpoint a model id stands for; the job's own model is the last checkpoint."""
        if model == self.final_model:
            return self.final
        return next((c for c in self.checkpoints if c.model == model), None)

    def rise_of(self, model: str) -> float | None:
        """Relative rise of ``model``'s validation loss over the best (None when unknown)."""
        checkpoint, best = self.checkpoint_of(model), self.best
        if checkpoint is None or best is None or checkpoint.valid_loss is None or best.valid_loss is None:
            return None
        if not math.isfinite(checkpoint.valid_loss):
            return None
        return relative_rise(checkpoint.valid_loss, best.valid_loss)

    @property
    def validation_loss_rise(self) -> float | None:
        """The final model's rise over the best checkpoint."""
        final = self.final
        return self.rise_of(final.model) if final is not None else None

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the fine-tune run: only what is known."""
        best, final = self.best, self.final
        values: dict[str, float | None] = {
            "best_epoch": best.epoch if best else None,
            "best_step": best.step if best else None,
            "best_valid_loss": best.valid_loss if best else None,
            "final_valid_loss": final.valid_loss if final else None,
            "validation_loss_rise": self.validation_loss_rise,
            "stopped_early": None if self.stopped_early is None else float(self.stopped_early),
            "checkpoint_count": float(len(self.checkpoints)),
        }
        return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}

    def summary(self) -> str:
        """One line for logs, reports and lineage."""
        best, final = self.best, self.final
        if best is None or final is None:
            return f"{len(self.checkpoints)} checkpoints, no validation loss reported (no validation split?)"
        rise = self.validation_loss_rise or 0.0
        early = {True: "stopped early", False: "ran every epoch", None: "epochs unknown"}[self.stopped_early]
        return (
            f"best {describe(best)} validation loss {best.valid_loss:.4g}; final {describe(final)} "
            f"{_loss(final.valid_loss)} ({rise:+.1%} vs best); {early}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "final_model": self.final_model,
            "epochs_requested": self.epochs_requested,
            "checkpoints": [asdict(c) for c in self.checkpoints],
            **self.metrics(),
        }


def describe(checkpoint: Checkpoint) -> str:
    """``epoch 3 (step 12)``, or ``step 12`` when the epoch is unknown."""
    return (
        f"epoch {checkpoint.epoch} (step {checkpoint.step})"
        if checkpoint.epoch
        else f"step {checkpoint.step}"
    )


def _loss(value: float | None) -> str:
    return "validation loss ?" if value is None else f"validation loss {value:.4g}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def analyse_training(
    checkpoints: Sequence[Checkpoint],
    *,
    final_model: str | None,
    epochs_requested: int | None,
    total_steps: int | None = None,
) -> TrainingReport:
    """The report for a job's checkpoints (any order; epochs filled in from the step when missing)."""
    ordered = sorted({c.step: c for c in checkpoints}.values(), key=lambda c: c.step)
    filled = tuple(
        c
        if c.epoch is not None
        else Checkpoint(
            step=c.step,
            model=c.model,
            epoch=epoch_of(c.step, total_steps=total_steps, n_epochs=epochs_requested),
            valid_loss=c.valid_loss,
            train_loss=c.train_loss,
            created_at=c.created_at,
        )
        for c in ordered
    )
    return TrainingReport(filled, final_model, epochs_requested)


@dataclass(frozen=True)
class CheckpointCandidate:
    """A model to evaluate as the candidate, the checkpoint it is (None: unknown) and its label."""

    label: str
    model: str
    checkpoint: Checkpoint | None


def checkpoint_label(checkpoint: Checkpoint) -> str:
    """The evaluation label of one of several evaluated checkpoints (``ckpt-step-12``)."""
    return f"ckpt-step-{checkpoint.step}"


def checkpoint_candidates(
    report: TrainingReport, choice: CheckpointChoice, final_model: str
) -> tuple[CheckpointCandidate, ...]:
    """The models ``evaluation.checkpoints`` asks to evaluate, in step order.

    ``final``: the job's model. ``best``: the lowest-validation-loss checkpoint (the job's model
    when that is the last one, or when no loss was reported). ``all``: every checkpoint, the last
    one as the job's model, each labelled by its step; without checkpoints, just the job's model.
    """
    final = report.final
    only_final = (CheckpointCandidate(CANDIDATE_LABEL, final_model, final),)
    if choice == "final":
        return only_final
    if choice == "best":
        best = report.best
        if best is None or final is None or best.step == final.step:
            return only_final
        return (CheckpointCandidate(CANDIDATE_LABEL, best.model, best),)
    if len(report.checkpoints) <= 1:
        return only_final
    return tuple(
        CheckpointCandidate(checkpoint_label(c), final_model if c is final else c.model, c)
        for c in report.checkpoints
    )


def choose_winner(
    scored: Sequence[tuple[CheckpointCandidate, float | None]], *, greater_is_better: bool = True
) -> CheckpointCandidate:
    """The candidate with the best score on the primary metric.

    A missing score ranks last; equal scores go to the lower validation loss (unknown last), then
    to the later checkpoint (the job's own model is the last one).

    Raises:
        ValueError: nothing to choose from.
    """
    if not scored:
        raise ValueError("no candidates to choose from")

    def rank(item: tuple[CheckpointCandidate, float | None]) -> tuple[int, float, float, int]:
        candidate, score = item
        missing = score is None or not math.isfinite(score)
        value = 0.0 if score is None or missing else round(-score if greater_is_better else score, 12)
        checkpoint = candidate.checkpoint
        loss = (
            checkpoint.valid_loss if checkpoint is not None and _finite(checkpoint.valid_loss) else math.inf
        )
        return (int(missing), value, loss, -(checkpoint.step if checkpoint is not None else -1))

    return min(scored, key=rank)[0]
