"""Lineage links read from a version's tags: which checkpoint it is, and which version it continues.

Two questions an auditor asks of a fine-tune besides "on what data": *was it past its best?*
(the checkpoint registered, the best epoch, the overfitting check) and *what was it trained
from?* (``finetune.from``: the parent version, its model and its data, so the chain of
incremental fine-tunes can be walked back). Both are written as ``tuneops.*`` version tags at
registration (``conventions``) and read back here, with no MLflow call.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneops.registry import conventions as c


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class CheckpointLineage:
    """The registered checkpoint and the job's overfitting check.

    ``checkpoint`` is ``final`` (the job's own model) or the checkpoint's model id;
    ``validation_loss_rise`` the registered model's validation loss relative to the best.
    """

    checkpoint: str | None
    step: int | None
    epoch: int | None
    best_epoch: int | None
    best_step: int | None
    stopped_early: bool | None
    validation_loss_rise: float | None
    summary: str | None


@dataclass(frozen=True)
class ParentLineage:
    """The version this one continued training from (``finetune.from``)."""

    version: str | None
    model: str
    dataset: str | None
    train_digest: str | None


def checkpoint_lineage(tags: dict[str, str]) -> CheckpointLineage | None:
    """What the version's tags say about its checkpoint; None for versions registered before."""
    if c.TAG_CHECKPOINT not in tags and c.TAG_TRAINING not in tags:
        return None
    early = tags.get(c.TAG_STOPPED_EARLY)
    return CheckpointLineage(
        checkpoint=tags.get(c.TAG_CHECKPOINT),
        step=_int(tags.get(c.TAG_CHECKPOINT_STEP)),
        epoch=_int(tags.get(c.TAG_CHECKPOINT_EPOCH)),
        best_epoch=_int(tags.get(c.TAG_BEST_EPOCH)),
        best_step=_int(tags.get(c.TAG_BEST_STEP)),
        stopped_early=None if early is None else early == "true",
        validation_loss_rise=_float(tags.get(c.TAG_VALIDATION_LOSS_RISE)),
        summary=tags.get(c.TAG_TRAINING),
    )


def parent_lineage(tags: dict[str, str]) -> ParentLineage | None:
    """The parent the version was continued from; None for a fine-tune of the base model."""
    model = tags.get(c.TAG_PARENT_MODEL)
    if not model:
        return None
    return ParentLineage(
        version=tags.get(c.TAG_PARENT_VERSION),
        model=model,
        dataset=tags.get(c.TAG_PARENT_DATASET),
        train_digest=tags.get(c.TAG_PARENT_TRAIN_DIGEST),
    )
